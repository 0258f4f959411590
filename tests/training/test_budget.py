"""tau from a compute budget: the curve, its resolution, the config key, and `daisy profile` meeting it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.cli import main
from daisy_upstream.core.policy import DaisyConfig, MissingCalibration, tau_for_budget
from daisy_upstream.integration.hubconf import DEFAULT_CHECKPOINT, daisy_hubert_local
from daisy_upstream.leaderboard.cost_model import measure_cost_model
from daisy_upstream.leaderboard.profile import load_clips, profile_upstream
from daisy_upstream.testing import write_wavs
from daisy_upstream.training.budget import budget_curve, exit_layers_at, spent_at, utterance_costs
from daisy_upstream.training.calibration import calibrate_checkpoint, write_calibration_yaml

HELDOUT = Path(__file__).resolve().parents[1] / "data" / "heldout_clips"


def test_exit_layers_follow_the_first_checked_layer_below_tau():
    entropies = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.9, 0.9], [0.9, 0.9, 0.0]], dtype=torch.float64)
    assert exit_layers_at(entropies, 0.6).tolist() == [2, 1, 3]  # layer 3 is never checked
    assert exit_layers_at(entropies, 0.5).tolist() == [3, 1, 3]  # strictly below tau
    assert exit_layers_at(entropies, 0.0).tolist() == [3, 3, 3]


def test_curve_is_monotone_and_resolution_takes_the_most_compute_within_budget():
    cost = measure_cost_model(daisy_hubert_local(str(DEFAULT_CHECKPOINT)).net)
    torch.manual_seed(0)
    entropies = torch.rand(40, 6, dtype=torch.float64)
    samples = [16000 + 800 * i for i in range(40)]
    curve = budget_curve(entropies, samples, cost)
    taus, spent = curve["tau"], curve["spent"]
    assert taus == sorted(taus) and all(a >= b for a, b in zip(spent, spent[1:]))
    assert spent[0] > 1.0  # tau 0: nothing leaves, and the 5 branches were checked
    costs = utterance_costs(cost, samples)
    assert spent[-1] == pytest.approx(float(costs[:, 0].mean()))  # everything at layer 1
    for budget in (0.7, 0.8, 1.0):
        tau = tau_for_budget(curve, budget)
        assert spent_at(entropies, costs, tau) <= budget
        below = [t for t in taus if t < tau]
        assert not below or spent_at(entropies, costs, below[-1]) > budget  # the smallest such tau
    with pytest.raises(ValueError, match="below the least these branches can spend"):
        tau_for_budget(curve, 0.3)


def test_config_key_budget():
    assert DaisyConfig(budget=0.8).budget == 0.8
    for bad in (0.0, 1.5, True, "0.8", float("nan")):
        with pytest.raises(ValueError, match="budget"):
            DaisyConfig(budget=bad)
    with pytest.raises(ValueError, match="give one of them"):
        DaisyConfig(budget=0.8, tau=0.3)
    with pytest.raises(ValueError, match="strategy 'none'"):
        DaisyConfig(budget=0.8, strategy="fixed", fixed_layer=2)
    curve = {"tau": [0.0, 0.5, 1.0], "spent": [1.02, 0.7, 0.4]}
    assert DaisyConfig(budget=0.8).resolve_tau([1.0, 0.2], curve) == 0.5
    assert DaisyConfig(budget=0.8, rho=0.1).resolve_tau([1.0, 0.2], curve) == 0.5  # budget overrides rho
    with pytest.raises(MissingCalibration, match="no budget_curve"):
        DaisyConfig(budget=0.8).resolve_tau([1.0, 0.2], None)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """The embedded model calibrated on the held-out clips, with the budgets 0.6 and 0.8."""
    corpus = AudioCorpus.from_source(HELDOUT)
    result = calibrate_checkpoint(DEFAULT_CHECKPOINT, corpus, batch_seconds=10.0, budgets=(0.7, 0.8))
    path = write_calibration_yaml(result, tmp_path_factory.mktemp("cal") / "cal.yaml")
    return result, path


def test_profile_on_the_calibration_audio_spends_what_the_curve_says(calibrated):
    """The curve is a prediction of what `daisy profile` counts: on the same clips it is exact."""
    result, path = calibrated
    record = yaml.safe_load(path.read_text())
    assert [r["budget"] for r in record["tau_for_budget"]] == [0.7, 0.8]
    clips = load_clips(sorted(HELDOUT.glob("*.wav")))
    for budget in (0.7, 0.8):
        upstream = daisy_hubert_local(
            str(DEFAULT_CHECKPOINT), model_config={"calibration": str(path), "budget": budget}
        )
        assert upstream.tau == result.tau_for_budget(budget)
        profile = profile_upstream(upstream.eval(), clips)
        spent = tau_for_budget_spent(record["budget_curve"], upstream.tau)
        assert profile["spent"]["mean"] == pytest.approx(spent, abs=1e-6)
        assert profile["spent"]["mean"] <= budget and profile["spent"]["budget"] == budget


def tau_for_budget_spent(curve, tau):
    return curve["spent"][curve["tau"].index(tau)]


def test_cli_budget_logs_tau_and_plots_the_curve(tmp_path, capsys, caplog):
    caplog.set_level("INFO")
    write_wavs(tmp_path / "audio", [0.8, 1.1, 1.3, 0.9, 1.6])
    out = tmp_path / "cal.yaml"
    args = ["calibrate", "-k", str(DEFAULT_CHECKPOINT), "--audio", str(tmp_path / "audio"), "--no-progress"]
    assert main(args + ["--budget", "0.9", "1.0", "--out", str(out)]) == 0
    text = capsys.readouterr()
    record = yaml.safe_load(out.read_text())
    taus = {r["budget"]: r["tau"] for r in record["tau_for_budget"]}
    assert f"budget = 0.9: tau = {taus[0.9]:.6f}" in text.out
    assert f"budget 0.9: tau {taus[0.9]:.6f}" in caplog.text  # the log line
    assert "'budget: 0.9'" in text.out
    assert (tmp_path / "cal.png").stat().st_size > 0
    for bad in ("0", "1.2", "x"):
        with pytest.raises(SystemExit) as stop:
            main(args + ["--budget", bad, "--out", str(tmp_path / "bad.yaml")])
        assert stop.value.code == 2
    assert main(args + ["--budget", "0.01", "--out", str(tmp_path / "low.yaml")]) == 2
    assert "below the least" in capsys.readouterr().err and not (tmp_path / "low.yaml").exists()
