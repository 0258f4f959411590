"""DAISY in s3prl's newer API: ``s3prl.nn.S3PRLUpstream`` + ``s3prl.nn.Featurizer``.

That is the route of s3prl's problem recipes (``s3prl/problem/base.py``) and of ESPnet's
``S3prlFrontend``. Nobody's code changes: :mod:`daisy_upstream.integration.plugin` applies
:func:`patch_nn_upstream` when ``s3prl.nn.upstream`` is imported and re-points the names
``s3prl.nn.Featurizer`` and ``s3prl.problem.base.Featurizer`` (ESPnet imports it from
``s3prl.nn`` when it builds the frontend).

How an utterance's exit layer reaches the featurizer: in the hidden states themselves.
``S3PRLUpstream.forward`` passes on only the values of ``hidden_states`` (its lengths come
from the waveform lengths), so inside ``S3PRLUpstream`` a DAISY upstream fills the layers an
utterance did not run with a copy of its exit layer (``layers_past_exit: copy``) and the
featurizer reads the exit layers back with :func:`~daisy_upstream.core.expert.read_exit_layers`.
No global state and no tensor attributes: it travels with the rows through S3PRLUpstream's
trimming and ``normalize``, DataParallel's scatter/gather and DDP, and two DAISY upstreams in
one process cannot mix. See docs/s3prl_nn.md.
"""
from __future__ import annotations

import functools
import logging
import types
from typing import List, Optional, Tuple

from torch import Tensor, nn
import torch.nn.functional as F

from daisy_upstream.core.expert import DaisyUpstream, read_exit_layers
from daisy_upstream.core.weighted_sum import ExitStatistics, deepest_computed, weighted_sum

__all__ = [
    "DaisyNNFeaturizer",
    "daisy_of",
    "make_featurizer_class",
    "patch_featurizer_name",
    "patch_nn_upstream",
]

logger = logging.getLogger(__name__)

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


def _probe_at_full_depth(s3prl_upstream: type) -> None:
    # S3PRLUpstream's constructor runs the new upstream once on pseudo waves to read the
    # number and sizes of its layers, before any featurizer (and so any exit statistics)
    # exists: run DAISY at full depth there. Afterwards, a DAISY upstream inside it fills
    # the layers past each exit with copies (its consumers, e.g. ESPnet's `layer`, read
    # hidden states without a featurizer). Other upstreams: unchanged.
    original = s3prl_upstream.__init__
    if getattr(original, "_daisy_shim", False):
        return

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        with DaisyUpstream.probing():
            original(self, *args, **kwargs)
        daisy = daisy_of(self)
        if daisy is not None and daisy.config.layers_past_exit != "copy":
            daisy.config = daisy.config.replace(layers_past_exit="copy")
            logger.info("DAISY inside S3PRLUpstream: layers past an exit hold copies of the exit layer")

    __init__._daisy_shim = True
    s3prl_upstream.__init__ = __init__


def patch_nn_upstream(module: types.ModuleType) -> None:
    """Applied to ``s3prl.nn.upstream`` when it is imported (idempotent)."""
    global DaisyNNFeaturizer
    if getattr(module.Featurizer, "_daisy_stock", None) is None:
        DaisyNNFeaturizer = module.Featurizer = make_featurizer_class(module.Featurizer)
    _probe_at_full_depth(module.S3PRLUpstream)


def patch_featurizer_name(module: types.ModuleType) -> None:
    """Applied to ``s3prl.nn`` and ``s3prl.problem.base`` (ESPnet and the problem recipes
    build their featurizer from those names): ``Featurizer`` becomes s3prl.nn.upstream's."""
    import s3prl.nn.upstream as nn_upstream

    patch_nn_upstream(nn_upstream)
    module.Featurizer = nn_upstream.Featurizer
