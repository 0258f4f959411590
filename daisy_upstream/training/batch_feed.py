"""Batches of a corpus through a ``torch.utils.data.DataLoader``: stage 1 and the calibration.

:class:`PaddedBatches` decodes one length-packed batch of an
:class:`~daisy_upstream.audio.corpus.AudioCorpus` (:meth:`~AudioCorpus.batches`), optionally
mixes noise (seeded by ``(seed, epoch, position, rank)``, so a batch's content depends on
nothing else) and pads it into one ``(B, T)`` float32 tensor; :func:`batch_loader` runs that in
``workers`` processes, ``prefetch`` batches ahead each, into pinned memory when the device is
CUDA, and :func:`unpad` makes one host-to-device copy per batch. A worker's decode failures
reach the caller's ``corpus.problems`` through :func:`unpad`.

What is read, and in which order, is the sampler's: stage 1's :class:`EpochSampler` yields
``(epoch, position, batch index)`` from where training stands, epoch after epoch (each
epoch's order is :func:`~daisy_upstream.training.stage1_state.epoch_order`), so the batch
order lives in the sampler and a resumed run starts it at the saved ``(epoch, position)``;
:func:`shard_keys` is one pass over this rank's share (batches ``rank, rank + world, ...``),
the calibration's and the held-out evaluation's order.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.audio.noise import NoiseAugment

from .stage1_state import epoch_order

__all__ = ["EpochSampler", "PaddedBatches", "batch_loader", "shard_keys", "unpad"]

Key = Tuple[int, int, int]  # (epoch, position in this rank's order, batch index)


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


def shard_keys(num_batches: int, rank: int = 0, world: int = 1) -> List[Key]:
    """One pass over batches ``rank, rank + world, ...`` in index order, as loader keys."""
    return [(0, position, index) for position, index in enumerate(range(rank, num_batches, world))]


class PaddedBatches(Dataset):
    """``dataset[(epoch, position, index)]``: batch ``index`` decoded, noised (if ``augment``
    mixes any) and padded.

    Returns ``{"epoch", "position", "index", "kept" (the corpus indices that decoded, in batch
    order), "audio" (B, T) float32, "lengths" (B,) long, "skipped", "resampled"}``; the last two
    are what this call added to the corpus' problem record when it ran in a worker process
    (whose copy of the corpus the main process does not see).
    """

    def __init__(
        self,
        corpus: AudioCorpus,
        batches: List[List[int]],
        seed: int = 0,
        rank: int = 0,
        augment: Optional[NoiseAugment] = None,
    ) -> None:
        self.corpus, self.batches, self.seed, self.rank, self.augment = corpus, batches, seed, rank, augment

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, key: Key) -> Dict[str, Any]:
        epoch, position, index = key
        problems = self.corpus.problems
        skipped, resampled = len(problems.skipped), Counter(problems.resampled)
        wavs, kept = self.corpus.load_batch(self.batches[index])
        if wavs and self.augment is not None and self.augment.prob:
            rng = np.random.default_rng([self.seed, epoch, position, self.rank])
            wavs = [torch.from_numpy(self.augment(w.numpy(), rng)) for w in wavs]
        lengths = torch.tensor([len(w) for w in wavs], dtype=torch.long)
        audio = torch.zeros(len(wavs), int(lengths.max()) if wavs else 0)
        for row, wav in enumerate(wavs):
            audio[row, : len(wav)] = wav
        in_worker = get_worker_info() is not None
        return {
            "epoch": epoch,
            "position": position,
            "index": index,
            "kept": kept,
            "audio": audio,
            "lengths": lengths,
            "skipped": problems.skipped[skipped:] if in_worker else [],
            "resampled": dict(problems.resampled - resampled) if in_worker else {},
        }


def _as_is(item: Any) -> Any:
    return item


def batch_loader(
    dataset: PaddedBatches, sampler: Iterable[Key], workers: int = 0, prefetch: int = 2, pin_memory: bool = False
) -> DataLoader:
    """The DataLoader over ``dataset``: one sampler key per item, no collation (items are batches)."""
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=_as_is,
        pin_memory=pin_memory,
        prefetch_factor=prefetch if workers else None,
    )


def unpad(item: Dict[str, Any], corpus: AudioCorpus, device: torch.device) -> List[torch.Tensor]:
    """The batch's waveforms on ``device`` (one copy of the padded tensor, then views), after
    recording a worker's decode problems in ``corpus.problems``."""
    for path, reason in item["skipped"]:
        corpus.problems.skip(path, reason)
    corpus.problems.resampled.update(item["resampled"])
    audio = item["audio"].to(device, non_blocking=True)
    return [audio[row, :n] for row, n in enumerate(item["lengths"].tolist())]
