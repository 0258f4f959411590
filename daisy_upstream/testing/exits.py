"""A check shared by the CPU and CUDA tests: per-utterance exits do not depend on batch-mates."""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor

from daisy_upstream.core.policy import ExitPlan, make_plan

__all__ = ["assert_exits_independent_of_batch_mates", "spread_plan"]


def spread_plan(upstream, batch: List[Tensor]) -> ExitPlan:
    """Every layer checked, at the threshold (one of the batch's own entropies) that spreads
    ``batch`` over the most exit layers. ``upstream``: an ``UpstreamExpert`` (its ``run``)."""
    checked = range(1, upstream.num_layers + 1)
    table = upstream.run(batch, make_plan(checked, tau=0.0)).entropies[:, :-1]
    best = max(
        table.flatten().tolist(),
        key=lambda tau: len(set(upstream.run(batch, make_plan(checked, tau + 1e-6)).exit_layers.tolist())),
    )
    return make_plan(checked, best + 1e-6)


def assert_exits_independent_of_batch_mates(
    upstream, batch: List[Tensor], order: Sequence[int], min_layers: int = 3
) -> None:
    """Under :func:`spread_plan`, the batch, the batch in ``order`` and each utterance alone give
    every utterance the same exit layer and the same hidden states (<= 1e-5), zeros past its
    exit; the exits spread over at least ``min_layers`` layers. Call under ``torch.no_grad()``."""
    plan = spread_plan(upstream, batch)
    together = upstream.run(batch, plan)
    assert len(set(together.exit_layers.tolist())) >= min_layers, together.exit_layers
    assert together.exit_layers.device == batch[0].device
    shuffled = upstream.run([batch[i] for i in order], plan)
    for pos, i in enumerate(order):
        alone = upstream.run([batch[i]], plan)
        n, exit_layer = int(alone.lengths[0]), int(alone.exit_layers[0])
        assert int(shuffled.exit_layers[pos]) == int(together.exit_layers[i]) == exit_layer
        for k, state in enumerate(shuffled.hidden_states):
            torch.testing.assert_close(state[pos, :n], alone.hidden_states[k][0], atol=1e-5, rtol=0)
            if k > exit_layer:
                assert not state[pos].any()
