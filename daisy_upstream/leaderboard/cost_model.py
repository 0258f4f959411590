"""The MACs of one utterance's early-exit forward, as ``daisy profile`` counts them, from its length.

``daisy profile`` runs every clip alone (batch 1) under :func:`~daisy_upstream.leaderboard.macs.count_macs`.
What it counts for a clip of ``S`` samples (``T`` frames) that stopped at layer ``k_hat`` after
checking the branches of ``checked`` layers is a sum of parts, each a function of the length alone::

    macs = cnn(S) + front(T) + sum_{j <= k_hat} layer_j(T) + sum_{j in checked} branch_j(T)

* ``cnn(S)``: each ``nn.Conv1d`` of the feature extractor, ``out_frames * C_out * C_in / groups
  * kernel`` (what torch's convolution formula counts), its output frames from ``S`` by the
  convolution arithmetic;
* ``front(T)`` (the projection and positional convolution), ``layer_j(T)`` and ``branch_j(T)``:
  quadratic in ``T`` (linear layers and convolutions over time are linear in ``T``, attention's
  two products ``Q K^T`` and ``P V`` quadratic), so three counts at three lengths give their
  coefficients exactly (:func:`measure_cost_model`).

The full model is ``cnn + front + sum_{j <= L} layer_j`` (no branch is checked).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import nn

from daisy_upstream.core.policy import make_plan
from daisy_upstream.leaderboard.macs import count_macs

__all__ = ["CostModel", "measure_cost_model"]

#: the lengths (samples) the quadratic parts are counted at: 0.25 s, 0.5 s and 1 s at 16 kHz
_PROBE_SAMPLES = (4000, 8000, 16000)

Quadratic = Tuple[float, float, float]  # (c0, c1, c2): c0 + c1 T + c2 T^2 MACs


def _at(q: Sequence[float], frames: int) -> float:
    return q[0] + q[1] * frames + q[2] * frames * frames


@dataclass
class CostModel:
    """MACs of a batch-1 early-exit forward from the utterance's length.

    Attributes:
        convs: per ``nn.Conv1d`` of the CNN, ``(kernel, stride, MACs per output frame)``.
        front: quadratic in ``T`` (MACs between the CNN and layer 1).
        layers: ``L`` quadratics, layer ``j`` first at index ``j - 1``.
        branches: ``L`` quadratics, the exit branch of layer ``j`` (entropy included).
    """

    convs: List[Tuple[int, int, int]]
    front: Quadratic
    layers: List[Quadratic]
    branches: List[Quadratic]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def frames(self, samples: int) -> int:
        """CNN output frames of ``samples`` samples."""
        n = int(samples)
        for kernel, stride, _ in self.convs:
            n = (n - kernel) // stride + 1
        return n

    def cnn(self, samples: int) -> int:
        n, total = int(samples), 0
        for kernel, stride, per_frame in self.convs:
            n = (n - kernel) // stride + 1
            total += n * per_frame
        return total

    def macs(self, samples: int, exit_layer: int, checked: Sequence[int] = ()) -> float:
        """MACs of a forward that ran layers ``1..exit_layer`` and checked the branches of ``checked``."""
        if not 1 <= exit_layer <= self.num_layers:
            raise ValueError(f"exit layer {exit_layer} outside 1..{self.num_layers}")
        t = self.frames(samples)
        total = self.cnn(samples) + _at(self.front, t)
        total += sum(_at(self.layers[j - 1], t) for j in range(1, exit_layer + 1))
        total += sum(_at(self.branches[j - 1], t) for j in checked if j <= exit_layer)
        return total

    def full(self, samples: int) -> float:
        """MACs of the full model (every layer, no branch)."""
        return self.macs(samples, self.num_layers)

    def layer_table(self, samples: int) -> Tuple[float, List[float], List[float]]:
        """``(base, layer MACs (L), branch MACs (L))`` at one length: base = CNN + front."""
        t = self.frames(samples)
        return (
            self.cnn(samples) + _at(self.front, t),
            [_at(q, t) for q in self.layers],
            [_at(q, t) for q in self.branches],
        )

    def to_dict(self) -> Dict[str, Any]:
        return {
            "convs": [list(c) for c in self.convs],
            "front": list(self.front),
            "layers": [list(q) for q in self.layers],
            "branches": [list(q) for q in self.branches],
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "CostModel":
        return cls(
            [tuple(int(v) for v in c) for c in data["convs"]],
            tuple(float(v) for v in data["front"]),
            [tuple(float(v) for v in q) for q in data["layers"]],
            [tuple(float(v) for v in q) for q in data["branches"]],
        )


def _fit(frames: Sequence[int], values: Sequence[float]) -> Quadratic:
    """The quadratic through three ``(T, MACs)`` points (exact: the parts are quadratics)."""
    t = torch.tensor([float(f) for f in frames], dtype=torch.float64)
    a = torch.stack([torch.ones_like(t), t, t * t], dim=1)
    c = torch.linalg.solve(a, torch.tensor([float(v) for v in values], dtype=torch.float64))
    return tuple(float(v) for v in c)


@torch.no_grad()
def measure_cost_model(net: Any) -> CostModel:
    """Count ``net`` (an :class:`~daisy_upstream.core.early_exit.EarlyExitModel` with branches)
    at batch 1 at three lengths, depth by depth, with torch's counter; returns the fitted model.

    ``3 L`` forwards of at most 1 s of audio, ``3`` of the front alone and ``3 L`` branch evaluations.
    """
    param = next(net.model.parameters())
    convs = [m for m in net.model.feature_extractor.modules() if isinstance(m, nn.Conv1d)]
    cnn = CostModel(
        [
            (m.kernel_size[0], m.stride[0], m.out_channels * (m.in_channels // m.groups) * m.kernel_size[0])
            for m in convs
        ],
        (0.0, 0.0, 0.0),
        [],
        [],
    )
    generator = torch.Generator().manual_seed(0)
    frames, depth, front, branch = [], [], [], []
    for samples in _PROBE_SAMPLES:
        t = cnn.frames(samples)
        frames.append(t)
        wav = (torch.randn(samples, generator=generator) * 0.1).to(param.device, param.dtype)
        depth.append(
            [count_macs(lambda k=k: net([wav], make_plan([k], None)))[0] for k in range(1, net.num_layers + 1)]
        )
        features = torch.zeros(1, t, convs[-1].out_channels, device=param.device, dtype=param.dtype)
        padding = torch.zeros(1, t, dtype=torch.bool, device=param.device)
        front.append(count_macs(lambda: net.family.front(net.model, features, padding))[0])
        state = torch.randn(1, t, net.embed_dim, generator=generator).to(param.device, param.dtype)
        branch.append(
            [count_macs(lambda k=k: net.branches.entropy(k, state, None))[0] for k in range(1, net.num_layers + 1)]
            if net.branches is not None
            else [0] * net.num_layers
        )
    # depth[k-1] = cnn + front + layers 1..k
    below = [[cnn.cnn(s) + f] + d[:-1] for s, f, d in zip(_PROBE_SAMPLES, front, depth)]
    layers = [_fit(frames, [d[k] - b[k] for d, b in zip(depth, below)]) for k in range(net.num_layers)]
    branches = [_fit(frames, [b[k] for b in branch]) for k in range(net.num_layers)]
    return CostModel(cnn.convs, _fit(frames, front), layers, branches)
