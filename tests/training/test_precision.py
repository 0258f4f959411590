"""--precision in stage 1 and calibration: the frozen model's forward in bf16 / fp16, its frames,
targets and entropies float32; recorded in the stage-1 state and the k-means file."""

from __future__ import annotations

import pytest
import torch

from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.core.checkpoint import load_daisy_checkpoint
from daisy_upstream.core.early_exit import EarlyExitModel
from daisy_upstream.testing import waves
from daisy_upstream.training.calibration import layer_entropies
from daisy_upstream.training.kmeans_targets import load_or_fit_kmeans
from daisy_upstream.training.precision_report import exit_layers
from daisy_upstream.training.stage1_config import Stage1Config
from daisy_upstream.training.targets import ClusterTargets, batch_features


def _model(write_checkpoint):
    path = write_checkpoint(num_layers=2, sharpen=3.0)
    loaded = load_daisy_checkpoint(path)
    symbols = torch.load(path, weights_only=True)["dictionaries_symbols"][0]
    return loaded, EarlyExitModel(loaded.model, None).eval(), ClusterTargets(loaded.model, symbols)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_forward_gives_float32_frames_and_targets(write_checkpoint, precision):
    loaded, backbone, targets = _model(write_checkpoint)
    wavs = waves(8000, 12000, 6000, seed=2)
    ref, ref_labels = batch_features(backbone, targets, wavs)
    backbone.precision = precision
    low, low_labels = batch_features(backbone, targets, wavs)
    assert ref.dtype == low.dtype == torch.float32 and low.shape == ref.shape
    assert low_labels.dtype == torch.long and low_labels.shape == ref_labels.shape
    assert not torch.equal(low, ref)  # the forward did run in lower precision
    relative = (low - ref).norm() / ref.norm()
    assert 0 < relative < (0.05 if precision == "bf16" else 0.005)
    # the targets are computed in float32 from those frames, not inside autocast
    assert torch.equal(low_labels, targets.labels(low, wavs, None))


def test_entropies_of_an_autocast_forward_are_float32_and_close(write_checkpoint, audio_dir):
    loaded, backbone, _ = _model(write_checkpoint)
    corpus = AudioCorpus.from_source(audio_dir)
    ref, keys, _ = layer_entropies(backbone, loaded.branches, corpus, 2.0)
    backbone.precision = "bf16"
    low, low_keys, _ = layer_entropies(backbone, loaded.branches, corpus, 2.0)
    assert low_keys == keys and low.dtype == torch.float64
    assert not torch.equal(low, ref) and torch.allclose(low, ref, atol=0.1)


def test_precision_is_in_the_stage1_fingerprint_and_the_kmeans_settings(write_checkpoint, audio_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown precision 'fp8'; choose one of fp32, bf16, fp16"):
        Stage1Config(precision="fp8").validate()
    assert "precision" not in Stage1Config().fingerprint()  # fp32 states of older versions resume
    assert Stage1Config(precision="bf16").fingerprint()["precision"] == "bf16"
    _, backbone, _ = _model(write_checkpoint)
    corpus = AudioCorpus.from_source(audio_dir)
    settings = dict(layer=1, clusters=3, seed=0, batch_seconds=2.0, device=torch.device("cpu"), batch_frames=40)
    load_or_fit_kmeans(tmp_path / "w", backbone, corpus, **settings)  # fp32: written
    backbone.precision = "bf16"  # frames of another forward: the fp32 file is not reused
    with pytest.raises(ValueError, match=r"other settings or audio \(precision\)"):
        load_or_fit_kmeans(tmp_path / "w", backbone, corpus, **settings)


def test_exit_layer_is_the_first_checked_layer_below_tau():
    entropies = torch.tensor([[0.9, 0.4, 0.1], [0.9, 0.8, 0.1], [0.2, 0.1, 0.9], [0.9, 0.9, 0.9]])
    assert exit_layers(entropies, 0.5).tolist() == [2, 3, 1, 3]  # the last layer is never checked


def test_cli_precision(write_checkpoint, audio_dir, tmp_path, capsys):
    from daisy_upstream.cli import main

    ckpt = write_checkpoint(num_layers=2, branches=False)
    out = tmp_path / "bf16.pt"
    args = [
        "train-branches",
        "-k",
        str(ckpt),
        "--audio",
        str(audio_dir),
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--batch-seconds",
        "2",
        "--heldout-fraction",
        "0.2",
        "--no-progress",
        "--precision",
        "bf16",
    ]
    assert main(args + ["--stop-after", "1"]) == 0
    assert main(args[:-1] + ["fp32"]) == 2  # the state was made in bf16
    assert "precision: saved 'bf16' now None" in capsys.readouterr().err
    assert main(args) == 0 and out.is_file()
    assert torch.load(out, weights_only=True)["daisy"]["provenance"]["stage1"]["config"]["precision"] == "bf16"
    capsys.readouterr()
    assert (
        main(
            [
                "calibrate",
                "-k",
                str(out),
                "--audio",
                str(audio_dir),
                "--out",
                str(tmp_path / "c.yaml"),
                "--precision",
                "bf16",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (tmp_path / "c.yaml").is_file() and "tau = " in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "calibrate",
                "-k",
                str(out),
                "--audio",
                str(audio_dir),
                "--out",
                str(tmp_path / "d.yaml"),
                "--precision",
                "fp8",
            ]
        )
    assert exit_.value.code == 2
    assert "argument --precision: invalid choice: 'fp8'" in capsys.readouterr().err
