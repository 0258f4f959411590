"""Noise sources and exact-SNR mixing.

Coloured noise comes from sox (``synth ... whitenoise|pinknoise|brownnoise``); babble is
a sum of several sentences spoken by voices held out from every speaker set. Mixing is done
in numpy, so the signal-to-noise ratio of the result is exactly the requested one (up to
float rounding): ``10*log10(sum(clean**2) / sum(scaled_noise**2)) == snr_db``.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Optional, Sequence

import numpy as np

from daisy_upstream.audio.io import SAMPLE_RATE

__all__ = ["mix_at_snr", "measure_snr", "sox_noise", "babble", "fit_length", "NOISE_COLOURS"]

NOISE_COLOURS = ("white", "pink", "brown")


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.asarray(x, dtype=np.float64) ** 2))


def measure_snr(clean: np.ndarray, noise: np.ndarray) -> float:
    """SNR in dB of ``clean`` against the ``noise`` actually added (same length).

    Args:
        clean: the speech signal, shape ``(T,)``.
        noise: the noise component of the mixture (``mixture - clean``), shape ``(T,)``.

    Returns:
        ``10 * log10(sum(clean**2) / sum(noise**2))``.
    """
    if clean.shape != noise.shape:
        raise ValueError(f"clean and noise shapes differ: {clean.shape} vs {noise.shape}")
    pn = _power(noise)
    if pn == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(_power(clean) / pn))


def fit_length(noise: np.ndarray, length: int, offset: int = 0) -> np.ndarray:
    """Cut ``length`` samples from ``noise`` starting at ``offset``, looping it if short."""
    if noise.ndim != 1 or noise.size == 0:
        raise ValueError("noise must be a non-empty 1-D array")
    idx = (np.arange(length) + offset) % noise.size
    return noise[idx]


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float, peak: Optional[float] = None) -> np.ndarray:
    """Add ``noise`` to ``clean`` scaled so that the mixture's SNR is exactly ``snr_db``.

    Args:
        clean: speech, float array of shape ``(T,)``.
        noise: noise, float array of shape ``(T,)`` (see :func:`fit_length`).
        snr_db: target signal-to-noise ratio in dB.
        peak: if given and the mixture's absolute peak exceeds it, the mixture is scaled
            down (clean and noise together, which leaves the SNR unchanged) so that it does
            not clip when stored as PCM; the caller must then scale its clean reference by
            the same gain (``peak / max|mix|``). ``None`` (default): no scaling.

    Returns:
        The float32 mixture, shape ``(T,)``. ``measure_snr(clean*g, mix - clean*g)`` equals
        ``snr_db``, where ``g`` is the anti-clipping gain (1 unless ``peak`` applied).
    """
    clean = np.asarray(clean, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    if clean.shape != noise.shape or clean.ndim != 1:
        raise ValueError(f"clean and noise must be 1-D of equal length, got {clean.shape} and {noise.shape}")
    if not np.isfinite(snr_db):
        raise ValueError(f"snr_db must be finite, got {snr_db}")
    pc, pn = _power(clean), _power(noise)
    if pc == 0.0 or pn == 0.0:
        raise ValueError("clean and noise must both have non-zero energy")
    scale = np.sqrt(pc / (pn * 10.0 ** (snr_db / 10.0)))
    mix = clean + scale * noise
    top = float(np.max(np.abs(mix)))
    if peak is not None and top > peak:
        mix *= peak / top
    return mix.astype(np.float32)


def sox_noise(colour: str, seconds: float, seed: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Generate ``seconds`` of white/pink/brown noise with sox (deterministic for ``seed``).

    Returns a zero-mean float32 array with unit RMS.
    """
    if colour not in NOISE_COLOURS:
        raise ValueError(f"noise colour must be one of {NOISE_COLOURS}, got {colour!r}")
    if shutil.which("sox") is None:
        raise FileNotFoundError("sox is not installed; run `apt-get install sox`")
    cmd = [
        "sox",
        "-R",
        "-n",
        "-r",
        str(sample_rate),
        "-c",
        "1",
        "-b",
        "16",
        "-t",
        "raw",
        "-e",
        "signed-integer",
        "-",
        "synth",
        f"{seconds:.3f}",
        f"{colour}noise",
        "vol",
        "0.5",
    ]
    # sox -R seeds its RNG with a fixed value; vary the noise by the seed via a circular offset
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    x = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    x = np.roll(x, int(np.random.default_rng(seed).integers(0, max(1, x.size))))
    x -= x.mean()
    rms = np.sqrt(np.mean(x**2))
    if rms == 0:
        raise RuntimeError(f"sox produced silent {colour} noise")
    return (x / rms).astype(np.float32)


def babble(sources: Sequence[np.ndarray], length: int, seed: int) -> np.ndarray:
    """Sum of the given speech signals, each looped to ``length`` at a random offset.

    Each source is normalised to unit RMS before summing; the result has unit RMS.
    """
    if len(sources) == 0:
        raise ValueError("babble needs at least one speech source")
    rng = np.random.default_rng(seed)
    out = np.zeros(length, dtype=np.float64)
    for s in sources:
        s = np.asarray(s, dtype=np.float64)
        s = s / (np.sqrt(np.mean(s**2)) + 1e-12)
        out += fit_length(s, length, int(rng.integers(0, s.size)))
    out /= np.sqrt(np.mean(out**2)) + 1e-12
    return out.astype(np.float32)


class NoiseAugment:
    """Mixes sox noise (white, pink, brown; a bank made once) into a share of utterances.

    Args:
        prob: chance that an utterance gets noise.
        snr_db: the SNR is drawn uniformly from this ``(low, high)`` range.
        seconds: length of each colour's noise bank (utterances take random stretches).
        seed: seed of the noise bank.
    """

    def __init__(
        self, prob: float, snr_db: Sequence[float] = (0.0, 20.0), seconds: float = 60.0, seed: int = 0
    ) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"noise probability must be in [0, 1], got {prob}")
        low, high = (float(v) for v in snr_db)
        if not low <= high:
            raise ValueError(f"noise SNR range must be (low, high) with low <= high, got {snr_db}")
        self.prob, self.snr_db = float(prob), (low, high)
        self.bank = [sox_noise(c, seconds, seed=seed + i) for i, c in enumerate(NOISE_COLOURS)] if prob else []

    def __call__(self, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``wav`` unchanged, or mixed with a random stretch of a random colour at a random SNR."""
        if not self.prob or rng.random() >= self.prob or not np.any(wav):
            return wav  # (silent input has no SNR)
        bank = self.bank[int(rng.integers(len(self.bank)))]
        noise = fit_length(bank, len(wav), offset=int(rng.integers(0, bank.size)))
        return mix_at_snr(wav, noise, float(rng.uniform(*self.snr_db))).astype(np.asarray(wav).dtype)
