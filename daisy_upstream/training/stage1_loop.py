"""Stage 1's training loop: one call's state (:class:`Run`), the steps, the held-out evaluation.

:func:`daisy_upstream.training.stage1.train_branches` prepares a :class:`Run` (the frozen model,
targets, branches, optimizer, resumed progress) and hands it to :func:`train`, which takes
optimizer steps until the last one or ``stop_after``, evaluating and saving the state on the
way (and on an interrupt).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.audio.io import SAMPLE_RATE
from daisy_upstream.audio.noise import NoiseAugment
from daisy_upstream.core.branches import ExitBranches
from daisy_upstream.core.early_exit import EarlyExitModel

from .batch_feed import EpochSampler, PaddedBatches, batch_loader, unpad
from .monitor import TrainingMonitor
from .stage1_config import Stage1Config
from .stage1_state import Progress, save_state
from .targets import batch_features, evaluate_branches

__all__ = ["Run", "evaluate", "train"]

log = logging.getLogger(__name__)


@dataclass
class Run:
    """What one call of :func:`train_branches` works with (shared by its steps)."""

    config: Stage1Config
    dev: torch.device
    rank: int
    world: int
    backbone: EarlyExitModel
    targets: nn.Module
    train_set: AudioCorpus
    heldout_set: AudioCorpus
    batches: List[List[int]]
    branches: ExitBranches
    optimizer: torch.optim.Optimizer
    train_module: nn.Module
    fingerprint: Dict[str, Any]
    state_path: Path
    total_steps: int
    done: Progress = field(default_factory=Progress)
    monitor: Optional[TrainingMonitor] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def save(self) -> None:
        if self.is_main:
            save_state(self.state_path, self.fingerprint, self.done, self.branches, self.optimizer, self.config)


def evaluate(run: Run) -> Optional[Dict[str, Any]]:
    """The held-out CE and agreement per layer (every rank its share); None without held-out audio."""
    if len(run.heldout_set) == 0:
        return None
    config = run.config
    run.branches.eval()
    metrics = evaluate_branches(
        run.backbone,
        run.targets,
        run.branches,
        run.heldout_set,
        config.batch_seconds,
        run.dev,
        run.rank,
        run.world,
        config.workers,
        config.prefetch,
    )
    run.branches.train()
    metrics["step"] = run.done.step
    run.done.history.append(metrics)
    if run.is_main and run.monitor is not None:
        run.monitor.heldout(metrics, run.done.step)
    return metrics


def _step(run: Run, item: Dict[str, Any]) -> Optional[Tuple[float, Tensor, Tensor, int]]:
    """One optimizer step on one batch: ``(audio seconds, CE, hits, frames)``; None when every
    file of the batch failed to decode (counted) and no step was taken."""
    done, config = run.done, run.config
    done.epoch, done.position = item["epoch"], item["position"]
    wavs = unpad(item, run.train_set, run.dev)
    if not wavs and run.world == 1:
        done.position += 1
        return None
    if wavs:
        features, labels = batch_features(run.backbone, run.targets, wavs)
    else:  # this rank has nothing, but must take part in the DDP step
        features = torch.zeros(run.backbone.num_layers, 0, run.backbone.embed_dim, device=run.dev)
        labels = torch.zeros(0, dtype=torch.long, device=run.dev)
    ce, hits = run.train_module(features, labels)
    decay = 1.0 - done.step / run.total_steps if config.lr_schedule == "linear" else 1.0
    for group in run.optimizer.param_groups:
        group["lr"] = group["base_lr"] * decay
    run.optimizer.zero_grad(set_to_none=True)
    ce.sum().backward()
    run.optimizer.step()
    done.step += 1
    done.position += 1  # only now: an interrupt before this point redoes the batch
    return sum(len(w) for w in wavs) / SAMPLE_RATE, ce, hits, labels.numel()


def train(run: Run) -> Tuple[float, float]:
    """Steps until the last one or ``stop_after``; ``(audio seconds, wall seconds)`` of this call."""
    done, config = run.done, run.config
    if config.eval_every and done.step == 0 and run.total_steps > 0:
        evaluate(run)  # the untrained baseline
    audio_seconds, started, start_step = 0.0, time.perf_counter(), done.step
    run.branches.train()
    augment = NoiseAugment(config.noise_prob, config.noise_snr_db, seed=config.seed)
    sampler = EpochSampler(len(run.batches), config.seed, run.rank, run.world, done.epoch, done.position)
    loader = batch_loader(
        PaddedBatches(run.train_set, run.batches, config.seed, run.rank, augment),
        sampler,
        config.workers,
        config.prefetch,
        pin_memory=run.dev.type == "cuda",
    )
    feed = iter(loader)
    try:
        while done.step < run.total_steps:
            if config.stop_after is not None and done.step - start_step >= config.stop_after:
                break
            stepped = _step(run, next(feed))  # the sampler moves on to the next epoch by itself
            if stepped is None:
                continue
            seconds, ce, hits, frames = stepped
            audio_seconds += seconds
            speed = audio_seconds / max(time.perf_counter() - started, 1e-9)
            run.monitor.train(done.step, ce, hits, frames, speed)
            if config.eval_every and done.step % config.eval_every == 0 and done.step < run.total_steps:
                evaluate(run)
            if config.save_every and done.step % config.save_every == 0:
                run.save()
    except KeyboardInterrupt:
        run.save()
        run.monitor.close_bar()
        if run.is_main:
            log.warning("interrupted at step %d; state saved in %s, run again to continue", done.step, run.state_path)
        raise
    finally:
        del feed  # stops the workers
    return audio_seconds, time.perf_counter() - started
