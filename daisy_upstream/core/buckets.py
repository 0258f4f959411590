"""The few shapes of the static-shape early-exit loop: frame buckets, row buckets, regrouping.

A CUDA graph (and a compiled kernel, and the allocator's blocks) serves one shape. The loop of
:mod:`daisy_upstream.core.static_loop` therefore pads a batch's frames up to a *length bucket*
and its rows up to a *row bucket*, and rows that exit stay in place, masked, until the rows
still running fit a smaller row bucket (or a shorter length bucket); then the batch is
regrouped into that smaller shape.

* :data:`LENGTH_BUCKETS`: four per octave from 32 frames (0.64 s) to 4096 (82 s), rounded up to
  multiples of 16 (27 buckets): from 128 frames (2.6 s) on, padding adds at most 25% frames;
  below it up to half, where a GPU forward is bound by launches, not arithmetic. Clips of
  1-6 s (the bench set) meet 11 of them. Longer batches run the plain loop.
* :data:`ROW_BUCKETS`: powers of two up to 64 rows: at most half the rows of a group are padding
  (exited or empty), and a batch of 32 shrinks through at most 6 shapes.

Shapes: ``R`` rows of a group, ``T_b`` its frames.
"""

from __future__ import annotations

import bisect
from typing import List, Optional, Sequence, Tuple

__all__ = ["LENGTH_BUCKETS", "ROW_BUCKETS", "length_bucket", "regroup", "row_bucket"]


def _length_buckets(low: int = 32, high: int = 4096, per_octave: int = 4, step: int = 16) -> Tuple[int, ...]:
    values, octave = set(), low
    while octave <= high:
        for i in range(per_octave):
            value = -(-round(octave * 2 ** (i / per_octave)) // step) * step
            if value <= high:
                values.add(value)
        octave *= 2
    return tuple(sorted(values))


#: frame counts a group is padded to (50 Hz frames)
LENGTH_BUCKETS: Tuple[int, ...] = _length_buckets()
#: row counts a group is padded to
ROW_BUCKETS: Tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)


def _bucket(value: int, buckets: Sequence[int]) -> Optional[int]:
    if value < 1:
        raise ValueError(f"a bucket needs a count >= 1, got {value}")
    i = bisect.bisect_left(buckets, value)
    return buckets[i] if i < len(buckets) else None


def length_bucket(frames: int) -> Optional[int]:
    """The smallest of :data:`LENGTH_BUCKETS` ``>= frames``; None past the largest."""
    return _bucket(frames, LENGTH_BUCKETS)


def row_bucket(rows: int) -> Optional[int]:
    """The smallest of :data:`ROW_BUCKETS` ``>= rows``; None past the largest."""
    return _bucket(rows, ROW_BUCKETS)


def regroup(alive: Sequence[bool], counts: Sequence[int], rows: int, frames: int) -> Optional[Tuple[List[int], int]]:
    """Whether a group of ``rows`` x ``frames`` shrinks, and to which rows, after a check.

    Args:
        alive: per row of the group, whether it still runs.
        counts: per row, its valid frames (a padding row: 1).
        rows, frames: the group's shape now (``R``, ``T_b``).

    Returns:
        None when the running rows need the same shape (nothing moves, they stay masked), else
        ``(keep, frames')``: the rows of the group that form the new group (the running ones
        first, in order, then rows that exited as padding up to the row bucket) and its
        length bucket. No running row: ``([], 0)``.
    """
    running = [i for i, a in enumerate(alive) if a]
    if not running:
        return [], 0
    new_rows = row_bucket(len(running))
    new_frames = length_bucket(max(counts[i] for i in running))
    if new_rows is None or new_frames is None or (new_rows, new_frames) == (rows, frames):
        return None
    if new_rows > rows or new_frames > frames:
        raise ValueError(f"a group of {rows} x {frames} cannot grow to {new_rows} x {new_frames}")
    spare = [i for i, a in enumerate(alive) if not a]
    return running + spare[: new_rows - len(running)], new_frames
