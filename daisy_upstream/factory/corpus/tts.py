"""Text-to-speech back ends (espeak-ng and flite) producing 16 kHz mono float32 audio.

A :class:`Voice` is one synthetic speaker: an engine, a voice name, and the pitch and rate
settings that make it distinct. :func:`synthesize` turns a sentence into a waveform; the
result depends only on the voice and the text (both engines are deterministic).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
from typing import List

import numpy as np
from scipy.signal import resample_poly

from daisy_upstream.audio.io import SAMPLE_RATE

__all__ = ["Voice", "synthesize", "check_engines", "espeak_variants", "ESPEAK_ACCENTS", "FLITE_VOICES"]

#: English accents of espeak-ng used as speaker "families".
ESPEAK_ACCENTS = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
#: flite's 16 kHz voices.
FLITE_VOICES = ("kal16", "awb", "rms", "slt")
# variants left out: unvoiced or deliberately distorted voices
_EXCLUDED_VARIANTS = {
    "whisper",
    "whisperf",
    "Demonic",
    "croak",
    "UniRobot",
    "anikaRobot",
    "robosoft",
    "robosoft2",
    "robosoft3",
    "robosoft4",
    "robosoft5",
    "robosoft6",
    "robosoft7",
    "robosoft8",
    "Tweaky",
    "Mr",
}


@dataclasses.dataclass(frozen=True)
class Voice:
    """One synthetic speaker.

    Attributes:
        engine: ``"espeak"`` or ``"flite"``.
        name: espeak ``accent+variant`` (e.g. ``"en-us+m3"``) or a flite voice (``"slt"``).
        pitch: espeak ``-p`` (0-99); for flite, the F0 target mean in Hz.
        rate: espeak ``-s`` in words per minute; for flite, a duration stretch x 100.
    """

    engine: str
    name: str
    pitch: int
    rate: int

    @property
    def key(self) -> str:
        """A short string identifying this voice (used in manifests)."""
        return f"{self.engine}:{self.name}:p{self.pitch}:r{self.rate}"


def check_engines(flite: bool = True) -> None:
    """Raise ``FileNotFoundError`` with an install hint when a needed TTS program is missing."""
    if shutil.which("espeak-ng") is None:
        raise FileNotFoundError(
            "espeak-ng is not installed; run `apt-get install espeak-ng` (Debian/Ubuntu) and try again"
        )
    if flite and shutil.which("flite") is None:
        raise FileNotFoundError(
            "flite is not installed; run `apt-get install flite`, or pass --no-flite to use espeak-ng voices only"
        )


def espeak_variants() -> List[str]:
    """The espeak-ng voice variants installed here (sorted), minus distorted ones."""
    out = subprocess.run(
        ["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[1:]
    names = set()
    for line in out:
        parts = line.split()
        if len(parts) >= 5:
            # columns: Pty Language Age/Gender VoiceName File ...; file is "!v/<name>"
            fname = parts[4]
            name = fname.split("/", 1)[1] if "/" in fname else fname
            if name not in _EXCLUDED_VARIANTS:
                names.add(name)
    if not names:
        raise RuntimeError("espeak-ng lists no voice variants; is espeak-ng-data installed?")
    return sorted(names)


def _parse_wav_bytes(data: bytes) -> tuple:
    """Decode a 16-bit PCM WAV from bytes whose size fields may be bogus (streamed)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError("TTS engine did not return a WAV stream")
    pos, rate = 12, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if cid == b"fmt ":
            rate = int.from_bytes(data[pos + 12 : pos + 16], "little")
            bits = int.from_bytes(data[pos + 22 : pos + 24], "little")
            if bits != 16:
                raise RuntimeError(f"expected 16-bit PCM from the TTS engine, got {bits}-bit")
        elif cid == b"data":
            pcm = data[pos + 8 :]
            pcm = pcm[: len(pcm) // 2 * 2]
            return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0, rate
        pos += 8 + size + (size & 1)
    raise RuntimeError("no data chunk in the TTS engine's WAV output")


def _espeak(voice: Voice, text: str) -> np.ndarray:
    cmd = ["espeak-ng", "-v", voice.name, "-p", str(voice.pitch), "-s", str(voice.rate), "--stdout", text]
    res = subprocess.run(cmd, capture_output=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"espeak-ng failed ({' '.join(cmd[:7])}): {res.stderr.decode()[:200]}")
    wav, rate = _parse_wav_bytes(res.stdout)
    if rate != SAMPLE_RATE:
        g = np.gcd(rate, SAMPLE_RATE)
        wav = resample_poly(wav, SAMPLE_RATE // g, rate // g).astype(np.float32)
    return wav


def _flite(voice: Voice, text: str) -> np.ndarray:
    fd, path = tempfile.mkstemp(suffix=".wav")
    os.close(fd)
    try:
        cmd = [
            "flite",
            "-voice",
            voice.name,
            "--setf",
            f"duration_stretch={voice.rate / 100:.2f}",
            "--setf",
            f"int_f0_target_mean={voice.pitch}",
            "-t",
            text,
            "-o",
            path,
        ]
        res = subprocess.run(cmd, capture_output=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"flite failed: {res.stderr.decode()[:200]}")
        with open(path, "rb") as fh:
            wav, rate = _parse_wav_bytes(fh.read())
    finally:
        os.unlink(path)
    if rate != SAMPLE_RATE:
        g = np.gcd(rate, SAMPLE_RATE)
        wav = resample_poly(wav, SAMPLE_RATE // g, rate // g).astype(np.float32)
    return wav


def synthesize(voice: Voice, text: str) -> np.ndarray:
    """Speak ``text`` with ``voice``; returns float32 samples in [-1, 1] at 16 kHz.

    Leading and trailing silence longer than 0.15 s is trimmed to 0.15 s.
    """
    if not text.strip():
        raise ValueError("cannot synthesize empty text")
    wav = _espeak(voice, text) if voice.engine == "espeak" else _flite(voice, text.lower())
    if voice.engine not in ("espeak", "flite"):
        raise ValueError(f"unknown TTS engine {voice.engine!r}")
    return _trim(wav)


def _trim(wav: np.ndarray, keep: float = 0.15, thresh: float = 1e-3) -> np.ndarray:
    idx = np.flatnonzero(np.abs(wav) > thresh)
    if idx.size == 0:
        return wav
    pad = int(keep * SAMPLE_RATE)
    return np.ascontiguousarray(wav[max(0, idx[0] - pad) : idx[-1] + 1 + pad])
