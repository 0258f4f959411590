"""DAISY's featurizer for s3prl's newer API, ``s3prl.nn.Featurizer`` (``S3PRLUpstream`` users:
s3prl's problem recipes, ESPnet's ``S3prlFrontend``).

s3prl.nn is imported lazily, so the class is made from s3prl's own class when
:mod:`daisy_upstream.integration.s3prl_nn` patches ``s3prl.nn.upstream``
(:func:`make_featurizer_class`) and kept in this module's ``DaisyNNFeaturizer`` (so that
pickled models find it). The runner's featurizer is its sibling :mod:`.runner`; the arithmetic
both share is :mod:`.weighted_sum`. See docs/s3prl_nn.md.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from daisy_upstream.core.expert import DaisyUpstream, read_exit_layers
from daisy_upstream.core.featurizers.weighted_sum import ExitStatistics, deepest_computed, weighted_sum

__all__ = ["DaisyNNFeaturizer", "daisy_of", "install_featurizer_class", "make_featurizer_class"]

#: the class ``s3prl.nn.Featurizer`` names once patched (set by :func:`patch_nn_upstream`;
#: a module global so that pickled models find it); its ``_daisy_stock`` is s3prl's own class
DaisyNNFeaturizer: Optional[type] = None


def daisy_of(upstream: nn.Module) -> Optional[DaisyUpstream]:
    """The DAISY model inside an ``S3PRLUpstream`` (also wrapped in DP/DDP), else None."""
    inner = getattr(getattr(upstream, "module", upstream), "upstream", None)
    return inner if isinstance(inner, DaisyUpstream) else None


def make_featurizer_class(stock: type) -> type:
    """The DAISY-aware subclass of s3prl.nn's ``Featurizer`` class ``stock``."""

    class DaisyNNFeaturizer(ExitStatistics, stock):
        """``s3prl.nn.Featurizer``; for a DAISY upstream, DAISY's featurizer (docs/s3prl_nn.md).

        For a DAISY upstream:

        * weighted-sum mode (``layer_selections`` None or several layers): per utterance,
          a softmax over the selected layers it ran (layer 0 only with the upstream config's
          ``featurize_layer0``) of ``LayerNorm(h^k)``, as the runner's ``DaisyFeaturizer``;
          ``normalize`` changes nothing (the LayerNorm is part of DAISY's featurizer).
        * ``layer_selections=[k]``: ``h^min(k, k_hat)``, the deepest computed layer at or
          below ``k`` (``LayerNorm``-ed when ``normalize``, as s3prl does).
        * the upstream's forward stops at the deepest selected layer
          (:meth:`DaisyUpstream.read_up_to`): no layer past it is computed.
        * ``exit_counts``: exits counted per utterance in training mode, a buffer of this
          module's state dict; in eval mode the upstream's span comes from it.

        For any other upstream it is s3prl's own class, bit for bit (same state dict).
        """

        def __init__(self, upstream: nn.Module, layer_selections: Optional[List[int]] = None, normalize: bool = False):
            super().__init__(upstream, layer_selections=layer_selections, normalize=normalize)
            daisy = daisy_of(upstream)
            self.is_daisy = daisy is not None
            if daisy is None:
                return
            self.num_hidden = daisy.num_layers + 1
            self.featurize_layer0 = daisy.config.featurize_layer0
            self.init_exit_statistics(daisy.num_layers)
            daisy.attach_statistics(self)
            # no layer past the deepest selected one is read (ESPnet's `layer: k` reads all_hs[k]): stop there
            daisy.read_up_to(max(1, max(range(daisy.num_layers + 1)[k] for k in self.layer_selections)))

        def forward(self, all_hs: List[Tensor], all_lens: List[Tensor]) -> Tuple[Tensor, Tensor]:
            if not self.is_daisy or len(all_hs) == 1:
                return super().forward(all_hs, all_lens)
            if len(all_hs) != self.num_hidden:
                raise ValueError(
                    f"a DAISY featurizer needs all {self.num_hidden} hidden states of its upstream "
                    f"(got {len(all_hs)}): pass what S3PRLUpstream returned, choose layers with layer_selections"
                )
            exit_layers = read_exit_layers(all_hs)
            if self.training:
                self.count_exits(exit_layers)
            lengths = all_lens[self.layer_selections[0]]
            if len(self.layer_selections) == 1:
                feature = deepest_computed(all_hs, exit_layers, self.layer_selections[0])
                if self.normalize:
                    feature = F.layer_norm(feature, feature.shape[-1:])
                return feature, lengths
            feature = weighted_sum(all_hs, self.weights, exit_layers, self.layer_selections, self.featurize_layer0)
            return feature, lengths

    DaisyNNFeaturizer.__module__ = __name__
    DaisyNNFeaturizer.__qualname__ = "DaisyNNFeaturizer"
    DaisyNNFeaturizer._daisy_stock = stock
    return DaisyNNFeaturizer


def install_featurizer_class(stock: type) -> type:
    """The DAISY subclass of ``stock`` (s3prl.nn's ``Featurizer``), made once and kept in
    :data:`DaisyNNFeaturizer`; a class that already is one is returned as it is."""
    global DaisyNNFeaturizer
    if getattr(stock, "_daisy_stock", None) is not None:
        return stock
    DaisyNNFeaturizer = make_featurizer_class(stock)
    return DaisyNNFeaturizer
