"""Generated audio for tests: random waveforms, tone files, speech-like signals."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import soundfile as sf
import torch

from daisy_upstream.audio.io import SAMPLE_RATE

__all__ = ["speechlike", "varied_waves", "waves", "write_wav", "write_wavs"]


def waves(*lengths: int, seed: int = 0) -> List[torch.Tensor]:
    """One random waveform ``(n,)`` (std 0.1) per length in samples."""
    generator = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(n, generator=generator) for n in lengths]


def varied_waves(*lengths: int, seed: int = 3) -> List[torch.Tensor]:
    """Noise of several levels, tones and random walks ``(n,)``: on random weights, white noise
    of one level gives nearly equal entropies everywhere, these spread the exits over layers."""
    generator, out = torch.Generator().manual_seed(seed), []
    for i, n in enumerate(lengths):
        kind, t = i % 3, torch.arange(n) / SAMPLE_RATE
        if kind == 0:
            out.append((0.02 + 0.3 * i / len(lengths)) * torch.randn(n, generator=generator))
        elif kind == 1:
            out.append(0.5 * torch.sin(2 * math.pi * (100 + 150 * i) * t))
        else:
            out.append(0.01 * torch.cumsum(torch.randn(n, generator=generator), 0))
    return out


def write_wavs(
    folder: Path, seconds: Sequence[float], rate: int = SAMPLE_RATE, fmt: str = "wav", seed: int = 0, prefix: str = "u"
) -> Dict[str, Path]:
    """Tiny synthetic utterances (tones + noise), ``folder/{prefix}{i}.{fmt}`` -> ``{stem: path}``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for i, sec in enumerate(seconds):
        n = int(round(sec * rate))
        t = np.arange(n) / rate
        x = 0.1 * np.sin(2 * np.pi * (120 + 40 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t))
        x = (x + 0.02 * rng.standard_normal(n)).astype(np.float32)
        path = folder / f"{prefix}{i}.{fmt}"
        sf.write(path, x, rate)
        out[path.stem] = path
    return out


def speechlike(seconds: float, seed: int, noise: float = 0.02) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal with a wandering pitch, plus noise (16 kHz)."""
    rng = np.random.default_rng(seed)
    n = int(SAMPLE_RATE * seconds)
    t = np.arange(n) / SAMPLE_RATE
    f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = sum(np.sin(h * phase) / h for h in range(1, 8))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6)))
    x = voiced * envelope + noise * rng.standard_normal(n)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray) -> Path:
    """``audio`` as a 16 kHz file at ``path`` (parents made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, SAMPLE_RATE)
    return path
