"""Atomic audio writing (16-bit PCM FLAC / WAV); reading is :func:`daisy_upstream.audio.io.read_audio`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf

from daisy_upstream.atomic import atomic_path
from daisy_upstream.audio.io import SAMPLE_RATE

__all__ = ["write_audio", "to_pcm16"]

PathLike = Union[str, os.PathLike]


def to_pcm16(wav: np.ndarray) -> np.ndarray:
    """Round float samples to the values a 16-bit file stores (as float32)."""
    return (np.clip(np.round(np.asarray(wav, dtype=np.float64) * 32768.0), -32768, 32767) / 32768.0).astype(np.float32)


def write_audio(path: PathLike, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono ``wav`` as 16-bit PCM (FLAC or WAV by suffix), atomically.

    The file appears under ``path`` only once completely written (temp file + rename).
    """
    path = Path(path)
    fmt = {".flac": "FLAC", ".wav": "WAV"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unsupported audio suffix {path.suffix!r} (use .flac or .wav)")
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"expected mono audio of shape (T,), got {wav.shape}")
    if np.max(np.abs(wav), initial=0.0) > 1.0:
        raise ValueError(f"audio for {path} exceeds full scale; scale it before writing")
    with atomic_path(path) as tmp:
        sf.write(str(tmp), wav, sample_rate, subtype="PCM_16", format=fmt)
