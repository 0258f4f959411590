"""Reading audio: finding the files of a source, and the one reader (:func:`load_audio`).

Three source forms are accepted by :func:`find_audio` (and
:meth:`daisy_upstream.audio.corpus.AudioCorpus.from_source`):

* a directory tree of ``.wav`` / ``.flac`` files (searched recursively);
* a list file: one audio path per line, relative paths resolved against the list's own
  directory; blank lines and lines starting with ``#`` are ignored; only the first
  tab-separated field of a line is used (so ``path<TAB>length`` lists work too);
* a LibriSpeech-layout root (detected by ``*.trans.txt`` files below it): the utterances
  listed in the transcripts, ``<dir>/<utt-id>.flac``.

Audio is returned as mono ``float32`` at 16 kHz, shape ``(num_samples,)``. Files at another
sample rate are resampled (:func:`torchaudio.functional.resample`) with a
:class:`ResampleWarning`, or rejected with a :class:`ValueError` when ``resample=False``.
Unreadable, empty or too-short files are skipped and *counted* in :class:`AudioProblems`;
the caller reports the counts (never silent).

Example::

    corpus = AudioCorpus.from_source("LibriSpeech/train-clean-100")
    train, heldout = corpus.split(heldout_fraction=0.01, seed=0)
    for batch in train.batches(max_seconds=100.0):
        wavs = [train.load(i) for i in batch]   # None where a file failed to decode
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:  # torch is imported by load_audio only: finding files needs no torch
    from torch import Tensor

__all__ = [
    "AUDIO_SUFFIXES",
    "SAMPLE_RATE",
    "AudioItem",
    "AudioProblems",
    "NoAudioError",
    "ResampleWarning",
    "find_audio",
    "load_audio",
    "read_scp",
    "read_audio",
]

#: the sample rate every DAISY model takes
SAMPLE_RATE = 16000
#: file suffixes found in a directory tree (case-insensitive)
AUDIO_SUFFIXES = (".wav", ".flac")


class NoAudioError(ValueError):
    """No usable audio in a source (nothing found, or every file was skipped)."""


class ResampleWarning(UserWarning):
    """A file's sample rate is not 16 kHz; it is resampled on load."""


@dataclass(frozen=True)
class AudioItem:
    """One audio file.

    Attributes:
        path: absolute path of the file.
        key: an identifier stable across machines (the path relative to the source root).
        num_samples: length in samples *at 16 kHz* (after any resampling).
        sample_rate: the file's own sample rate.
    """

    path: Path
    key: str
    num_samples: int
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.num_samples / SAMPLE_RATE


@dataclass
class AudioProblems:
    """Files skipped (with why) and files resampled, to be reported by the caller.

    Attributes:
        skipped: ``(path, reason)`` for every file left out (unreadable, empty, too short,
            missing).
        resampled: file sample rate -> number of files resampled from it.
    """

    skipped: List[Tuple[str, str]] = field(default_factory=list)
    resampled: Counter = field(default_factory=Counter)

    def skip(self, path: Union[str, Path], reason: str) -> None:
        """Record a skipped file (once per path, however often it is met)."""
        if str(path) not in self._paths():
            self.skipped.append((str(path), reason))

    def _paths(self) -> set:
        return {known for known, _ in self.skipped}

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def merge(self, other: "AudioProblems") -> None:
        self.skipped.extend(other.skipped)
        self.resampled.update(other.resampled)

    def summary(self) -> str:
        """One or two lines: skip counts by reason, resampling counts by rate."""
        lines = []
        if self.skipped:
            reasons = Counter(reason.split(":", 1)[0] for _, reason in self.skipped)
            detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
            lines.append(f"skipped {len(self.skipped)} audio file(s): {detail} (first: {self.skipped[0][0]})")
        if self.resampled:
            detail = ", ".join(f"{n} from {sr} Hz" for sr, n in sorted(self.resampled.items()))
            lines.append(f"resampled to {SAMPLE_RATE} Hz: {detail}")
        return "\n".join(lines) if lines else "no audio file skipped or resampled"


