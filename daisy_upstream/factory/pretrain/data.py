"""Pretraining audio held in memory as one frame-aligned stream per split.

Every utterance is zero-padded to a whole number of 320-sample frames and the utterances
are concatenated. A crop that starts at sample ``320*s`` and spans ``320*F + 80`` samples
gives exactly ``F`` CNN frames, whose labels are ``labels[s:s+F]``: frame-level targets of
every utterance are computed once, with the same alignment as the CNN.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Sequence

import numpy as np

from daisy_upstream.audio.io import read_audio

from .model import FRAME_SAMPLES, RECEPTIVE_FIELD

__all__ = ["AudioStream", "load_stream", "list_split_files", "crop_samples"]


@dataclasses.dataclass
class AudioStream:
    """Concatenated, frame-aligned audio of one split.

    Attributes:
        audio: int16 samples, length ``FRAME_SAMPLES * sum(frames)``.
        frames: frames per utterance (in file order).
        files: the source files.
    """

    audio: np.ndarray
    frames: np.ndarray
    files: List[str]

    @property
    def num_frames(self) -> int:
        return int(self.frames.sum())

    def utterance(self, i: int) -> np.ndarray:
        """Float32 samples of utterance ``i`` (frame-padded) plus the 80-sample tail."""
        start = int(self.frames[:i].sum()) * FRAME_SAMPLES
        n = int(self.frames[i]) * FRAME_SAMPLES
        wav = self.audio[start : start + n].astype(np.float32) / 32768.0
        return np.concatenate([wav, np.zeros(RECEPTIVE_FIELD - FRAME_SAMPLES, np.float32)])

    def fingerprint(self) -> str:
        """A short string that changes when the audio set changes."""
        return f"{len(self.files)}:{self.num_frames}:{int(np.abs(self.audio[::997]).sum())}"


def list_split_files(corpus: Path, split: str) -> List[Path]:
    """Audio files of ``split`` (``train``/``valid``) of a corpus, sorted.

    A ``daisy make-corpus`` corpus (with ``corpus.json``) uses its ASR tree: train ->
    ``train-clean-100``, valid -> ``dev-clean``. Any other folder must hold ``train/`` and
    ``valid/`` subfolders with ``.flac`` or ``.wav`` files.
    """
    corpus = Path(corpus)
    if (corpus / "corpus.json").exists():
        sub = {"train": "train-clean-100", "valid": "dev-clean"}[split]
        root = corpus / "asr" / "LibriSpeech" / sub
    else:
        root = corpus / split
    files = sorted(list(root.rglob("*.flac")) + list(root.rglob("*.wav")))
    if not files:
        raise FileNotFoundError(f"no .flac/.wav files for split {split!r} under {root}")
    return files


def load_stream(files: Sequence[Path]) -> AudioStream:
    """Read ``files`` (16 kHz mono, 16-bit) into one frame-aligned :class:`AudioStream`."""
    chunks, frames = [], []
    for f in files:
        # read_audio's float32 samples of a 16-bit file are int/32768 exactly: back to int16 losslessly
        wav = np.round(read_audio(f) * 32768.0).clip(-32768, 32767).astype(np.int16)
        n = -(-len(wav) // FRAME_SAMPLES)
        chunks.append(np.pad(wav, (0, n * FRAME_SAMPLES - len(wav))))
        frames.append(n)
    return AudioStream(np.concatenate(chunks), np.asarray(frames, dtype=np.int64), [str(f) for f in files])


def crop_samples(stream: AudioStream, starts: np.ndarray, num_frames: int) -> np.ndarray:
    """Float32 crops ``(B, 320*num_frames + 80)`` starting at frames ``starts``."""
    length = num_frames * FRAME_SAMPLES + RECEPTIVE_FIELD - FRAME_SAMPLES
    out = np.zeros((len(starts), length), dtype=np.float32)
    for b, s in enumerate(starts):
        seg = stream.audio[int(s) * FRAME_SAMPLES : int(s) * FRAME_SAMPLES + length]
        out[b, : len(seg)] = seg.astype(np.float32) / 32768.0
    return out
