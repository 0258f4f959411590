import pytest

from daisy_upstream.core.policy import (
    DaisyConfig,
    compute_tau,
    exit_span,
    load_calibration,
    make_plan,
    tau_for_budget,
)


def test_tau_from_rho():
    entropies = [4.0, 3.0, 2.5, 1.0]
    assert compute_tau(entropies, 1.0) == pytest.approx(2.5)
    assert compute_tau(entropies, 0.7) == pytest.approx(1.75)
    assert compute_tau(entropies, 0.0) == 0.0
    with pytest.raises(ValueError, match="rho"):
        compute_tau(entropies, 1.5)
    with pytest.raises(ValueError, match="layer_entropy"):
        compute_tau([1.0, float("nan")], 0.5)


def test_config_tau_overrides_rho_and_needs_calibration():
    assert DaisyConfig(rho=1.0).resolve_tau([4.0, 1.0]) == pytest.approx(2.5)
    assert DaisyConfig(rho=1.0, tau=0.3).resolve_tau([4.0, 1.0]) == pytest.approx(0.3)
    assert DaisyConfig(strategy="full").resolve_tau(None) is None
    with pytest.raises(ValueError, match="daisy calibrate"):
        DaisyConfig(rho=0.7).resolve_tau(None)


# counts[k-1] = training utterances that exited at layer k (L = 6)
COUNTS = [0, 10, 50, 30, 10, 0]


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("none", [1, 2, 3, 4, 5, 6]),
        ("mean", [3, 4]),  # mu = (20 + 150 + 120 + 50) / 100 = 3.4
        ("threshold", [3, 4]),  # shares 0.1 0.5 0.3 0.1 -> > 0.15
        ("min-max", [2, 3, 4, 5]),
        ("full", [6]),
    ],
)
def test_spans_on_hand_made_statistics(strategy, expected):
    assert exit_span(strategy, 6, COUNTS) == expected


def test_mean_span_on_integer_mean_is_one_layer():
    assert exit_span("mean", 4, [0, 5, 0, 0]) == [2]


def test_threshold_share_is_strict_and_configurable():
    assert exit_span("threshold", 4, [15, 85, 0, 0], span_threshold=0.15) == [2]
    assert exit_span("threshold", 4, [16, 84, 0, 0], span_threshold=0.15) == [1, 2]
    with pytest.raises(ValueError, match="lower span_threshold"):
        exit_span("threshold", 4, [25, 25, 25, 25], span_threshold=0.3)


def test_fixed_span():
    assert exit_span("fixed", 6, fixed_layer=3) == [3]
    with pytest.raises(ValueError, match="fixed_layer"):
        exit_span("fixed", 6, fixed_layer=7)


@pytest.mark.parametrize("strategy", ["mean", "threshold", "min-max"])
def test_statistics_strategies_without_statistics_are_errors(strategy):
    with pytest.raises(ValueError, match="needs exit statistics"):
        exit_span(strategy, 6, None)
    with pytest.raises(ValueError, match="needs exit statistics"):
        exit_span(strategy, 6, [0] * 6)


def test_unknown_strategy():
    with pytest.raises(ValueError, match="unknown exit strategy 'median'"):
        exit_span("median", 6, COUNTS)
    with pytest.raises(ValueError, match="strategy='median' is unknown"):
        DaisyConfig(strategy="median")


def test_plan_never_checks_the_deepest_layer():
    plan = make_plan([3, 4, 5], tau=1.0)
    assert plan.check_layers == (3, 4) and plan.deepest == 5 and plan.tau == 1.0
    assert make_plan([6], None).check_layers == ()
    with pytest.raises(ValueError, match="needs a threshold"):
        make_plan([1, 2], None)


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['roh'\]"):
        DaisyConfig.from_mapping({"roh": 0.5})
    for bad in (
        {"rho": 2},
        {"rho": "high"},
        {"tau": -1},
        {"span_threshold": 1.5},
        {"strategy": "fixed"},
        {"featurize_layer0": "yes"},
    ):
        with pytest.raises(ValueError, match="upstream config"):
            DaisyConfig.from_mapping(bad)
    path = tmp_path / "up.yaml"
    path.write_text("rho: 1.0\nstrategy: threshold\ncalibration: cal.yaml\n")
    config = DaisyConfig.from_yaml(path)
    assert config.calibration == str(tmp_path / "cal.yaml")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DaisyConfig.from_yaml(tmp_path / "missing.yaml")
    (tmp_path / "cal.yaml").write_text("dataset: x\n")
    with pytest.raises(ValueError, match="layer_entropy"):
        load_calibration(tmp_path / "cal.yaml")


def test_layers_past_exit_values_replace_and_to_dict():
    assert DaisyConfig().layers_past_exit == "zeros"
    assert DaisyConfig(layers_past_exit="copy").layers_past_exit == "copy"
    with pytest.raises(ValueError, match="layers_past_exit='repeat' is unknown; choose one of zeros, copy"):
        DaisyConfig(layers_past_exit="repeat")
    config = DaisyConfig(strategy="fixed", fixed_layer=2)
    changed = config.replace(layers_past_exit="copy", tau=0.5)
    assert (changed.layers_past_exit, changed.tau, changed.fixed_layer) == ("copy", 0.5, 2)
    assert config.layers_past_exit == "zeros"  # the original is unchanged
    assert DaisyConfig.from_mapping(changed.to_dict()) == changed
    assert set(changed.to_dict()) == set(DaisyConfig.keys())
    with pytest.raises(ValueError, match="unknown key"):
        config.replace(taus=1.0)
    with pytest.raises(ValueError, match="fixed_layer"):
        config.replace(fixed_layer=0)


def test_tau_for_budget_reads_the_curve_and_refuses_a_bad_one():
    curve = {"tau": [0.0, 0.3, 0.6, 0.9], "spent": [1.01, 0.85, 0.8, 0.62]}
    assert tau_for_budget(curve, 1.0) == 0.3  # the most compute within the budget
    assert tau_for_budget(curve, 0.8) == 0.6 and tau_for_budget(curve, 0.79) == 0.9
    with pytest.raises(ValueError, match=r"below the least these branches can spend \(0.620"):
        tau_for_budget(curve, 0.5)
    for bad in ({"tau": [0.1]}, {"tau": [0.1, 0.2], "spent": [0.9]}, {"tau": [], "spent": []}):
        with pytest.raises(ValueError, match="budget_curve needs lists"):
            tau_for_budget(bad, 0.8)
