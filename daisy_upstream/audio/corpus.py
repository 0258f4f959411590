"""Audio sets for the DAISY tools: deterministic held-out splits, batching by duration,
:class:`AudioCorpus` (lazy loading, problems counted), and the audio of an s3prl task config."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from daisy_upstream.audio.io import (
    AUDIO_SUFFIXES,
    SAMPLE_RATE,
    AudioItem,
    AudioProblems,
    NoAudioError,
    ResampleWarning,
    _key,
    find_audio,
    load_audio,
)


def _resampled_length(frames: int, rate: int) -> int:
    if rate == SAMPLE_RATE:
        return frames
    # torchaudio's resample returns ceil(frames * new / orig) samples
    return -(-frames * SAMPLE_RATE // rate)


# -- splitting and batching -------------------------------------------------------------------
def split_heldout(keys: Sequence[str], fraction: float, seed: int = 0) -> Tuple[List[int], List[int]]:
    """Deterministic train / held-out split by a keyed hash (independent of listing order).

    Args:
        keys: one stable identifier per item.
        fraction: share of items held out, in ``[0, 1)``; at least one item is held out
            when ``fraction > 0`` and there are two or more items.
        seed: changes which items are held out.

    Returns:
        ``(train_indices, heldout_indices)``, each ascending.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in [0, 1), got {fraction}")
    count = len(keys)
    num_held = 0
    if fraction > 0 and count >= 2:
        num_held = min(count - 1, max(1, round(fraction * count)))
    order = sorted(range(count), key=lambda i: hashlib.sha1(f"{seed}:{keys[i]}".encode()).hexdigest())
    held = sorted(order[:num_held])
    held_set = set(held)
    return [i for i in range(count) if i not in held_set], held


def make_batches(lengths: Sequence[int], max_seconds: float, sample_rate: int = SAMPLE_RATE) -> List[List[int]]:
    """Pack items into batches of at most ``max_seconds`` of audio in total.

    Items are sorted by length (ties by index) and packed greedily, so a batch holds
    utterances of similar length and little padding. An item longer than ``max_seconds``
    forms a batch of its own.

    Args:
        lengths: samples per item.
        max_seconds: the most audio (sum over the batch) per batch.

    Returns:
        batches of item indices, shortest batch first.
    """
    if not max_seconds > 0:
        raise ValueError(f"batch size in seconds must be > 0, got {max_seconds}")
    limit = max_seconds * sample_rate
    batches: List[List[int]] = []
    current: List[int] = []
    total = 0
    for index in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        if current and total + lengths[index] > limit:
            batches.append(current)
            current, total = [], 0
        current.append(index)
        total += lengths[index]
    if current:
        batches.append(current)
    return batches


# -- the corpus -------------------------------------------------------------------------------
def _count_dangling_links(folder: Path, problems: AudioProblems) -> None:
    """Record the audio-named links below ``folder`` whose target is gone (the scan skips them)."""
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in AUDIO_SUFFIXES and path.is_symlink() and not path.exists():
            problems.skip(path, f"dangling link: its target {os.readlink(path)} does not exist")


