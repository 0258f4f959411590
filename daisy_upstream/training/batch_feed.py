"""Stage 1's training batches: a ``torch.utils.data.DataLoader`` over the epoch orders.

:class:`EpochSampler` yields ``(epoch, position, batch index)`` from where training stands,
epoch after epoch (each epoch's order is :func:`~daisy_upstream.training.stage1_state.epoch_order`),
so the batch order lives in the sampler and a resumed run starts it at the saved
``(epoch, position)``. :class:`Stage1Batches` decodes a batch's files, mixes noise (seeded by
``(seed, epoch, position, rank)``, so a batch's content depends on nothing else) and pads them
into one ``(B, T)`` float32 tensor: with ``workers > 0`` this runs in worker processes,
``prefetch`` batches ahead each, into pinned memory when the device is CUDA, and the loop makes
one host-to-device copy per batch.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.audio.noise import NoiseAugment

from .stage1_state import epoch_order

__all__ = ["EpochSampler", "Stage1Batches", "stage1_loader", "unpad"]

Key = Tuple[int, int, int]  # (epoch, position in this rank's epoch order, batch index)


class EpochSampler(Sampler):
    """This rank's batches from ``(epoch, position)`` on, through every later epoch (endless)."""

    def __init__(self, num_batches: int, seed: int, rank: int, world: int, epoch: int = 0, position: int = 0) -> None:
        self.num_batches, self.seed, self.rank, self.world = num_batches, seed, rank, world
        self.epoch, self.position = epoch, position

    def __iter__(self) -> Iterator[Key]:
        epoch, position = self.epoch, self.position
        while True:
            order = epoch_order(self.num_batches, self.seed, epoch, self.rank, self.world)
            for pos in range(position, len(order)):
                yield epoch, pos, order[pos]
            epoch, position = epoch + 1, 0


class Stage1Batches(Dataset):
    """``dataset[(epoch, position, index)]``: batch ``index`` decoded, noised and padded.

    Returns ``{"epoch", "position", "audio" (B, T) float32, "lengths" (B,) long, "skipped",
    "resampled"}``; the last two are what this call added to the corpus' problem record when
    it ran in a worker process (whose copy of the corpus the main process does not see).
    """

    def __init__(self, corpus: AudioCorpus, batches: List[List[int]], seed: int, rank: int,
                 augment: NoiseAugment) -> None:
        self.corpus, self.batches, self.seed, self.rank, self.augment = corpus, batches, seed, rank, augment

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, key: Key) -> Dict[str, Any]:
        epoch, position, index = key
        problems = self.corpus.problems
        skipped, resampled = len(problems.skipped), Counter(problems.resampled)
        wavs, _ = self.corpus.load_batch(self.batches[index])
        if wavs and self.augment.prob:
            rng = np.random.default_rng([self.seed, epoch, position, self.rank])
            wavs = [torch.from_numpy(self.augment(w.numpy(), rng)) for w in wavs]
        lengths = torch.tensor([len(w) for w in wavs], dtype=torch.long)
        audio = torch.zeros(len(wavs), int(lengths.max()) if wavs else 0)
        for row, wav in enumerate(wavs):
            audio[row, : len(wav)] = wav
        in_worker = get_worker_info() is not None
        return {"epoch": epoch, "position": position, "audio": audio, "lengths": lengths,
                "skipped": problems.skipped[skipped:] if in_worker else [],
                "resampled": dict(problems.resampled - resampled) if in_worker else {}}


def _as_is(item: Any) -> Any:
    return item


def stage1_loader(dataset: Stage1Batches, sampler: EpochSampler, workers: int, prefetch: int,
                  pin_memory: bool) -> DataLoader:
    """The DataLoader of stage 1: one sampler key per item, no collation (items are batches)."""
    return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=workers, collate_fn=_as_is,
                      pin_memory=pin_memory, prefetch_factor=prefetch if workers else None)


def unpad(item: Dict[str, Any], corpus: AudioCorpus, device: torch.device) -> List[torch.Tensor]:
    """The batch's waveforms on ``device`` (one copy of the padded tensor, then views), after
    recording a worker's decode problems in ``corpus.problems``."""
    for path, reason in item["skipped"]:
        corpus.problems.skip(path, reason)
    corpus.problems.resampled.update(item["resampled"])
    audio = item["audio"].to(device, non_blocking=True)
    return [audio[row, :n] for row, n in enumerate(item["lengths"].tolist())]
