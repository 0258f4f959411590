"""The embedded default checkpoint: it loads in s3prl, and it shows the DAISY premise.

The clips in ``tests/data/heldout_clips`` come from speakers held out from pretraining and
stage 1 (see its ``CLIPS.tsv``). The premise: per-layer branch entropy falls with depth,
and noise makes utterances exit later.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import pytest
import soundfile as sf
import torch

from daisy_upstream.audio.noise import measure_snr, mix_at_snr
from daisy_upstream.core.checkpoint import load_daisy_checkpoint
from daisy_upstream.core.policy import make_plan
from daisy_upstream.integration.hubconf import DEFAULT_CHECKPOINT, daisy_hubert

CLIPS = sorted((Path(__file__).resolve().parents[1] / "data" / "heldout_clips").glob("*.wav"))


def _clips() -> List[np.ndarray]:
    out = []
    for path in CLIPS:
        wav, sr = sf.read(str(path), dtype="float32")
        assert sr == 16000 and wav.ndim == 1
        out.append(wav)
    return out


def _noisy(wav: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(wav.size)
    mix = mix_at_snr(wav, noise, snr_db)
    assert abs(measure_snr(wav, mix - wav) - snr_db) < 0.01
    return mix


@pytest.fixture(scope="module")
def upstream():
    model = daisy_hubert().eval()  # the embedded checkpoint with its own calibration
    return model


def test_embedded_checkpoint_is_small_and_loads_in_stock_s3prl():
    from s3prl.upstream.hubert.hubconf import hubert_local

    assert DEFAULT_CHECKPOINT.stat().st_size < 20 * 2**20
    ours = load_daisy_checkpoint(DEFAULT_CHECKPOINT)
    assert ours.branches is not None and ours.calibration is not None
    assert next(ours.model.parameters()).dtype == torch.float32  # fp16 storage, fp32 model
    stock = hubert_local(ckpt=str(DEFAULT_CHECKPOINT)).eval()
    wav = torch.from_numpy(_clips()[0])
    with torch.no_grad():
        theirs = stock([wav])["hidden_states"]
        mine = daisy_hubert(model_config={"strategy": "full"}).eval()([wav])["hidden_states"]
    assert len(theirs) == len(mine) == ours.num_layers + 1
    for a, b in zip(theirs, mine):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_branch_entropy_falls_with_depth_on_heldout_speech(upstream):
    wavs = [torch.from_numpy(w) for w in _clips()]
    plan = make_plan([upstream.num_layers], None)  # the full model, no exit
    with torch.no_grad():
        out = upstream.run(wavs, plan)
        entropy = torch.stack(
            [
                upstream.net.branches.entropy(k, out.hidden_states[k], out.lengths)
                for k in range(1, upstream.num_layers + 1)
            ],
            dim=1,
        )  # (N, L)
    mean = entropy.mean(dim=0)
    assert (mean[1:] < mean[:-1]).all(), f"mean entropy per layer {mean.tolist()}"


def test_noise_makes_utterances_exit_later(upstream):
    clean = _clips()
    exits = {}
    with torch.no_grad():
        for name, snr in (("clean", None), ("0 dB", 0.0)):
            wavs = [w if snr is None else _noisy(w, snr, seed=i) for i, w in enumerate(clean)]
            exits[name] = upstream.run([torch.from_numpy(np.asarray(w, np.float32)) for w in wavs]).exit_layers
    assert (exits["0 dB"] >= exits["clean"]).all(), exits
    assert exits["0 dB"].float().mean() > exits["clean"].float().mean(), exits
