"""Stage 1's progress report: a tqdm bar, TensorBoard scalars and the held-out log line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Sequence

import torch
from torch import Tensor

__all__ = ["TrainingMonitor", "format_losses"]

log = logging.getLogger("daisy_upstream.training.stage1")


def format_losses(values: Sequence[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


class TrainingMonitor:
    """Stage 1's progress bar, TensorBoard scalars (``<work_dir>/tb``) and running training means.

    Scalars: ``train_ce/layer_KK`` and ``train_agreement/layer_KK`` (means over the frames since
    the last point, every ``log_every`` steps), ``heldout_ce/...``, ``heldout_agreement/...`` and
    ``speed/audio_seconds_per_second``.
    """

    def __init__(
        self,
        work_dir: Path,
        num_layers: int,
        step: int,
        total_steps: int,
        *,
        tensorboard: bool,
        progress: bool,
        log_every: int,
    ) -> None:
        self.num_layers, self.log_every = num_layers, log_every
        self.writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(work_dir / "tb"), purge_step=step if step > 0 else None)
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=step, desc="train-branches", unit="step", dynamic_ncols=True)
        self.ce = torch.zeros(num_layers, dtype=torch.float64)
        self.hits = torch.zeros(num_layers, dtype=torch.float64)
        self.frames = 0

    def heldout(self, metrics: Dict[str, Any], step: int) -> None:
        if self.writer is not None:
            for k in range(self.num_layers):
                self.writer.add_scalar(f"heldout_ce/layer_{k + 1:02d}", metrics["ce"][k], step)
                self.writer.add_scalar(f"heldout_agreement/layer_{k + 1:02d}", metrics["accuracy"][k], step)
        log.info("step %d held-out CE per layer: %s", step, format_losses(metrics["ce"]))

    def train(self, step: int, ce: Tensor, hits: Tensor, frames: int, audio_per_second: float) -> None:
        """One optimizer step: ``ce (L,)`` mean CE, ``hits (L,)`` correct frames of ``frames``."""
        self.ce += ce.detach().double().cpu() * frames
        self.hits += hits.detach().double().cpu()
        self.frames += frames
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"ce/layer {format_losses(ce.detach().cpu().tolist())}")
        if self.writer is not None and self.log_every and step % self.log_every == 0 and self.frames:
            for k in range(self.num_layers):
                self.writer.add_scalar(f"train_ce/layer_{k + 1:02d}", float(self.ce[k] / self.frames), step)
                self.writer.add_scalar(f"train_agreement/layer_{k + 1:02d}", float(self.hits[k] / self.frames), step)
            self.writer.add_scalar("speed/audio_seconds_per_second", audio_per_second, step)
            self.ce.zero_()
            self.hits.zero_()
            self.frames = 0

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        self.close_bar()
        if self.writer is not None:
            self.writer.close()
