"""DAISY's premise (entropy falls with depth): the rule, the calibration record, the warning, --strict-premise."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.cli import main
from daisy_upstream.integration.hubconf import DEFAULT_CHECKPOINT
from daisy_upstream.testing import make_random_checkpoint, write_wavs
from daisy_upstream.training.calibration import calibrate_checkpoint, check_premise, summarize
from daisy_upstream.training.premise import PremiseError, judge_premise, linear_fit

HELDOUT = Path(__file__).resolve().parents[1] / "data" / "heldout_clips"
NUM_CLASSES = 20


def _judge(mean, std):
    slope, _, r2 = linear_fit(mean)
    return judge_premise(mean, std, slope, r2)


def test_the_rule_on_flat_rising_and_falling_means():
    # the flat wav2vec 2.0 figures: R^2 ~ 0, no fall
    flat = _judge([2.851, 2.868, 2.870, 2.851], [0.2] * 4)
    assert not flat["holds"] and "trend" in flat["failed"]
    rising = _judge([1.0, 1.7, 2.4, 3.2], [0.3] * 4)  # slope +0.73, R^2 ~ 1
    assert not rising["holds"] and rising["failed"] == ["falls", "size"]
    assert rising["slope"] == pytest.approx(0.73) and rising["r2"] > 0.99
    falling = _judge([0.68, 0.45, 0.34, 0.29, 0.27, 0.21], [0.27] * 6)  # the embedded model's shape
    assert falling["holds"] and falling["failed"] == []
    # a clean fall that is small against how much utterances differ: exits would sort by utterance
    small = _judge([1.00, 0.99, 0.98, 0.97], [0.5] * 4)
    assert small["failed"] == ["size"]
    assert small["fall"] == pytest.approx(0.03) and small["spread"] == pytest.approx(0.5)
    assert _judge([1.0], [0.0])["failed"] == ["layers"]


def _handmade(tmp_path: Path, leads, name: str) -> Path:
    """Zero branch weights, bias ``lead`` on class 0 at layer k: every frame's entropy is known
    (it falls as the lead grows), the same on every utterance."""
    state = make_random_checkpoint(num_layers=len(leads), num_clusters=NUM_CLASSES)
    for k, lead in enumerate(leads):
        state["daisy"]["branches"][f"{k}.weight"] = torch.zeros(NUM_CLASSES, 32)
        bias = torch.zeros(NUM_CLASSES)
        bias[0] = lead
        state["daisy"]["branches"][f"{k}.bias"] = bias
    atomic_torch_save(state, tmp_path / name)
    return tmp_path / name


@pytest.fixture
def audio_dir(tmp_path) -> Path:
    write_wavs(tmp_path / "audio", [0.3, 0.45, 0.6, 0.5])
    return tmp_path / "audio"


@pytest.mark.parametrize(
    "leads, holds, failed",
    [([0.0, 2.0, 4.0, 6.0], True, []), ([6.0, 4.0, 2.0, 0.0], False, ["falls"]), ([3.0] * 4, False, ["falls"])],
)
def test_the_record_carries_the_premise(tmp_path, audio_dir, leads, holds, failed):
    ckpt = _handmade(tmp_path, leads, "handmade.pt")
    result = calibrate_checkpoint(ckpt, AudioCorpus.from_source(audio_dir), batch_seconds=1.0)
    premise = result.to_dict()["premise"]
    assert premise["holds"] is holds and premise["failed"][: len(failed)] == failed
    slope, _, r2 = linear_fit(result.layer_entropy)
    assert premise["slope"] == pytest.approx(slope) and (math.isnan(r2) or premise["r2"] == pytest.approx(r2))
    assert premise["spread"] == pytest.approx(0.0, abs=1e-5)  # every utterance has the same entropies
    stream = io.StringIO()
    assert check_premise(result.to_dict(), stream=stream) is holds
    lines = stream.getvalue().splitlines()
    if holds:
        assert lines == []
    else:
        assert len(lines) == 1 and "premise does not hold" in lines[0]
        assert "k-means targets on a deeper layer" in lines[0] and "stage-1 steps" in lines[0]
        with pytest.raises(PremiseError, match="--strict-premise"):
            check_premise(result.to_dict(), strict=True)


def test_an_older_record_without_premise_is_judged_on_its_means():
    record = summarize(torch.tensor([[1.0, 2.0, 3.0], [1.2, 2.1, 3.3]]), "rising").to_dict()
    del record["premise"]
    stream = io.StringIO()
    assert check_premise(record, stream=stream) is False and "slope +" in stream.getvalue()


def test_cli_warns_in_one_line_and_strict_exits_2_writing_nothing(tmp_path, audio_dir, capsys):
    ckpt = _handmade(tmp_path, [6.0, 4.0, 2.0, 0.0], "rising.pt")
    base = ["calibrate", "-k", str(ckpt), "--audio", str(audio_dir), "--batch-seconds", "1", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "a.yaml")]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith("daisy calibrate: warning: the premise does not hold")
    assert (tmp_path / "a.yaml").is_file()
    assert main(base + ["--out", str(tmp_path / "b.yaml"), "--strict-premise"]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "premise does not hold" in err and "Traceback" not in err
    assert not (tmp_path / "b.yaml").exists() and not (tmp_path / "b.png").exists()


def test_it_holds_for_the_embedded_model_on_held_out_speech():
    """The embedded tiny HuBERT (trained) on clips of speakers it never saw."""
    result = calibrate_checkpoint(DEFAULT_CHECKPOINT, AudioCorpus.from_source(HELDOUT), batch_seconds=10.0)
    premise = result.to_dict()["premise"]
    assert premise["holds"], premise
    assert premise["slope"] < 0 and premise["r2"] >= 0.5 and premise["fall"] >= 0.5 * premise["spread"]
    assert check_premise(result.to_dict(), strict=True)


def test_train_branches_ends_with_the_check(tmp_path, write_checkpoint, capsys):
    """The end of train-branches: the written calibration carries the premise; its warning line
    appears exactly when it does not hold, and --strict-premise turns that into exit 2."""
    write_wavs(tmp_path / "audio", [0.5, 0.6, 0.7, 0.8, 0.55, 0.65, 0.75, 0.85, 0.6, 0.7])
    ckpt = write_checkpoint(num_layers=3, branches=False)
    args = ["train-branches", "-k", str(ckpt), "--audio", str(tmp_path / "audio"), "--max-steps", "2"]
    args += ["--batch-seconds", "2", "--heldout-fraction", "0.3", "--no-progress", "--eval-every", "0"]
    status = main(args + ["--out", str(tmp_path / "b.pt")])
    err = capsys.readouterr().err
    record = torch.load(tmp_path / "b.pt", weights_only=True)["daisy"]["calibration"]
    holds = record["premise"]["holds"]
    assert status == 0
    assert ("train-branches: warning: the premise does not hold" in err) is (not holds)
    strict = main(args + ["--out", str(tmp_path / "c.pt"), "--strict-premise", "--work-dir", str(tmp_path / "w2")])
    assert strict == (0 if holds else 2)
