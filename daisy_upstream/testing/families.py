"""Randomly initialised checkpoints of every family, in the format its stock s3prl upstream loads.

For tests (tiny) and for timing a Base-size model (``daisy bench --random-base --family F``).
The models are s3prl's own classes; their configs follow the public releases (sizes below)
and each file has exactly the keys the stock loader reads:

* ``hubert``: :func:`daisy_upstream.testing.checkpoints.make_random_checkpoint`.
* ``wav2vec2``: ``{task_cfg, model_cfg, model_weight}`` with the quantizer, ``project_q`` and
  ``final_proj`` (s3prl wav2vec2/convert.py:29-38 loads all of them strictly).
* ``data2vec``: the same keys plus ``model_weight["_ema"]`` as real converted files have
  (data2vec/convert.py:43 deletes it before a strict load of a model without ``final_proj``).
* ``wavlm``: ``{cfg, model}`` (wavlm/expert.py:37-40), cfg a plain dict.

Base sizes (12 layers, 768 wide, 3072 FFN, 12 heads, 512 CNN channels, kernels
``(10,5) (3,2)x4 (2,2)x2``) with each release's own settings: wav2vec 2.0 Base (group-norm
CNN, conv_pos 128/16, 2 codebooks x 320 codes, final_dim 256), data2vec Base (layer-norm CNN,
``normalize``, conv_pos 95/16 with ``pos_conv_depth`` 5), WavLM Base+ (group-norm CNN,
gated relative position bias, 320 buckets, max distance 800).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from daisy_upstream.audio.io import SAMPLE_RATE
from daisy_upstream.core.families import get_family
from daisy_upstream.testing.checkpoints import add_random_branches, cnn_320x, encoder_cfg, make_random_checkpoint

__all__ = ["BASE_SIZES", "FAMILY_NAMES", "FAMILY_VARIANTS", "make_random_family_checkpoint"]

FAMILY_NAMES = ("hubert", "wav2vec2", "data2vec", "wavlm")

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
BASE_SIZES: Dict[str, Dict[str, Any]] = {
    "hubert": dict(extractor_mode="default", conv_pos=128, conv_pos_groups=16),
    "wav2vec2": dict(extractor_mode="default", conv_pos=128, conv_pos_groups=16),
    "data2vec": dict(extractor_mode="layer_norm", normalize=True, conv_pos=95, conv_pos_groups=16, pos_conv_depth=5),
    "wavlm": dict(extractor_mode="default", conv_pos=128, conv_pos_groups=16, num_buckets=320, max_distance=800),
}
BASE_SIZE = dict(num_layers=12, embed_dim=768, ffn_dim=3072, num_heads=12, conv_channels=512)


def make_random_family_checkpoint(
    family: str,
    *,
    base: bool = False,
    num_layers: int = 2,
    embed_dim: int = 32,
    ffn_dim: int = 64,
    num_heads: int = 2,
    conv_channels: int = 32,
    extractor_mode: str = "default",
    layer_norm_first: bool = False,
    normalize: bool = False,
    conv_pos: int = 16,
    conv_pos_groups: int = 4,
    pos_conv_depth: int = 1,
    relative_position_embedding: bool = True,
    gru_rel_pos: bool = True,
    num_buckets: int = 16,
    max_distance: int = 40,
    layer_type: str = "transformer",
    num_classes: int = 20,
    branches: bool = True,
    layer_entropy: Optional[List[float]] = None,
    seed: int = 0,
) -> Dict[str, Any]:
    """A random checkpoint of ``family`` (tiny by default; ``base=True``: the family's Base).

    ``pos_conv_depth`` applies to wav2vec2 / data2vec; ``relative_position_embedding``,
    ``gru_rel_pos``, ``num_buckets``, ``max_distance`` to WavLM; ``layer_type`` to wav2vec2 /
    data2vec (``conformer`` builds a model the loop refuses). With ``branches``, a ``daisy``
    entry with random branches of ``num_classes`` classes (and ``layer_entropy`` as its
    calibration) is added. The caller's RNG is left as it was.
    """
    get_family(family)  # a bad name fails with the known ones
    if base:
        sizes = {**BASE_SIZE, **BASE_SIZES[family]}
        return make_random_family_checkpoint(
            family,
            **{**sizes, "num_classes": num_classes, "branches": branches, "layer_entropy": layer_entropy, "seed": seed},
        )
    if family == "hubert":
        return make_random_checkpoint(
            num_layers=num_layers,
            embed_dim=embed_dim,
            ffn_dim=ffn_dim,
            num_heads=num_heads,
            conv_channels=conv_channels,
            extractor_mode=extractor_mode,
            layer_norm_first=layer_norm_first,
            conv_pos=conv_pos,
            conv_pos_groups=conv_pos_groups,
            normalize=normalize,
            num_clusters=num_classes,
            final_dim=16 if embed_dim < 256 else 256,
            branches=branches,
            layer_entropy=layer_entropy,
            seed=seed,
        )
    model_cfg: Dict[str, Any] = encoder_cfg(
        num_layers=num_layers,
        embed_dim=embed_dim,
        ffn_dim=ffn_dim,
        num_heads=num_heads,
        conv_layers=cnn_320x(conv_channels),
        extractor_mode=extractor_mode,
        layer_norm_first=layer_norm_first,
        conv_pos=conv_pos,
        conv_pos_groups=conv_pos_groups,
    )
    if family == "wavlm":
        model_cfg.update(
            relative_position_embedding=relative_position_embedding,
            gru_rel_pos=gru_rel_pos,
            num_buckets=num_buckets,
            max_distance=max_distance,
            normalize=normalize,
        )
        state: Dict[str, Any] = {"cfg": model_cfg}
    else:
        model_cfg.update(
            _name="wav2vec2" if family == "wav2vec2" else "data2vec_audio",
            pos_conv_depth=pos_conv_depth,
            layer_type=layer_type,
        )
        if family == "wav2vec2":  # Base: 2 codebooks x 320 codes, final_dim 256 (tiny: 2 x 8, 16)
            small = embed_dim < 256
            model_cfg.update(
                quantize_targets=True,
                latent_vars=8 if small else 320,
                latent_groups=2,
                final_dim=16 if small else 256,
                logit_temp=0.1,
            )
        else:
            model_cfg.update(average_top_k_layers=min(8, num_layers), ema_decay=0.999)
        state = {
            "task_cfg": {"_name": "audio_pretraining", "sample_rate": SAMPLE_RATE, "normalize": normalize},
            "model_cfg": model_cfg,
        }
    fam = get_family(family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, _ = fam.build(state)
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if family == "wavlm":
            state["model"] = weights
        else:
            if family == "data2vec":  # the EMA teacher's weights, as real files carry them
                weights["_ema"] = {k: v.clone() for k, v in list(weights.items())[:2]}
            state["model_weight"] = weights
        if branches:
            state = add_random_branches(state, num_layers, embed_dim, num_classes, layer_entropy)
    return state