class AudioCorpus:
    """A list of :class:`AudioItem` with loading that skips and counts bad files.

    Args:
        items: the usable files.
        name: a description of where they came from (used in reports and calibrations).
        problems: skip / resample record, shared with subsets made by :meth:`subset`.
        resample: resample other sample rates (else such files were rejected on scan).
    """

    def __init__(
        self,
        items: Sequence[AudioItem],
        name: str,
        problems: Optional[AudioProblems] = None,
        resample: bool = True,
    ) -> None:
        self.items = list(items)
        self.name = name
        self.problems = problems if problems is not None else AudioProblems()
        self.resample = resample
        #: the folder or list file it was found in (:meth:`from_source`), for output checks
        self.source: Optional[Path] = None

    @classmethod
    def from_files(
        cls,
        files: Sequence[Union[str, Path]],
        name: str,
        root: Optional[Path] = None,
        *,
        resample: bool = True,
        min_samples: int = 400,
        problems: Optional[AudioProblems] = None,
    ) -> "AudioCorpus":
        """Scan file headers (``soundfile.info``); skip and count bad files.

        Args:
            files: audio paths.
            name: description for reports.
            root: keys are paths relative to it (else absolute).
            resample: resample other rates with a :class:`ResampleWarning`; when false
                such a file raises.
            min_samples: shorter files (at 16 kHz) are skipped (the model's receptive
                field is 400 samples).

        Raises:
            ValueError: a file at another rate with ``resample=False``.
            NoAudioError: every file was skipped.
        """
        import soundfile as sf

        problems = problems if problems is not None else AudioProblems()
        items: List[AudioItem] = []
        warned_rates: Dict[int, bool] = {}
        for path in files:
            path = Path(path)
            try:
                info = sf.info(str(path))
            except Exception as error:  # noqa: BLE001
                problems.skip(path, f"unreadable: {str(error).splitlines()[0][:200]}")
                continue
            rate, frames = int(info.samplerate), int(info.frames)
            if frames <= 0:
                problems.skip(path, "empty: no samples")
                continue
            if rate != SAMPLE_RATE:
                if not resample:
                    raise ValueError(
                        f"audio file {path} is at {rate} Hz but {SAMPLE_RATE} Hz is required "
                        "(resampling is off; drop the reject flag to resample with a warning)"
                    )
                problems.resampled[rate] += 1
                if rate not in warned_rates:
                    warned_rates[rate] = True
                    warnings.warn(
                        f"{path} (and maybe others) is at {rate} Hz; resampling to {SAMPLE_RATE} Hz",
                        ResampleWarning,
                        stacklevel=2,
                    )
            num_samples = _resampled_length(frames, rate)
            if num_samples < min_samples:
                problems.skip(path, f"too short: {num_samples} samples < {min_samples}")
                continue
            key = _key(path.resolve(), root.resolve()) if root is not None else path.resolve().as_posix()
            items.append(AudioItem(path.resolve(), key, num_samples, rate))
        if not items:
            raise NoAudioError(
                f"no usable audio in {name}: all {len(files)} file(s) were skipped ({problems.summary()})"
            )
        return cls(items, name, problems, resample)

    @classmethod
    def from_source(cls, source: Union[str, Path], *, resample: bool = True, min_samples: int = 400) -> "AudioCorpus":
        """A corpus from a directory tree, list file or LibriSpeech root (see module doc)."""
        problems = AudioProblems()
        files, kind, root = find_audio(source, problems)
        if kind == "directory":
            _count_dangling_links(Path(source).expanduser(), problems)
        corpus = cls.from_files(
            files, f"{source} ({kind})", root, resample=resample, min_samples=min_samples, problems=problems
        )
        corpus.source = Path(source)
        return corpus

    def __len__(self) -> int:
        return len(self.items)

    @property
    def keys(self) -> List[str]:
        return [item.key for item in self.items]

    @property
    def lengths(self) -> List[int]:
        """Samples per item at 16 kHz."""
        return [item.num_samples for item in self.items]

    @property
    def seconds(self) -> float:
        return sum(self.lengths) / SAMPLE_RATE

    def fingerprint(self) -> str:
        """A hash of the keys and lengths (to check a resumed run sees the same data)."""
        digest = hashlib.sha1()
        for item in self.items:
            digest.update(f"{item.key}\t{item.num_samples}\n".encode())
        return digest.hexdigest()

    def subset(self, indices: Sequence[int], name: Optional[str] = None) -> "AudioCorpus":
        """Items at ``indices``; shares this corpus' problem record."""
        part = AudioCorpus([self.items[i] for i in indices], name or self.name, self.problems, self.resample)
        part.source = self.source
        return part

    def split(self, heldout_fraction: float, seed: int = 0) -> Tuple["AudioCorpus", "AudioCorpus"]:
        """``(train, heldout)`` by :func:`split_heldout` on the keys."""
        train, held = split_heldout(self.keys, heldout_fraction, seed)
        return self.subset(train, self.name), self.subset(held, f"held-out {heldout_fraction:g} of {self.name}")

    def batches(self, max_seconds: float) -> List[List[int]]:
        """:func:`make_batches` over this corpus' lengths."""
        return make_batches(self.lengths, max_seconds)

    def load(self, index: int) -> Optional[Tensor]:
        """Waveform ``(num_samples,)`` of item ``index``, or None (counted by path) if it fails to
        decode or holds NaN / inf samples (a float WAV can): one bad file never aborts a run."""
        item = self.items[index]
        try:
            wav = load_audio(item.path, resample=self.resample)
        except (ValueError, OSError) as error:  # undecodable, or gone since the scan
            self.problems.skip(item.path, f"unreadable: {str(error)[:200]}")
            return None
        if not bool(torch.isfinite(wav).all()):
            self.problems.skip(item.path, "non-finite: NaN or inf samples")
            return None
        return wav

    def load_batch(self, indices: Sequence[int]) -> Tuple[List[Tensor], List[int]]:
        """Waveforms of ``indices`` that decode, and the indices they belong to."""
        wavs, kept = [], []
        for index in indices:
            wav = self.load(index)
            if wav is not None:
                wavs.append(wav)
                kept.append(index)
        return wavs, kept

    def iter_batches(self, max_seconds: float) -> Iterator[Tuple[List[Tensor], List[int]]]:
        """Loaded batches (see :meth:`load_batch`), empty ones left out."""
        for batch in self.batches(max_seconds):
            wavs, kept = self.load_batch(batch)
            if wavs:
                yield wavs, kept


