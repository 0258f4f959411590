"""The architecture variants the family tests cover; the random checkpoints of every family
themselves are made by :mod:`daisy_upstream.evaluation.random_models` (re-exported here)."""

from __future__ import annotations

from typing import Dict

from daisy_upstream.evaluation.random_models import BASE_SIZES, FAMILY_NAMES, make_random_family_checkpoint

__all__ = ["BASE_SIZES", "FAMILY_NAMES", "FAMILY_VARIANTS", "make_random_family_checkpoint"]

#: keyword arguments of :func:`make_random_family_checkpoint` that give each family's Base
#: the architecture variants the family tests cover, ``name -> (family, make_random_family_checkpoint
#: kwargs)``: what FAMILY_NOTES.md (s3prl 0.4.18) lists as differing between families: pre-LN
#: (``layer_norm_first``), the layer-norm CNN, ``normalize``, data2vec's ``pos_conv_depth`` > 1
#: and WavLM's gated relative position bias (computed by layer 0, passed on)
FAMILY_VARIANTS: Dict[str, tuple] = {
    "wav2vec2-base": ("wav2vec2", {}),
    "wav2vec2-large": ("wav2vec2", dict(layer_norm_first=True, extractor_mode="layer_norm", normalize=True)),
    "data2vec-base": ("data2vec", dict(extractor_mode="layer_norm", normalize=True, pos_conv_depth=3)),
    "wavlm-base-plus": ("wavlm", {}),  # gated relative position bias
    "wavlm-large": ("wavlm", dict(layer_norm_first=True, extractor_mode="layer_norm", normalize=True)),
    "wavlm-no-relpos": ("wavlm", dict(relative_position_embedding=False)),
    "hubert-base": ("hubert", {}),
}
