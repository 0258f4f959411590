"""``parallel_map``: the corpus writers' process pool (ordered results, a progress bar)."""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Callable, List, Sequence

from tqdm import tqdm

__all__ = ["parallel_map"]


def _init_worker() -> None:
    # keep each worker single-threaded; parallelism comes from the pool
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def parallel_map(fn: Callable, jobs: Sequence, workers: int, desc: str, progress: bool = True) -> List:
    """``[fn(j) for j in jobs]`` over ``workers`` processes, in order, with a progress bar."""
    if workers <= 1 or len(jobs) < 4:
        return [fn(j) for j in tqdm(jobs, desc=desc, disable=not progress, dynamic_ncols=True)]
    ctx = mp.get_context("fork")
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        it = pool.imap(fn, jobs, chunksize=max(1, min(16, len(jobs) // (8 * workers))))
        return list(tqdm(it, total=len(jobs), desc=desc, disable=not progress, dynamic_ncols=True))
