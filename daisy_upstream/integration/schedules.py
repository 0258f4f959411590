"""A learning-rate schedule that s3prl 0.4.18 lacks, added to ``s3prl.schedulers`` by name.

s3prl's runner builds a config's ``scheduler`` section as
``s3prl.schedulers.get_<name>(optimizer, num_training_steps=runner.total_steps, **rest)``. Its
decaying schedules either follow ``total_steps`` (linear, cosine, polynomial: a training
extended by resuming with more steps would change its past learning rates) or jump at the end
of their warm-up (sqrt, noam). ``multistep_schedule`` is torch's
:class:`~torch.optim.lr_scheduler.MultiStepLR`: the learning rate times ``gamma`` at each
milestone step, whatever ``total_steps`` is, so a training extended by resuming is the
training that would have run that long. The runner saves and restores it with the optimizer
(``-e states-N.ckpt``). Table 1's ASR trainings use it (``evaluation/table1/tasks.py``); any
s3prl config may::

    scheduler:
      name: multistep_schedule
      milestones: [2800]
      gamma: 0.25
"""

from __future__ import annotations

import types
from typing import Sequence

__all__ = ["get_multistep_schedule", "register_schedules"]


def get_multistep_schedule(optimizer, num_training_steps: int, milestones: Sequence[int], gamma: float = 0.1):
    """The learning rate times ``gamma`` at each of ``milestones`` (optimizer steps);
    ``num_training_steps`` (s3prl passes it to every schedule) is not used."""
    import torch

    if not milestones or any(int(m) < 1 for m in milestones) or not 0 < float(gamma) <= 1:
        raise ValueError(
            f"multistep_schedule needs milestones >= 1 and 0 < gamma <= 1, got {list(milestones)}, {gamma}"
        )
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=sorted(int(m) for m in milestones), gamma=float(gamma)
    )


def register_schedules(schedulers: types.ModuleType) -> None:
    """Make ``name: multistep_schedule`` known to ``s3prl.schedulers.get_scheduler`` (idempotent)."""
    schedulers.get_multistep_schedule = get_multistep_schedule