# -- s3prl task configs -----------------------------------------------------------------------
#: s3prl downstream tasks whose data paths :func:`files_from_s3prl_config` can read
S3PRL_TASKS = ("asr", "voxceleb1")
_VOXCELEB_SPLITS = {"train": "1", "dev": "2", "test": "3"}


def files_from_s3prl_config(
    config: Union[str, Path], task: str, split: str, problems: Optional[AudioProblems] = None
) -> Tuple[List[Path], str, Path]:
    """The audio files of one split of an s3prl downstream task config.

    * ``asr``: ``downstream_expert.datarc[split]`` is a list of LibriSpeech subsets below
      ``datarc.libri_root`` (splits ``train``, ``dev-clean``, ``test-clean``, ...); their
      utterances are read from the transcripts as for a LibriSpeech root.
    * ``voxceleb1``: ``datarc.meta_data`` lines ``<1|2|3> idNNNNN/<video>/<n>.wav`` (1 train,
      2 dev, 3 test) resolved as s3prl does, ``<datarc.file_path>/*/wav/<relative path>``.

    Returns:
        ``(files, name, root)`` as :func:`find_audio`.

    Raises:
        ValueError: unknown task or split, or a config without the data keys.
        NoAudioError: nothing found.
    """
    import yaml

    config = Path(config)
    problems = problems if problems is not None else AudioProblems()
    if task not in S3PRL_TASKS:
        raise ValueError(f"reading data paths from an s3prl config is supported for {S3PRL_TASKS}, not {task!r}")
    with open(config) as f:
        values = yaml.safe_load(f) or {}
    datarc = (values.get("downstream_expert") or {}).get("datarc")
    if not isinstance(datarc, dict):
        raise ValueError(f"{config} has no downstream_expert.datarc section (is it an s3prl {task} config?)")
    name = f"{config} {task}/{split}"
    if task == "asr":
        if split not in datarc or not isinstance(datarc[split], list):
            splits = [k for k, v in datarc.items() if isinstance(v, list)]
            raise ValueError(f"{config}: no split {split!r} in downstream_expert.datarc; splits: {splits}")
        root = Path(str(datarc.get("libri_root", ""))).expanduser()
        files: List[Path] = []
        for subset in datarc[split]:
            subset_dir = root / str(subset)
            if not subset_dir.is_dir():
                raise NoAudioError(f"{config}: LibriSpeech subset {subset_dir} does not exist (datarc.libri_root)")
            found, _, _ = find_audio(subset_dir, problems)
            files.extend(found)
        return sorted(set(files)), name, root.resolve()
    if split not in _VOXCELEB_SPLITS:
        raise ValueError(f"voxceleb1 splits are {list(_VOXCELEB_SPLITS)}, got {split!r}")
    for key in ("file_path", "meta_data"):
        if key not in datarc:
            raise ValueError(f"{config}: downstream_expert.datarc.{key} is missing")
    root = Path(str(datarc["file_path"])).expanduser()
    meta = Path(str(datarc["meta_data"])).expanduser()
    if not meta.is_file():
        raise FileNotFoundError(f"{config}: meta_data file {meta} does not exist")
    files = []
    with open(meta) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2 or parts[0] != _VOXCELEB_SPLITS[split]:
                continue
            matches = sorted(root.glob(f"*/wav/{parts[1]}"))
            if matches:
                files.append(matches[0].resolve())
            else:
                problems.skip(root / "*" / "wav" / parts[1], f"missing: listed in {meta.name}")
    if not files:
        raise NoAudioError(f"{config}: no audio of split {split!r} found below {root}/*/wav/")
    return files, name, root.resolve()
