"""tau from a compute budget: what a threshold spends on the calibration utterances.

With every layer allowed to exit (strategy ``none``: branches of layers ``1..L-1`` checked), an
utterance with per-layer mean entropies ``E^1..E^L`` stops at the first layer ``k < L`` with
``E^k < tau``, else at ``L``: exactly the decision of the batch-1 forward, since an utterance's
entropies do not depend on its batch-mates. Its MACs are the cost model's
(:class:`~daisy_upstream.leaderboard.cost_model.CostModel`, what ``daisy profile`` counts: CNN,
front, the layers run and the branches checked), and what tau *spends* is the mean over utterances
of each one's MACs as a fraction of its full-model MACs.

:func:`budget_curve` tabulates that against tau; the calibration record keeps it as
``budget_curve`` and the upstream config's ``budget:`` is resolved on it
(:func:`daisy_upstream.core.policy.tau_for_budget`).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import Tensor

from daisy_upstream.leaderboard.cost_model import CostModel

__all__ = ["CURVE_POINTS", "budget_curve", "exit_layers_at", "spent_at", "utterance_costs"]

#: at most this many thresholds in a stored curve (steps between, in equal shares of the candidates)
CURVE_POINTS = 256


def utterance_costs(cost: CostModel, samples: Sequence[int]) -> Tensor:
    """``(N, L)`` float64: utterance ``n``'s MACs when it stops at layer ``k`` (column ``k - 1``),
    divided by its full-model MACs (every branch below the stop checked, as strategy ``none``)."""
    num_layers = cost.num_layers
    rows = []
    for s in samples:
        base, layers, branches = cost.layer_table(int(s))
        full = base + sum(layers)
        running, row = base, []
        for k in range(1, num_layers + 1):
            running += layers[k - 1] + (branches[k - 1] if k < num_layers else 0.0)
            row.append(running / full)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def exit_layers_at(entropies: Tensor, tau: float) -> Tensor:
    """``(N,)`` each utterance's exit layer (1..L) under ``tau`` with every layer allowed to exit."""
    num_layers = entropies.size(1)
    exits = torch.full((entropies.size(0),), num_layers, dtype=torch.long)
    if num_layers > 1:
        fires = entropies[:, : num_layers - 1] < tau  # (N, L-1); layer L is never checked
        exits = torch.where(fires.any(dim=1), fires.long().argmax(dim=1) + 1, exits)  # argmax: the first
    return exits


def spent_at(entropies: Tensor, costs: Tensor, tau: float) -> float:
    """Mean over utterances of the fraction of full-model MACs spent under ``tau``."""
    exits = exit_layers_at(entropies, tau)
    return float(costs.gather(1, (exits - 1).unsqueeze(1)).mean())


def _thresholds(entropies: Tensor) -> List[float]:
    """0 (nothing exits), midpoints between consecutive distinct checked entropies (at most
    ``CURVE_POINTS - 2``, spread evenly over them) and one above them all (everything at layer 1)."""
    values = torch.unique(entropies[:, : entropies.size(1) - 1].flatten())  # sorted
    if values.numel() == 0:
        return [0.0]
    top = float(values[-1]) + max(1e-6, float(values[-1] - values[0]) / max(1, values.numel()))
    if values.numel() == 1:
        return [0.0, top]
    picks = torch.linspace(0, values.numel() - 2, min(CURVE_POINTS - 2, values.numel() - 1)).round().long().unique()
    mids = ((values[picks] + values[picks + 1]) / 2).tolist()
    return [0.0] + mids + [top]


def budget_curve(entropies: Tensor, samples: Sequence[int], cost: CostModel) -> Dict[str, List[float]]:
    """``{"tau": ascending, "spent": non-increasing, "mean_exit_layer": ...}`` over the calibration utterances.

    Args:
        entropies: ``(N, L)`` per-utterance mean branch entropy by layer.
        samples: ``N`` utterance lengths in samples (16 kHz), the order of ``entropies``' rows.
        cost: the model's cost model.
    """
    if entropies.size(0) != len(samples):
        raise ValueError(f"{entropies.size(0)} entropy rows but {len(samples)} lengths")
    costs = utterance_costs(cost, samples)
    taus = _thresholds(entropies.double())
    spent = [spent_at(entropies, costs, t) for t in taus]
    exits = [float(exit_layers_at(entropies, t).double().mean()) for t in taus]
    return {"tau": taus, "spent": spent, "mean_exit_layer": exits}
