"""Frame-level features aligned with the CNN's 50 Hz frames: MFCCs and model layers."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torchaudio

from daisy_upstream.audio.io import SAMPLE_RATE

from .data import AudioStream

__all__ = ["mfcc_frames", "stream_features", "layer_features"]


def mfcc_frames(wav: np.ndarray) -> np.ndarray:
    """13 MFCCs + deltas + delta-deltas at 50 Hz, shape ``(F, 39)``.

    ``wav`` is frame-padded audio of ``320*F + 80`` samples (see
    :meth:`AudioStream.utterance`). Kaldi MFCCs (25 ms window, 10 ms shift) give ``2F-1``
    frames; every second frame covers exactly one CNN frame's receptive field.
    """
    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)).unsqueeze(0) * 32768.0
    m = torchaudio.compliance.kaldi.mfcc(x, sample_frequency=SAMPLE_RATE, use_energy=False, dither=0.0)  # (2F-1, 13)
    m = m.transpose(0, 1)
    d1 = torchaudio.functional.compute_deltas(m)
    d2 = torchaudio.functional.compute_deltas(d1)
    feats = torch.cat([m, d1, d2], dim=0).transpose(0, 1)[::2]
    return feats.numpy().astype(np.float32)


def stream_features(stream: AudioStream, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply a per-utterance frame feature function over a stream; ``(num_frames, D)``."""
    out = []
    for i, n in enumerate(stream.frames):
        f = fn(stream.utterance(i))
        if f.shape[0] != n:
            raise RuntimeError(f"feature function gave {f.shape[0]} frames, expected {n}")
        out.append(f)
    return np.concatenate(out, axis=0)


def layer_features(model: torch.nn.Module, layer: int, normalize: bool) -> Callable:
    """A feature function returning transformer layer ``layer``'s output (1-based), ``(F, D)``.

    The model runs in eval mode without masking; ``normalize`` applies the task's
    per-utterance waveform normalisation first.
    """

    def fn(wav: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(wav).unsqueeze(0)
        if normalize:
            x = torch.nn.functional.layer_norm(x, x.shape[-1:])
        with torch.no_grad():
            pm = torch.zeros_like(x, dtype=torch.bool)
            feats, _ = model.extract_features(x, padding_mask=pm, mask=False, output_layer=layer)
        return feats[0].numpy().astype(np.float32)

    return fn
