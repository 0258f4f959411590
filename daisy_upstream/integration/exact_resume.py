"""Exact resume of s3prl's downstream training (``runner.exact_resume: true`` in the task config).

s3prl 0.4.18's ``Runner.train`` saves ``states-N.ckpt`` with the step and the epoch it was
in, and ``-e states-N.ckpt`` restores the models, the optimizer and the scheduler. But the
resumed run starts that epoch again from its first batch, in a new random order (the seed is
set once per process), so it trains again on batches it has seen, skips others, and ends
with other weights than a run that was never stopped.

With ``exact_resume`` set in the config's ``runner`` section (the key travels in every
checkpoint, so a resume keeps it), that runner's ``train`` (and only that runner's: without
the key s3prl's runner trains as it is) makes the training split's loader a function of
(seed, epoch, batch index) alone:

* before an epoch's first batch is drawn, Python's, numpy's and torch's random generators are
  seeded from (``--seed``, epoch): the shuffle order of the epoch depends on nothing else;
* before each batch is handed to the training step, they are seeded from (seed, epoch,
  batch): dropout, SpecAugment or anything else random in that step depends on nothing else;
* a resumed run skips the batches of its epoch that the saved step had already trained
  (``Step * gradient_accumulate_steps - Epoch * batches_per_epoch``), drawing them from the
  loader without training on them.

So training to step N in one go, or stopping at any saved step and resuming with ``-e``
(also with a larger ``config.runner.total_steps`` given by ``-o``), gives the same weights.
The data order differs from stock s3prl's for the same seed (equally random). Under
``torch.distributed`` the loader is left as it is (s3prl's DistributedSampler has its own
epoch seeding; exact resume is single-process only).
"""

from __future__ import annotations

import functools
import random
import types
import warnings
from typing import Any, Callable, Iterator, Optional

import numpy as np

__all__ = ["CONFIG_KEY", "EpochBatches", "asks_for_it", "exact_train", "install_when_asked", "seed_everything"]

#: the key in a task config's ``runner`` section that switches exact resume on
CONFIG_KEY = "exact_resume"


def seed_everything(*keys: int) -> None:
    """Seed Python's, numpy's and torch's (all devices') generators from integer ``keys``."""
    import torch

    state = int(np.random.SeedSequence([abs(int(k)) for k in keys]).generate_state(1)[0])
    random.seed(state)
    np.random.seed(state)
    torch.manual_seed(state)


class EpochBatches:
    """One epoch of a training loader, seeded per epoch and per batch, its first ``skip`` batches drawn unused.

    Args:
        loader: the epoch's ``DataLoader`` (or any sized iterable of batches).
        seed: the run's seed (``--seed``).
        epoch: the epoch's index (s3prl's ``Epoch``).
        skip: batches of this epoch already trained on by the checkpoint resumed from.
    """

    def __init__(self, loader: Any, seed: int, epoch: int, skip: int = 0) -> None:
        self.loader = loader
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.skip = int(skip)

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:  # sampler, dataset, ... as the loader's
        return getattr(self.__dict__["loader"], name)

    def __iter__(self) -> Iterator[Any]:
        seed_everything(self.seed, self.epoch, 0)
        batches = iter(self.loader)
        for _ in range(self.skip):
            next(batches, None)
        for index, batch in enumerate(batches, start=self.skip):
            seed_everything(self.seed, self.epoch, index + 1)
            yield batch


def _batches_to_skip(step: int, epoch: int, accumulate: int, per_epoch: int) -> Optional[int]:
    skip = step * accumulate - epoch * per_epoch
    return skip if 0 <= skip <= per_epoch else None


def _seeded_loaders(
    real: Callable[..., Any], train_split: str, seed: int, step: int, start_epoch: int, accumulate: int
) -> Callable[..., Any]:
    def get_dataloader(split: str, *args: Any, epoch: Optional[int] = None, **kwargs: Any) -> Any:
        loader = real(split, *args, **kwargs)
        if split != train_split or epoch is None:
            return loader
        skip = 0
        if step and epoch == start_epoch:
            found = _batches_to_skip(step, start_epoch, accumulate, len(loader))
            if found is None:
                warnings.warn(
                    f"exact resume: step {step} of epoch {start_epoch} does not fall inside that epoch "
                    f"({len(loader)} batches); resuming from the epoch's start (was the run started "
                    f"without runner.{CONFIG_KEY}?)",
                    stacklevel=2,
                )
            else:
                skip = found
        return EpochBatches(loader, seed, epoch, skip)

    return get_dataloader


def asks_for_it(config: Any) -> bool:
    """Whether a task config (a runner's ``config``) switches exact resume on."""
    settings = config.get("runner") if isinstance(config, dict) else None
    return bool(isinstance(settings, dict) and settings.get(CONFIG_KEY))


def exact_train(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``Runner.train`` (``original``) with each epoch's loader seeded and a resume's trained batches skipped."""

    @functools.wraps(original)
    def train(self):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # DistributedSampler seeds its own epochs
            return original(self)
        settings = self.config["runner"]
        expert = self.downstream.model
        had_own = "get_dataloader" in vars(expert)
        real = expert.get_dataloader
        expert.get_dataloader = _seeded_loaders(
            real,
            settings.get("train_dataloader", "train"),
            seed=int(self.args.seed),
            step=int(self.init_ckpt.get("Step") or 0),
            start_epoch=int(self.init_ckpt.get("Epoch", 0) or 0),
            accumulate=int(settings.get("gradient_accumulate_steps") or 1),
        )
        try:
            return original(self)
        finally:
            if had_own:
                expert.get_dataloader = real
            else:
                del expert.get_dataloader

    return train


def install_when_asked(runner: types.ModuleType) -> None:
    """Let a ``runner.Runner`` whose config asks for it (:func:`asks_for_it`) train with exact
    resume: that runner's ``train`` becomes :func:`exact_train` of s3prl's. Any other runner,
    and ``Runner.train`` itself, stay s3prl's own."""
    original = runner.Runner.__init__
    if getattr(original, "_daisy_exact_resume", False):
        return

    @functools.wraps(original)
    def __init__(self, args, config, *more, **kwargs):
        original(self, args, config, *more, **kwargs)
        if asks_for_it(self.config):
            self.train = types.MethodType(exact_train(type(self).train), self)

    __init__._daisy_exact_resume = True
    runner.Runner.__init__ = __init__
