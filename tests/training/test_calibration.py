"""Calibration: per-layer entropy statistics, tau, the YAML the upstream reads, the plot, the CLI."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.core.policy import compute_tau, load_calibration
from daisy_upstream.integration.hubconf import daisy_hubert_local
from daisy_upstream.testing import make_random_checkpoint, write_wavs
from daisy_upstream.training.calibration import (
    calibrate_checkpoint,
    format_table,
    linear_fit,
    plot_calibration,
    summarize,
    write_calibration_yaml,
)

NUM_CLASSES = 20
LEAD_LOGIT = [0.0, 2.0, 6.0]  # layer k's bias: LEAD_LOGIT[k-1] on class 0, 0 elsewhere


def analytic_entropy(lead: float, classes: int = NUM_CLASSES) -> float:
    logits = [lead] + [0.0] * (classes - 1)
    z = sum(math.exp(v) for v in logits)
    return -sum(math.exp(v) / z * (v - math.log(z)) for v in logits)


@pytest.fixture
def handmade(tmp_path) -> Path:
    """Zero branch weights with chosen biases: every frame's entropy at layer k is known."""
    state = make_random_checkpoint(num_layers=3, num_clusters=NUM_CLASSES)
    for k, lead in enumerate(LEAD_LOGIT):
        state["daisy"]["branches"][f"{k}.weight"] = torch.zeros(NUM_CLASSES, 32)
        bias = torch.zeros(NUM_CLASSES)
        bias[0] = lead
        state["daisy"]["branches"][f"{k}.bias"] = bias
    atomic_torch_save(state, tmp_path / "handmade.pt")
    return tmp_path / "handmade.pt"


@pytest.fixture
def audio_dir(tmp_path) -> Path:
    write_wavs(tmp_path / "audio", [0.3, 0.45, 0.6, 0.5])
    return tmp_path / "audio"


def test_handmade_numbers_and_yaml_loads_into_upstream(handmade, audio_dir, tmp_path):
    corpus = AudioCorpus.from_source(audio_dir)
    result = calibrate_checkpoint(handmade, corpus, rhos=(0.5, 1.0), batch_seconds=1.0)
    expected = [analytic_entropy(v) for v in LEAD_LOGIT]
    assert expected[0] == pytest.approx(math.log(NUM_CLASSES))
    assert result.entropies.shape == (4, 3)
    assert torch.allclose(result.entropies, torch.tensor([expected] * 4, dtype=torch.float64), atol=1e-5)
    assert result.layer_entropy == pytest.approx(expected, abs=1e-5)
    assert result.layer_std == pytest.approx([0.0] * 3, abs=1e-5)
    assert (result.e_max_layer, result.e_min_layer) == (1, 3)
    assert result.tau(0.5) == pytest.approx((expected[0] + expected[2]) / 2 * 0.5, abs=1e-5)
    assert result.audio_seconds == pytest.approx(0.3 + 0.45 + 0.6 + 0.5)

    path = write_calibration_yaml(result, tmp_path / "calib.yaml")
    data = load_calibration(path)
    assert data["layer_entropy"] == result.layer_entropy
    assert data["tau_for_rho"][0] == {"rho": 0.5, "tau": result.tau(0.5)}
    assert data["num_utterances"] == 4 and set(data["linear_fit"]) == {"slope", "intercept", "r2"}
    upstream = daisy_hubert_local(str(handmade), model_config={"calibration": str(path), "rho": 0.5})
    assert upstream.tau == result.tau(0.5)
    with pytest.raises(FileExistsError, match="--force"):
        write_calibration_yaml(result, path)
    write_calibration_yaml(result, path, force=True)


def test_statistics_over_utterances():
    entropies = torch.tensor([[3.0, 2.0, 1.0], [5.0, 2.0, 0.0], [4.0, 2.0, 2.0]])
    result = summarize(entropies, "hand", rhos=(0.7,))
    assert result.layer_entropy == [4.0, 2.0, 1.0]
    assert result.layer_std == pytest.approx([1.0, 0.0, 1.0])
    assert result.layer_quantile(0.5) == [4.0, 2.0, 1.0]
    assert result.layer_quantile(0.25) == [3.5, 2.0, 0.5]
    assert result.tau(0.7) == compute_tau([4.0, 2.0, 1.0], 0.7) == pytest.approx(1.75)
    slope, intercept, r2 = result.fit
    assert slope == pytest.approx(-1.5) and intercept == pytest.approx(5.333333, abs=1e-5)
    assert r2 == pytest.approx(1 - (1 / 6) / (14 / 3))
    table = format_table(result)
    assert "rho = 0.7: tau = 1.750000" in table and len(table.splitlines()) <= 24


def test_linear_fit_edge_cases():
    assert linear_fit([5.0, 4.0, 3.0]) == pytest.approx((-1.0, 6.0, 1.0))
    assert linear_fit([2.0, 2.0])[2] == 1.0
    assert math.isnan(linear_fit([1.0])[2])


