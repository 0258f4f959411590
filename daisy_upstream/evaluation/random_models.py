"""Randomly initialised checkpoints of every family, in the format its stock s3prl upstream loads.

For timing a Base-size model (``daisy bench --random-base --family F``, built in memory) and for
the tests (tiny ones; :mod:`daisy_upstream.testing` re-exports these makers). The models are
s3prl's own classes; their configs follow the public releases (sizes below) and each file has
exactly the keys the stock loader reads:

* ``hubert``: :func:`make_random_checkpoint`, s3prl's converted HuBERT format (any size).
* ``wav2vec2``: ``{task_cfg, model_cfg, model_weight}`` with the quantizer, ``project_q`` and
  ``final_proj`` (s3prl wav2vec2/convert.py:29-38 loads all of them strictly).
* ``data2vec``: the same keys plus ``model_weight["_ema"]`` as real converted files have
  (data2vec/convert.py:43 deletes it before a strict load of a model without ``final_proj``).
* ``wavlm``: ``{cfg, model}`` (wavlm/expert.py:37-40), cfg a plain dict.

Base sizes (12 layers, 768 wide, 3072 FFN, 12 heads, 512 CNN channels, kernels
``(10,5) (3,2)x4 (2,2)x2``) with each release's own settings: HuBERT Base, wav2vec 2.0 Base
(group-norm CNN, conv_pos 128/16, 2 codebooks x 320 codes, final_dim 256), data2vec Base
(layer-norm CNN, ``normalize``, conv_pos 95/16 with ``pos_conv_depth`` 5), WavLM Base+ (group-norm
CNN, gated relative position bias, 320 buckets, max distance 800). Branches are random
(:func:`sharpen_branches` makes entropy fall with depth, as in a trained model).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch

from daisy_upstream.audio.io import SAMPLE_RATE
from daisy_upstream.core.branches import ExitBranches
from daisy_upstream.core.checkpoint import FAIRSEQ_SPECIALS, build_hubert, with_branches
from daisy_upstream.core.families import get_family

__all__ = [
    "BASE_SIZES",
    "FAMILY_NAMES",
    "add_random_branches",
    "cnn_320x",
    "encoder_cfg",
    "make_random_checkpoint",
    "make_random_family_checkpoint",
    "sharpen_branches",
]

FAMILY_NAMES = ("hubert", "wav2vec2", "data2vec", "wavlm")


def make_random_checkpoint(
    *,
    num_layers: int = 2,
    embed_dim: int = 32,
    ffn_dim: int = 64,
    num_heads: int = 2,
    conv_channels: int = 32,
    conv_layers: Optional[List[Tuple[int, int, int]]] = None,
    extractor_mode: str = "default",
    layer_norm_first: bool = False,
    num_clusters: int = 20,
    final_dim: int = 16,
    conv_pos: int = 16,
    conv_pos_groups: int = 4,
    normalize: bool = False,
    branches: bool = True,
    layer_entropy: Optional[List[float]] = None,
    seed: int = 0,
) -> Dict[str, Any]:
    """A randomly initialised HuBERT-architecture checkpoint in s3prl's converted format.

    With the defaults it is tiny (for tests); ``num_layers=12, embed_dim=768, ffn_dim=3072,
    num_heads=12, conv_channels=512, conv_pos=128, conv_pos_groups=16, final_dim=256,
    num_clusters=500`` is HuBERT Base. ``conv_layers`` None: :func:`cnn_320x` (320x downsampling).
    """
    if conv_layers is None:
        conv_layers = cnn_320x(conv_channels)
    model_cfg = {
        "label_rate": 50,
        **encoder_cfg(
            num_layers=num_layers,
            embed_dim=embed_dim,
            ffn_dim=ffn_dim,
            num_heads=num_heads,
            conv_layers=conv_layers,
            extractor_mode=extractor_mode,
            layer_norm_first=layer_norm_first,
            conv_pos=conv_pos,
            conv_pos_groups=conv_pos_groups,
        ),
        "final_dim": final_dim,
        "logit_temp": 0.1,
    }
    task_cfg = {"label_rate": 50, "sample_rate": SAMPLE_RATE, "normalize": normalize, "labels": ["km"]}
    symbols = [FAIRSEQ_SPECIALS + [str(i) for i in range(num_clusters)]]
    state = {"task_cfg": task_cfg, "model_cfg": model_cfg, "dictionaries_symbols": symbols}
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model, _ = build_hubert({**state, "model_weight": {}})
        state["model_weight"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if branches:
            state = add_random_branches(state, num_layers, embed_dim, num_clusters, layer_entropy)
    finally:
        torch.random.set_rng_state(generator_state)
    return state


def cnn_320x(channels: int) -> List[Tuple[int, int, int]]:
    """The CNN of HuBERT, wav2vec 2.0, data2vec and WavLM: kernels ``(10,5) (3,2)x4 (2,2)x2``
    (20 ms frames at 16 kHz), ``channels`` wide."""
    return [(channels, 10, 5)] + [(channels, 3, 2)] * 4 + [(channels, 2, 2)] * 2


def encoder_cfg(
    *,
    num_layers: int,
    embed_dim: int,
    ffn_dim: int,
    num_heads: int,
    conv_layers: List[Tuple[int, int, int]],
    extractor_mode: str,
    layer_norm_first: bool,
    conv_pos: int,
    conv_pos_groups: int,
) -> Dict[str, Any]:
    """The ``model_cfg`` keys of the CNN and the transformer encoder that every family's fairseq
    config shares (s3prl's HubertConfig, Wav2Vec2Config, Data2VecAudioConfig, WavLMConfig), with
    dropout and layer drop off so that the model is deterministic."""
    return {
        "extractor_mode": extractor_mode,
        "encoder_layers": num_layers,
        "encoder_embed_dim": embed_dim,
        "encoder_ffn_embed_dim": ffn_dim,
        "encoder_attention_heads": num_heads,
        "layer_norm_first": layer_norm_first,
        "conv_feature_layers": repr(conv_layers),
        "conv_pos": conv_pos,
        "conv_pos_groups": conv_pos_groups,
        "encoder_layerdrop": 0.0,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "dropout_input": 0.0,
        "dropout_features": 0.0,
    }


def add_random_branches(
    state: Dict[str, Any],
    num_layers: int,
    embed_dim: int,
    num_classes: int,
    layer_entropy: Optional[List[float]] = None,
) -> Dict[str, Any]:
    """``state`` with a ``daisy`` entry of random branches (the caller's RNG draws them) and, with
    ``layer_entropy``, that calibration."""
    calibration = None
    if layer_entropy is not None:
        calibration = {"layer_entropy": [float(v) for v in layer_entropy], "dataset": "given"}
    return with_branches(state, ExitBranches(num_layers, embed_dim, num_classes), calibration)


def sharpen_branches(state: Dict[str, Any], sharpen: float = 4.0) -> Dict[str, Any]:
    """Scale branch ``k``'s (1-based) weights by ``1 + sharpen * k``, in place; returns ``state``.

    Deeper branches get sharper logits, so entropy falls with depth and utterances reach the
    threshold at different layers.
    """
    branches = state["daisy"]["branches"]
    for key, value in branches.items():
        branches[key] = value * (1.0 + sharpen * (int(key.split(".")[0]) + 1))
    return state


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
