"""What a DAISY featurizer computes, shared by the runner's and the ``s3prl.nn`` one.

Layers are numbered as in ``hidden_states`` (0 = the CNN/positional features, ``k`` = the
``k``-th transformer layer); an utterance that exited at ``k_hat`` ran layers ``0..k_hat``.

* :func:`weighted_sum`: per utterance, a softmax over the weights of the selected layers
  it ran only (the others are masked out, not zero-filled), over ``LayerNorm(h^k)``.
* :func:`deepest_computed`: single-layer selection: layer ``k`` of an utterance that exited
  before it is its deepest computed layer at or below ``k``, ``h^min(k, k_hat)``.
* :class:`ExitStatistics`: the exit histogram ``exit_counts`` (``L`` longs, a buffer of the
  featurizer's own state dict, so every checkpoint of the downstream model carries it).
"""

from __future__ import annotations

import threading
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ExitStatistics", "deepest_computed", "layer_weights", "weighted_sum"]

_COUNT_LOCK = threading.Lock()  # DataParallel replicas count from several threads


def layer_weights(weights: Tensor, layer_ids: Sequence[int], exit_layers: Tensor, layer0: bool = False) -> Tensor:
    """``(B, S)`` softmax of ``weights`` (``(S,)``, one per layer in ``layer_ids``) per utterance.

    Over the layers each utterance ran (``k <= k_hat``; layer 0 only with ``layer0``), the
    others exactly 0. A row that ran none of the selected layers gets all zeros (see
    :func:`weighted_sum`).
    """
    ids = torch.as_tensor(list(layer_ids), device=weights.device)
    usable = ids.unsqueeze(0) <= exit_layers.to(weights.device).unsqueeze(1)
    if not layer0:
        usable = usable & (ids > 0).unsqueeze(0)
    logits = weights.unsqueeze(0).masked_fill(~usable, float("-inf"))
    return F.softmax(logits, dim=-1).nan_to_num(0.0)


def weighted_sum(
    hidden_states: Sequence[Tensor],
    weights: Tensor,
    exit_layers: Tensor,
    layer_ids: Sequence[int],
    layer0: bool = False,
) -> Tensor:
    """DAISY's features ``(B, T, D)``: ``sum_k softmax_K(w)_k LayerNorm(h^k)`` per utterance.

    Args:
        hidden_states: all ``L + 1`` layers, each ``(B, T, D)``.
        weights: ``(S,)`` one learnable weight per layer of ``layer_ids``.
        exit_layers: ``(B,)`` each utterance's exit layer ``k_hat``.
        layer_ids: the selected layers (ascending); ``K`` = those with ``k <= k_hat``
            (and ``k >= 1`` unless ``layer0``).

    An utterance for which ``K`` is empty (it exited before every selected layer) gets
    ``LayerNorm`` of its deepest computed layer at or below the deepest selected one.
    """
    layer_ids = list(layer_ids)
    stacked = torch.stack([hidden_states[k] for k in layer_ids], dim=0)  # (S, B, T, D)
    stacked = F.layer_norm(stacked, stacked.shape[-1:])
    mix = layer_weights(weights, layer_ids, exit_layers, layer0).to(stacked.dtype)  # (B, S)
    feature = torch.einsum("bs,sbtd->btd", mix, stacked)
    empty = (mix == 0).all(dim=1)
    if bool(empty.any()):
        rows = empty.nonzero().flatten().tolist()
        fallback = deepest_computed(hidden_states, exit_layers, max(layer_ids))
        feature = feature.clone()
        feature[rows] = F.layer_norm(fallback[rows], stacked.shape[-1:]).to(feature.dtype)
    return feature


def deepest_computed(hidden_states: Sequence[Tensor], exit_layers: Tensor, layer: int) -> Tensor:
    """``(B, T, D)``: layer ``layer`` of each utterance, or, if it exited before that layer,
    its deepest computed layer at or below it (``h^min(layer, k_hat)``)."""
    layer = range(len(hidden_states))[layer]  # negative indices as in Python
    index = exit_layers.clamp(max=layer).tolist()
    if all(k == layer for k in index):
        return hidden_states[layer]
    return torch.stack([hidden_states[k][b] for b, k in enumerate(index)], dim=0)


class ExitStatistics:
    """Mixin for a featurizer (an ``nn.Module``): the exit histogram, counted per utterance in training mode.

    ``exit_counts[k - 1]`` = training utterances that exited at layer ``k``. When
    ``torch.distributed`` is initialised the counts of a batch are summed over ranks (all
    ranks count the same, whole histogram). Under DataParallel each replica counts its
    share into the module it was replicated from (a replica's own buffers are thrown away).
    """

    exit_counts: Tensor

    def init_exit_statistics(self, num_layers: int) -> None:
        self.register_buffer("exit_counts", torch.zeros(num_layers, dtype=torch.long))
        # a plain attribute (not a submodule): DataParallel's replicas share it; deepcopy
        # and pickle map it to the copy itself
        object.__setattr__(self, "_counted_in", self)

    def count_exits(self, exit_layers: Tensor) -> None:
        """Add a batch's exit layers (``(B,)``, 1..L) to the histogram."""
        target = self._counted_in  # itself, or for a DataParallel replica its original
        num_layers = target.exit_counts.numel()
        counts = torch.bincount(exit_layers.to(target.exit_counts.device) - 1, minlength=num_layers)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        with _COUNT_LOCK:
            target.exit_counts += counts[:num_layers]
