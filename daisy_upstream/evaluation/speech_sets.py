"""Evaluation audio that can be had offline: real recordings and their noisy copies.

The real recordings are LibriVox utterances (public domain) and short "cards" utterances
from Debian's ``pocketsphinx-testdata`` package (installed by the set-up, never committed).
Noisy copies are mixed at an exact SNR with sox-made coloured noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from daisy_upstream.audio.io import SAMPLE_RATE, read_audio
from daisy_upstream.audio.noise import NOISE_COLOURS, fit_length, mix_at_snr, sox_noise

__all__ = ["NoisyClip", "POCKETSPHINX_DATA", "noisy_copies", "pocketsphinx_recordings", "segment"]

POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")


@dataclass
class NoisyClip:
    """One clip: ``wav`` (float32, 16 kHz), its SNR in dB (None = clean) and origin."""

    wav: np.ndarray
    snr_db: Optional[float]
    source: str


def pocketsphinx_recordings(root: Path = POCKETSPHINX_DATA) -> List[np.ndarray]:
    """The LibriVox and cards recordings of pocketsphinx-testdata (16 kHz mono float32)."""
    paths = sorted((root / "librivox").glob("*.wav")) + sorted((root / "cards").glob("*.wav"))
    if not paths:
        raise FileNotFoundError(
            f"no recordings under {root}: install Debian's pocketsphinx-testdata "
            "(apt-get install pocketsphinx-testdata) or pass your own audio"
        )
    return [read_audio(p) for p in paths]


def segment(wavs: Sequence[np.ndarray], lengths_s: Sequence[float], sample_rate: int = SAMPLE_RATE) -> List[np.ndarray]:
    """Cut consecutive segments of the given durations, cycling through ``wavs``."""
    out, w, offset = [], 0, 0
    for seconds in lengths_s:
        n = int(seconds * sample_rate)
        for _ in range(len(wavs) + 1):
            if offset + n <= len(wavs[w]):
                break
            w, offset = (w + 1) % len(wavs), 0
        else:
            raise ValueError(f"no recording is {seconds} s long")
        out.append(wavs[w][offset : offset + n])
        offset += n
    return out


def noisy_copies(
    clean: Sequence[np.ndarray],
    snrs: Sequence[Optional[float]],
    seed: int = 0,
    colours: Sequence[str] = NOISE_COLOURS,
) -> List[NoisyClip]:
    """Each clip mixed at ``snrs[i % len(snrs)]`` (None keeps it clean), colours cycling."""
    rng = np.random.default_rng(seed)
    noises = {colour: sox_noise(colour, 30.0, seed=seed + i) for i, colour in enumerate(colours)}
    clips = []
    for i, wav in enumerate(clean):
        snr = snrs[i % len(snrs)]
        if snr is None:
            clips.append(NoisyClip(np.asarray(wav, dtype=np.float32), None, "clean"))
            continue
        colour = colours[i % len(colours)]
        noise = fit_length(noises[colour], len(wav), offset=int(rng.integers(0, len(noises[colour]))))
        clips.append(NoisyClip(mix_at_snr(wav, noise, snr), float(snr), colour))
    return clips
