"""DAISY in s3prl's newer API: ``s3prl.nn.S3PRLUpstream`` + ``s3prl.nn.Featurizer``.

That is the route of s3prl's problem recipes (``s3prl/problem/base.py``) and of ESPnet's
``S3prlFrontend``. Nobody's code changes: :mod:`daisy_upstream.integration.plugin` applies
:func:`patch_nn_upstream` when ``s3prl.nn.upstream`` is imported and re-points the names
``s3prl.nn.Featurizer`` and ``s3prl.problem.base.Featurizer`` (ESPnet imports it from
``s3prl.nn`` when it builds the frontend) to
:class:`daisy_upstream.core.featurizers.s3prl_nn.DaisyNNFeaturizer`.

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

from daisy_upstream.core.expert import DaisyUpstream
from daisy_upstream.core.featurizers.s3prl_nn import daisy_of, install_featurizer_class

__all__ = ["patch_featurizer_name", "patch_nn_upstream"]

logger = logging.getLogger(__name__)


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
    module.Featurizer = install_featurizer_class(module.Featurizer)
    _probe_at_full_depth(module.S3PRLUpstream)


def patch_featurizer_name(module: types.ModuleType) -> None:
    """Applied to ``s3prl.nn`` and ``s3prl.problem.base`` (ESPnet and the problem recipes
    build their featurizer from those names): ``Featurizer`` becomes s3prl.nn.upstream's."""
    import s3prl.nn.upstream as nn_upstream

    patch_nn_upstream(nn_upstream)
    module.Featurizer = nn_upstream.Featurizer