def test_plot_is_written(tmp_path):
    result = summarize(torch.rand(5, 4) + torch.arange(4, 0, -1), "plot test")
    path = plot_calibration(result, tmp_path / "fig.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileExistsError):
        plot_calibration(result, path)


def test_workers_change_nothing_and_bad_audio_is_counted_by_path(write_checkpoint, tmp_path):
    """calibrate with 0 and 2 DataLoader workers: the same per-utterance entropies and keys, in
    the same order, as a forward per length-packed batch of the corpus' own decoding (what
    calibrate did before the DataLoader); a NaN file decoded in a worker is skipped and counted
    by its path in the caller's record."""
    import numpy as np
    import soundfile as sf

    from daisy_upstream.core.checkpoint import load_daisy_checkpoint
    from daisy_upstream.core.early_exit import EarlyExitModel
    from daisy_upstream.training.calibration import utterance_entropies

    audio = tmp_path / "audio"
    write_wavs(audio, [0.3, 0.45, 0.6, 0.5, 0.35, 0.55, 0.4, 0.65])
    bad = audio / "zz_nan.wav"
    samples = np.full(8000, 0.1, dtype=np.float32)
    samples[100] = np.nan
    sf.write(bad, samples, 16000, subtype="FLOAT")
    ckpt = write_checkpoint(num_layers=2, sharpen=3.0)
    loaded = load_daisy_checkpoint(ckpt)
    backbone = EarlyExitModel(loaded.model, None, normalize_waveform=bool(loaded.task_cfg.normalize)).eval()
    corpus = AudioCorpus.from_source(audio)
    assert len(corpus.batches(1.0)) >= 4  # several batches per worker
    rows, keys = [], []
    for batch in corpus.batches(1.0):
        wavs, kept = corpus.load_batch(batch)
        if wavs:
            rows.append(utterance_entropies(backbone, loaded.branches.eval(), wavs))
            keys += [corpus.items[i].key for i in kept]
    reference = torch.cat(rows)
    assert reference.shape == (8, 2) and len({tuple(row) for row in reference.tolist()}) == 8  # order is visible
    for workers in (0, 2):
        corpus = AudioCorpus.from_source(audio)
        result = calibrate_checkpoint(ckpt, corpus, batch_seconds=1.0, workers=workers, prefetch=1)
        assert result.keys == keys, workers
        assert torch.equal(result.entropies, reference), workers
        assert result.audio_seconds == pytest.approx(0.3 + 0.45 + 0.6 + 0.5 + 0.35 + 0.55 + 0.4 + 0.65)
        assert [(path, reason.split(":")[0]) for path, reason in corpus.problems.skipped] == [(str(bad), "non-finite")]


def test_plain_checkpoint_has_nothing_to_calibrate(write_checkpoint, audio_dir):
    path = write_checkpoint(num_layers=2, branches=False)
    with pytest.raises(ValueError, match="nothing to calibrate"):
        calibrate_checkpoint(path, AudioCorpus.from_source(audio_dir))


def test_cli_prints_the_tau_the_upstream_uses(handmade, audio_dir, tmp_path, capsys):
    from daisy_upstream.cli import main

    out = tmp_path / "c" / "calib.yaml"
    args = [
        "calibrate",
        "-k",
        str(handmade),
        "--audio",
        str(audio_dir),
        "--out",
        str(out),
        "--rho",
        "0.7",
        "1.0",
        "--no-progress",
        "--batch-seconds",
        "1",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    printed = float(re.search(r"rho = 0.7: tau = ([0-9.]+)", text).group(1))
    upstream = daisy_hubert_local(str(handmade), model_config={"calibration": str(out), "rho": 0.7})
    assert abs(upstream.tau - printed) < 1e-6
    assert out.with_suffix(".png").is_file()
    assert main(args) == 2  # an existing output is a user error: one line, exit 2
    err = capsys.readouterr().err
    assert err.startswith("daisy calibrate: error: ") and "pass --force" in err
    assert main(args + ["--force"]) == 0


def test_cli_reads_an_s3prl_voxceleb1_config(handmade, tmp_path, capsys):
    from daisy_upstream.cli import main

    vox = tmp_path / "vox"
    write_wavs(vox / "dev" / "wav" / "id10001" / "v", [0.3, 0.4], prefix="0000")
    meta = tmp_path / "meta.txt"
    meta.write_text("1 id10001/v/00000.wav\n3 id10001/v/00001.wav\n")
    config = tmp_path / "voxceleb1" / "config.yaml"
    config.parent.mkdir()
    config.write_text(
        yaml.safe_dump({"downstream_expert": {"datarc": {"file_path": str(vox), "meta_data": str(meta)}}})
    )
    out = tmp_path / "vox.yaml"
    assert (
        main(
            [
                "calibrate",
                "-k",
                str(handmade),
                "--s3prl-config",
                str(config),
                "--split",
                "test",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert load_calibration(out)["num_utterances"] == 1
    assert (
        main(["calibrate", "-k", str(handmade), "--s3prl-config", str(config), "--out", str(tmp_path / "x.yaml")]) == 2
    )
    assert "needs --split" in capsys.readouterr().err
