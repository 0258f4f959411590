"""The DAISY featurizer: a drop-in for s3prl's ``Featurizer`` that sums only the layers that ran.

For a DAISY upstream, per utterance with exit layer ``k_hat``::

    feature = sum_{k in K} softmax_K(w)_k * LayerNorm(h^k),   K = {1..k_hat}  (or {0..k_hat})

the weights of layers that did not run are masked out of the softmax (not zero-filled).
It also owns the exit statistics: ``exit_counts`` (``L`` longs, ``exit_counts[k-1]`` =
utterances that exited at layer ``k``) counted per utterance in training mode, a buffer saved
in every s3prl runner checkpoint; in eval mode the upstream's span comes from it.
For any other upstream it behaves exactly like s3prl's stock ``Featurizer``.
"""
from __future__ import annotations

from typing import Dict, List, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from s3prl.upstream.interfaces import Featurizer

from daisy_upstream.core.expert import DaisyUpstream

__all__ = ["DaisyFeaturizer"]


def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)  # DistributedDataParallel


class DaisyFeaturizer(Featurizer):
    """Same constructor keywords and forward contract as s3prl's ``Featurizer``."""

    def __init__(
        self,
        upstream: nn.Module,
        feature_selection: str = "hidden_states",
        upstream_device: str = "cuda",
        layer_selection: int = None,
        normalize: bool = False,
        **kwargs,
    ) -> None:
        daisy = _unwrap(upstream)
        if not isinstance(daisy, DaisyUpstream):
            super().__init__(upstream, feature_selection, upstream_device, layer_selection, normalize, **kwargs)
            self.is_daisy = False
            return
        with daisy.span_override([daisy.num_layers]):  # the dummy forward only reads shapes
            super().__init__(daisy, feature_selection, upstream_device, layer_selection, normalize, **kwargs)
        self.is_daisy = True
        self.name = "DaisyFeaturizer"
        self.num_layers = daisy.num_layers
        self.featurize_layer0 = daisy.config.featurize_layer0
        self.register_buffer("exit_counts", torch.zeros(daisy.num_layers, dtype=torch.long))
        daisy.attach_statistics(self)

    @property
    def weighted_sum_mode(self) -> bool:
        return self.feature_selection == "hidden_states" and not isinstance(self.layer_selection, int)

    def count_exits(self, exit_layers: Tensor) -> None:
        """Add a batch's exit layers to the histogram (summed over ranks when distributed)."""
        counts = torch.bincount(exit_layers.to(self.exit_counts.device) - 1, minlength=self.num_layers)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        self.exit_counts += counts[: self.num_layers]

    def layer_weights(self, exit_layers: Tensor) -> Tensor:
        """``(B, L + 1)`` softmax weights over the layers each utterance ran (others exactly 0)."""
        layer_ids = torch.arange(self.layer_num, device=self.weights.device)
        ran = layer_ids.unsqueeze(0) <= exit_layers.to(self.weights.device).unsqueeze(1)
        if not self.featurize_layer0:
            ran = ran & (layer_ids > 0).unsqueeze(0)
        logits = self.weights.unsqueeze(0).masked_fill(~ran, float("-inf"))
        return F.softmax(logits, dim=-1)

    def forward(
        self,
        paired_wavs: List[Tensor],
        paired_features: Dict[str, Union[Tensor, List[Tensor], Dict[str, Tensor]]],
    ) -> List[Tensor]:
        if not self.is_daisy:
            return super().forward(paired_wavs, paired_features)
        exit_layers = paired_features["exit_layers"]
        if self.training:
            self.count_exits(exit_layers)
        lengths = paired_features["feature_lengths"].tolist()
        if not self.weighted_sum_mode:
            feature = self._select_feature(paired_features)
            return [f[:n] for f, n in zip(feature, lengths)]
        stacked = torch.stack(list(paired_features["hidden_states"]), dim=0)  # (L+1, B, T, D)
        stacked = F.layer_norm(stacked, stacked.shape[-1:])
        weights = self.layer_weights(exit_layers).to(stacked.dtype)  # (B, L+1)
        feature = torch.einsum("bl,lbtd->btd", weights, stacked)
        return [f[:n] for f, n in zip(feature, lengths)]
