"""Which clips are profiled and how they are grouped: the SUPERB challenge's length buckets.

The challenge profiled 32 utterances of LibriSpeech test-clean (2620 utterances): sorted by
length, every 82nd kept starting with the shortest (``awk 'NR % 82 == 1'``), and reported the
sum of MACs over all 32 and over four buckets of 8 by length (short, medium, long, longer).
For any other audio the buckets are the length quartiles of the clips (by rank), which for
the challenge's 32 clips are exactly its buckets of 8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple, Union

import soundfile as sf

from daisy_upstream.audio.io import find_audio

__all__ = [
    "BUCKETS",
    "LIBRISPEECH_TEST_CLEAN_UTTERANCES",
    "challenge_pick",
    "bucket_of",
    "bucket_ranges",
    "bucket_sums",
    "describe",
    "librispeech_challenge_sample",
]

#: the form's bucket names, shortest first
BUCKETS = ("short", "medium", "long", "longer")
#: utterances in LibriSpeech test-clean
LIBRISPEECH_TEST_CLEAN_UTTERANCES = 2620
#: every 82nd utterance (by length) is kept
STEP = 82


def challenge_pick(lengths: Sequence[int]) -> List[int]:
    """Indices of the utterances the challenge keeps, shortest first.

    Args:
        lengths: each utterance's length (samples); ties are broken by position.

    Returns:
        The indices at sorted positions ``0, 82, 164, ...`` (1-based ``NR % 82 == 1``).
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return order[::STEP]


def bucket_of(seconds: Sequence[float]) -> List[str]:
    """Each clip's bucket: the length quartile of its rank (ties by position).

    Clips are ranked by length and cut into four groups as equal as possible (the first
    groups take one more clip when the count is not a multiple of 4).

    Raises:
        ValueError: fewer than 4 clips (every bucket needs at least one).
    """
    n = len(seconds)
    if n < len(BUCKETS):
        raise ValueError(f"the four length buckets need at least 4 clips, got {n}; profile more audio")
    order = sorted(range(n), key=lambda i: (seconds[i], i))
    names = [""] * n
    start = 0
    for b, name in enumerate(BUCKETS):
        size = n // len(BUCKETS) + (1 if b < n % len(BUCKETS) else 0)
        for i in order[start : start + size]:
            names[i] = name
        start += size
    return names


def bucket_sums(macs: Sequence[int], buckets: Sequence[str]) -> Dict[str, int]:
    """``{"all", "short", "medium", "long", "longer"}``: summed MACs (integers, the form's fields)."""
    if len(macs) != len(buckets):
        raise ValueError(f"{len(macs)} MAC counts for {len(buckets)} bucket labels")
    sums = {"all": int(sum(int(m) for m in macs))}
    for name in BUCKETS:
        sums[name] = int(sum(int(m) for m, b in zip(macs, buckets) if b == name))
    return sums


def bucket_ranges(seconds: Sequence[float], buckets: Sequence[str]) -> Dict[str, Tuple[int, float, float]]:
    """Per bucket: (clips, shortest seconds, longest seconds)."""
    out = {}
    for name in BUCKETS:
        mine = [s for s, b in zip(seconds, buckets) if b == name]
        out[name] = (len(mine), min(mine), max(mine)) if mine else (0, 0.0, 0.0)
    return out


def librispeech_challenge_sample(root: Union[str, Path]) -> List[Path]:
    """The challenge's 32 utterances of a LibriSpeech test-clean root, shortest first.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` is not LibriSpeech test-clean (not 2620 listed utterances).
    """
    files, kind, _ = find_audio(root)
    if kind != "librispeech" or len(files) != LIBRISPEECH_TEST_CLEAN_UTTERANCES:
        raise ValueError(
            f"LibriSpeech {root}: expected LibriSpeech test-clean ({LIBRISPEECH_TEST_CLEAN_UTTERANCES} "
            f"utterances listed in *.trans.txt), found {len(files)} ({kind}); give the test-clean folder "
            "itself, or use --audio for other audio (buckets are then length quartiles)"
        )
    lengths = [sf.info(str(p)).frames for p in files]
    return [files[i] for i in challenge_pick(lengths)]


def describe(ranges: Mapping[str, Tuple[int, float, float]]) -> str:
    """One line: ``short 8 clips 1.28-3.44 s, ...``."""
    return ", ".join(f"{name} {n} clips {lo:.2f}-{hi:.2f} s" for name, (n, lo, hi) in ranges.items())
