"""Stage 1's training batches in epoch order, the next one loaded in a background thread."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Dict, List, Tuple

from torch import Tensor

from daisy_upstream.audio.corpus import AudioCorpus

from .stage1_state import epoch_order

__all__ = ["BatchFeed"]


class BatchFeed:
    """This rank's training batches in epoch order; the next one loads in a background thread.

    Prefetching changes neither the order nor the content of the batches.
    """

    def __init__(self, corpus: AudioCorpus, batches: List[List[int]], seed: int, rank: int, world: int,
                 prefetch: bool) -> None:
        self.corpus, self.batches, self.seed, self.rank, self.world = corpus, batches, seed, rank, world
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="daisy-audio") if prefetch else None
        self.pending: Dict[Tuple[int, int], Future] = {}

    def order(self, epoch: int) -> List[int]:
        return epoch_order(len(self.batches), self.seed, epoch, self.rank, self.world)

    def load(self, epoch: int, position: int, order: List[int]) -> List[Tensor]:
        """The waveforms of batch ``order[position]`` of ``epoch`` (failed files left out)."""
        future = self.pending.pop((epoch, position), None)
        self.pending.clear()
        wavs, _ = future.result() if future is not None else self.corpus.load_batch(self.batches[order[position]])
        if self.pool is not None:  # the next batch of this call, possibly in the next epoch
            nxt_epoch, nxt_pos = (epoch, position + 1) if position + 1 < len(order) else (epoch + 1, 0)
            nxt_order = order if nxt_epoch == epoch else self.order(nxt_epoch)
            self.pending[(nxt_epoch, nxt_pos)] = self.pool.submit(
                self.corpus.load_batch, self.batches[nxt_order[nxt_pos]])
        return wavs

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
