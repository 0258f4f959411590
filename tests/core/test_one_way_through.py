"""One way through: an upstream built from a checkpoint dict and a calibration record held in
memory is the upstream built from their files; the tools build it once and write no file; the
span, its line, the exit rule and the rho range each have one home (:mod:`daisy_upstream.core.policy`).
"""

from __future__ import annotations

import tempfile

import pytest
import torch
import yaml

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.core.early_exit import EarlyExitModel
from daisy_upstream.core.expert import DaisyUpstream
from daisy_upstream.core.policy import (
    DaisyConfig,
    MissingCalibration,
    check_rho,
    compute_tau,
    describe_span,
    evaluation_span,
    exits,
    make_plan,
    valid_rho,
)
from daisy_upstream.evaluation import loading
from daisy_upstream.integration.hubconf import daisy_hubert_local, daisy_local, daisy_wavlm_local
from daisy_upstream.testing import make_random_checkpoint, sharpen_branches, varied_waves
from daisy_upstream.training.calibration import utterance_entropies
from daisy_upstream.training.precision_report import exit_layers

ENTROPY = [2.9, 2.8, 2.7, 2.6]


@pytest.fixture(scope="module")
def state():
    return sharpen_branches(make_random_checkpoint(num_layers=4, layer_entropy=ENTROPY), 4.0)


@pytest.fixture(scope="module")
def wavs():
    return varied_waves(4000, 6400, 8000, 5600, 7200)


def _features(upstream, wavs):
    with torch.no_grad():
        return upstream.eval()(wavs)


def test_an_upstream_from_a_dict_is_the_upstream_from_its_file(state, wavs, tmp_path):
    path = tmp_path / "m.pt"
    atomic_torch_save(state, path)
    from_file, from_dict = daisy_hubert_local(str(path), rho=0.9), daisy_hubert_local(state, rho=0.9)
    assert from_dict.tau == from_file.tau == compute_tau(ENTROPY, 0.9)
    a, b = _features(from_file, wavs), _features(from_dict, wavs)
    assert torch.equal(a["exit_layers"], b["exit_layers"])
    assert all(torch.equal(x, y) for x, y in zip(a["hidden_states"], b["hidden_states"]))
    with pytest.raises(ValueError, match="hubert checkpoint .*not wavlm; use -u daisy_hubert_local"):
        daisy_wavlm_local(state)


def test_a_calibration_record_in_memory_is_the_calibration_file(state, tmp_path):
    plain = {k: v for k, v in state.items() if k != "daisy"}
    plain["daisy"] = {k: v for k, v in state["daisy"].items() if k != "calibration"}
    record = {"layer_entropy": [3.0, 2.0, 1.5, 1.0], "dataset": "here"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(record))
    from_record = DaisyUpstream(plain, rho=0.5, calibration_record=record)
    from_file = DaisyUpstream(plain, rho=0.5, calibration=str(tmp_path / "c.yaml"))
    assert from_record.tau == from_file.tau == compute_tau(record["layer_entropy"], 0.5) == 1.0
    # the record replaces the checkpoint's own calibration
    assert DaisyUpstream(state, rho=0.5, calibration_record=record).tau == 1.0
    with pytest.raises(MissingCalibration):
        DaisyUpstream(plain, rho=0.5)
    with pytest.raises(ValueError, match="give one of them"):
        DaisyUpstream(plain, calibration_record=record, calibration=str(tmp_path / "c.yaml"))
    with pytest.raises(ValueError, match="lists 2 layers but the model has 4"):
        DaisyUpstream(plain, calibration_record={"layer_entropy": [2.0, 1.0]})
    with pytest.raises(ValueError, match="'layer_entropy' list"):
        DaisyUpstream(plain, calibration_record={"dataset": "x"})
    with pytest.raises(ValueError, match="needs a checkpoint path"):
        daisy_local(None)


def test_load_upstream_calibrates_in_memory_and_builds_once(state, wavs, monkeypatch):
    plain = {k: v for k, v in state.items() if k != "daisy"}
    plain["daisy"] = {k: v for k, v in state["daisy"].items() if k != "calibration"}
    built = []

    class Counted(DaisyUpstream):
        def __init__(self, *args, **kwargs):
            built.append(1)
            super().__init__(*args, **kwargs)

    def no_temporary_files(*args, **kwargs):
        raise AssertionError("a temporary file was made")

    monkeypatch.setattr(loading, "DaisyUpstream", Counted)
    monkeypatch.setattr(tempfile, "mkstemp", no_temporary_files)
    monkeypatch.setattr(tempfile, "mkdtemp", no_temporary_files)
    loaded = loading.load_upstream(plain, {"rho": 0.8}, calibrate_on=wavs)
    assert built == [1] and loaded.checkpoint is None
    # the calibration is the branches' entropy on that audio, as daisy calibrate measures it
    net = EarlyExitModel(loaded.upstream.net.model, None).eval()
    with torch.no_grad():
        expected = utterance_entropies(net, loaded.upstream.net.branches, wavs).mean(dim=0).tolist()
    assert loaded.calibration["layer_entropy"] == pytest.approx(expected, rel=1e-9)
    assert loaded.upstream.tau == pytest.approx(compute_tau(expected, 0.8), rel=1e-12)
    # a checkpoint with its own calibration is not calibrated again
    assert loading.load_upstream(state, {"rho": 0.8}, calibrate_on=wavs).calibration is None


def test_the_offline_exit_rule_is_the_forward_s(state, wavs):
    """precision_report's exit layers from stored entropies (as calibration measures them) are
    the exit layers the upstream's forward decides."""
    upstream = DaisyUpstream(state, tau=0.0).eval()
    with torch.no_grad():
        entropies = utterance_entropies(upstream.net, upstream.net.branches, wavs)  # (N, L), a full forward
        tau = float(entropies[:, :-1].median())  # some rows exit early, some do not
        online = upstream.run(wavs, make_plan([1, 2, 3, 4], tau)).exit_layers
    offline = exit_layers(entropies, tau)
    assert torch.equal(offline, online.cpu()) and len(set(offline.tolist())) > 1
    assert torch.equal(exits(torch.tensor([0.5, 1.0, 1.5]), 1.0), torch.tensor([True, False, False]))


def test_one_span_rule_and_one_line():
    counts = [0, 1, 9]
    threshold = DaisyConfig(strategy="threshold")
    assert evaluation_span(threshold, 3, counts) == [3]
    assert evaluation_span(DaisyConfig(strategy="none"), 3, counts) == [1, 2, 3]  # counts not used
    with pytest.raises(ValueError, match="needs exit statistics"):
        evaluation_span(threshold, 3, None)
    assert describe_span(threshold, [3], counts, 0.51234) == (
        "exit span [3] (strategy threshold from training exit counts [0, 1, 9], tau 0.5123)"
    )
    none = describe_span(DaisyConfig(), [1, 2, 3], None, None)
    assert (
        none
        == "exit span [1, 2, 3] (strategy none (plain threshold: every layer may exit; no exit statistics used), tau -)"
    )


def test_one_rho_range():
    assert [valid_rho(v) for v in (0, 0.5, 1, 1.0001, -0.1, True, "0.5", None)] == [
        True,
        True,
        True,
        False,
        False,
        False,
        False,
        False,
    ]
    assert check_rho(1) == 1.0
    for bad in (1.5, True):
        with pytest.raises(ValueError, match=r"rho must be a number in \[0, 1\]"):
            check_rho(bad)
        with pytest.raises(ValueError, match="rho"):
            DaisyConfig(rho=bad)
        with pytest.raises(ValueError, match="rho"):
            compute_tau(ENTROPY, bad)
