"""``scheduler: {name: multistep_schedule, ...}`` in an s3prl config, built by s3prl's own
``get_scheduler`` (the runner's call), once the plugin is installed."""

from __future__ import annotations

import pytest
import torch

import daisy_upstream  # noqa: F401  (installs the plugin's hooks)


def _lrs(config, steps=6, total_steps=4):
    from s3prl.schedulers import get_scheduler

    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=2e-3)
    scheduler = get_scheduler(optimizer, total_steps, config)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_the_rate_drops_at_the_milestones_whatever_the_total_steps():
    config = {"name": "multistep_schedule", "milestones": [2, 4], "gamma": 0.25}
    assert _lrs(config) == pytest.approx([2e-3, 2e-3, 5e-4, 5e-4, 1.25e-4, 1.25e-4])
    assert _lrs(config, total_steps=1000) == _lrs(config, total_steps=4)  # an extended training: the same path


def test_bad_milestones_or_gamma_are_refused():
    with pytest.raises(ValueError, match="milestones >= 1 and 0 < gamma <= 1"):
        _lrs({"name": "multistep_schedule", "milestones": [0], "gamma": 0.5})
    with pytest.raises(ValueError, match="milestones >= 1 and 0 < gamma <= 1"):
        _lrs({"name": "multistep_schedule", "milestones": [3], "gamma": 2.0})
