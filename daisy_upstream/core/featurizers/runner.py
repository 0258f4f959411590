"""DAISY's featurizer for s3prl's runner (``run_downstream.py``): a drop-in for
``s3prl.upstream.interfaces.Featurizer`` that sums only the layers that ran.

For a DAISY upstream, per utterance with exit layer ``k_hat``::

    feature = sum_{k in K} softmax_K(w)_k * LayerNorm(h^k),   K = {1..k_hat}  (or {0..k_hat})

the weights of layers that did not run are masked out of the softmax (not zero-filled).
With ``-l k`` (``layer_selection``) the upstream's forward stops at layer ``k``
(:meth:`DaisyUpstream.read_up_to`) and an utterance that exited before layer ``k`` gives its
deepest computed layer at or below ``k``. It also owns the exit statistics: ``exit_counts``
(``L`` longs, ``exit_counts[k-1]`` = utterances that exited at layer ``k``) counted per
utterance in training mode, a buffer saved in every s3prl runner checkpoint; in eval mode
the upstream's span comes from it. The arithmetic is :mod:`.weighted_sum`, shared with
its sibling for ``s3prl.nn`` (:mod:`.s3prl_nn`). For any other upstream it behaves exactly like
s3prl's stock ``Featurizer``.
"""

from __future__ import annotations

from typing import Dict, List, Union

from s3prl.upstream.interfaces import Featurizer
from torch import Tensor, nn

from daisy_upstream.core.expert import DaisyUpstream
from daisy_upstream.core.featurizers.weighted_sum import ExitStatistics, deepest_computed, layer_weights, weighted_sum

__all__ = ["DaisyFeaturizer"]


def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)  # DistributedDataParallel


class DaisyFeaturizer(ExitStatistics, Featurizer):
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
        with DaisyUpstream.probing():  # the dummy forward only reads shapes: full depth
            super().__init__(daisy, feature_selection, upstream_device, layer_selection, normalize, **kwargs)
        self.is_daisy = True
        self.name = "DaisyFeaturizer"
        self.num_layers = daisy.num_layers
        self.featurize_layer0 = daisy.config.featurize_layer0
        self.init_exit_statistics(daisy.num_layers)
        daisy.attach_statistics(self)
        if feature_selection == "hidden_states" and isinstance(layer_selection, int):  # -l k: stop at k
            daisy.read_up_to(max(1, range(daisy.num_layers + 1)[layer_selection]))

    @property
    def weighted_sum_mode(self) -> bool:
        return self.feature_selection == "hidden_states" and not isinstance(self.layer_selection, int)

    def layer_weights(self, exit_layers: Tensor) -> Tensor:
        """``(B, L + 1)`` softmax weights over the layers each utterance ran (others exactly 0)."""
        return layer_weights(self.weights, range(self.layer_num), exit_layers, self.featurize_layer0)

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
        hidden_states = list(paired_features["hidden_states"])
        if self.weighted_sum_mode:
            feature = weighted_sum(
                hidden_states, self.weights, exit_layers, range(self.layer_num), self.featurize_layer0
            )
        elif self.feature_selection == "hidden_states":  # -l k
            feature = deepest_computed(hidden_states, exit_layers, self.layer_selection)
        else:
            feature = self._select_feature(paired_features)
        return [f[:n] for f, n in zip(feature, lengths)]