# -- listings -------------------------------------------------------------------------------
def read_scp(path: Union[str, Path]) -> Dict[str, Path]:
    """A Kaldi-style ``wav.scp`` (``utt /abs/path.wav`` per line) as ``{utt: path}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) == 2:
            out[parts[0]] = Path(parts[1].strip())
    return out


# -- finding files ----------------------------------------------------------------------------
def _is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_SUFFIXES and path.is_file()


def _librispeech_files(root: Path, transcripts: Sequence[Path], problems: AudioProblems) -> List[Path]:
    files = []
    for trans in transcripts:
        with open(trans, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(maxsplit=1)
                if not parts:
                    continue
                path = trans.parent / f"{parts[0]}.flac"
                if path.is_file():
                    files.append(path)
                else:
                    problems.skip(path, f"missing: listed in {trans.name} but not found")
    return files


def _list_file(path: Path, problems: AudioProblems) -> List[Path]:
    files = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            entry = line.rstrip("\n").split("\t", 1)[0].strip()
            if not entry or entry.startswith("#"):
                continue
            audio = Path(entry).expanduser()
            if not audio.is_absolute():
                audio = path.parent / audio
            if audio.is_file():
                files.append(audio)
            else:
                problems.skip(audio, f"missing: line {number} of {path.name}")
    return files


def find_audio(source: Union[str, Path], problems: Optional[AudioProblems] = None) -> Tuple[List[Path], str, Path]:
    """The audio files of ``source`` (sorted, de-duplicated), its kind and its root.

    Args:
        source: a directory tree, a list file or a LibriSpeech-layout root.
        problems: receives listed-but-missing files.

    Returns:
        ``(files, kind, root)`` with ``kind`` one of ``"librispeech"``, ``"directory"``,
        ``"list"``; ``root`` is the directory keys are made relative to.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        NoAudioError: nothing found.
    """
    source = Path(source).expanduser()
    problems = problems if problems is not None else AudioProblems()
    if not source.exists():
        raise FileNotFoundError(f"audio source {source} does not exist")
    if source.is_dir():
        transcripts = sorted(source.rglob("*.trans.txt"))
        if transcripts:
            files, kind = _librispeech_files(source, transcripts, problems), "librispeech"
        else:
            files, kind = [p for p in source.rglob("*") if _is_audio(p)], "directory"
        root = source
    elif source.suffix.lower() in AUDIO_SUFFIXES:
        files, kind, root = [source], "file", source.parent
    else:
        files, kind, root = _list_file(source, problems), "list", source.parent
    files = sorted({p.resolve() for p in files})
    if not files:
        what = {
            "librispeech": "no listed .flac file exists",
            "directory": f"no {'/'.join(AUDIO_SUFFIXES)} file below it",
            "list": "no existing file listed in it",
        }.get(kind, "nothing")
        raise NoAudioError(f"no audio found in {source} ({kind}): {what}")
    return files, kind, root.resolve()


def _key(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


# -- loading ----------------------------------------------------------------------------------
def _decode(path: Union[str, Path]) -> Tuple[np.ndarray, int]:
    """``(samples (T, channels) float32, sample rate)`` of a file; its errors name the file."""
    import soundfile as sf

    if not Path(path).is_file():
        raise FileNotFoundError(f"audio file {path} does not exist")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # noqa: BLE001 - soundfile raises several types
        raise ValueError(f"cannot read audio file {path}: {error}") from error
    if data.size == 0:
        raise ValueError(f"audio file {path} holds no samples")
    return data, int(rate)


def load_audio(path: Union[str, Path], resample: bool = True) -> "Tensor":
    """Read a file as a mono ``float32`` 16 kHz waveform ``(num_samples,)`` (a torch tensor).

    Channels are averaged. Another sample rate is resampled when ``resample`` is true.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be decoded, holds no samples, or (``resample=False``)
            is not at 16 kHz.
    """
    import torch

    data, rate = _decode(path)
    wav = torch.from_numpy(data).mean(dim=1)
    if rate != SAMPLE_RATE:
        if not resample:
            raise ValueError(f"audio file {path} is at {rate} Hz, expected {SAMPLE_RATE} Hz")
        import torchaudio.functional as AF

        wav = AF.resample(wav, rate, SAMPLE_RATE)
    return wav.contiguous()


def read_audio(path: Union[str, Path]) -> np.ndarray:
    """A 16 kHz mono file as numpy ``float32`` ``(num_samples,)``, strictly (no torch needed).

    For audio this project wrote itself (corpora, noise), where another rate or several
    channels mean something went wrong. Decoded like :func:`load_audio` (same samples).

    Raises:
        FileNotFoundError / ValueError: as :func:`load_audio`; also another rate or several channels.
    """
    data, rate = _decode(path)
    if rate != SAMPLE_RATE:
        raise ValueError(f"audio file {path} is at {rate} Hz, expected {SAMPLE_RATE} Hz")
    if data.shape[1] != 1:
        raise ValueError(f"audio file {path} has {data.shape[1]} channels, expected mono")
    return np.ascontiguousarray(data[:, 0])
