"""A bad audio file is skipped and counted by its path, never a whole-run abort by batch index
(issue 18): a float WAV holding NaN (soundfile writes and reads it as it is) among good files,
through calibrate, train-branches and noise-report."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from daisy_upstream.cli import main


@pytest.fixture
def with_nan_file(audio_dir):
    bad = audio_dir / "zz_nan.wav"
    samples = np.full(16000, 0.1, dtype=np.float32)
    samples[100] = np.nan
    sf.write(bad, samples, 16000, subtype="FLOAT")
    assert np.isnan(sf.read(bad)[0]).any()
    silent = audio_dir / "zz_silent.wav"
    sf.write(silent, np.zeros(16000, dtype=np.float32), 16000)
    return audio_dir, bad, silent


@pytest.mark.parametrize("workers", ["0", "2"])
def test_calibrate_skips_a_nan_file_by_path(write_checkpoint, with_nan_file, tmp_path, capsys, workers):
    audio, bad, _ = with_nan_file
    ckpt = write_checkpoint(num_layers=2, layer_entropy=[1.0, 0.5])
    assert (
        main(
            [
                "calibrate",
                "-k",
                str(ckpt),
                "--audio",
                str(audio),
                "--out",
                str(tmp_path / "c.yaml"),
                "--no-progress",
                "--batch-seconds",
                "2",
                "--workers",
                workers,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "skipped 1 audio file(s): 1 non-finite" in out and str(bad) in out


def test_train_branches_skips_a_nan_file_by_path(write_checkpoint, with_nan_file, tmp_path, capsys):
    audio, bad, _ = with_nan_file
    ckpt = write_checkpoint(num_layers=2, branches=False)
    # 4 training batches (the two 1 s files together), epoch 0 in the order 0 1 3 2: step 3 reads theirs
    assert (
        main(
            [
                "train-branches",
                "-k",
                str(ckpt),
                "--audio",
                str(audio),
                "--out",
                str(tmp_path / "o.pt"),
                "--max-steps",
                "3",
                "--batch-seconds",
                "2",
                "--heldout-fraction",
                "0.2",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "1 non-finite" in out and "trained 3/3 steps" in out


def test_noise_report_skips_silent_and_nan_clips_by_path(with_nan_file, tmp_path, capsys):
    audio, bad, silent = with_nan_file
    assert (
        main(
            [
                "noise-report",
                "--clean",
                str(audio),
                "--snrs",
                "clean",
                "5",
                "--out",
                str(tmp_path / "nr"),
                "--batch-size",
                "4",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "1 non-finite" in err and "1 silent" in err
    noise = tmp_path / "quiet_noise.wav"
    sf.write(noise, np.zeros(32000, dtype=np.float32), 16000)
    assert main(["noise-report", "--clean", str(audio), "--noise", str(noise), "--out", str(tmp_path / "nr2")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert f"noise file {noise} is silent" in lines[-1]
