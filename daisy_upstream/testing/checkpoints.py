"""Checkpoints for tests and timing: random HuBERT-architecture checkpoints in s3prl's
converted format (any size, HuBERT Base for timing), branches sharpened with depth, and the
layout of the authors' release."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch

from daisy_upstream.audio.io import SAMPLE_RATE
from daisy_upstream.core.branches import ExitBranches
from daisy_upstream.core.checkpoint import FAIRSEQ_SPECIALS, TEACHER_KEYS, build_hubert, with_branches

__all__ = [
    "ABSENT",
    "add_random_branches",
    "authors_layout",
    "cnn_320x",
    "encoder_cfg",
    "make_random_checkpoint",
    "sharpen_branches",
]


#: pass as ``cls_pred_position`` for a ``model_cfg`` without the key
ABSENT = None


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


def authors_layout(
    state: Dict[str, Any],
    cls_pred_position: Optional[str] = ABSENT,
    num_classes: int = 24,
    sharpen: float = 4.0,
    seed: int = 1,
) -> Dict[str, Any]:
    """The authors' release layout (DAISY, Lin, Lee & Tang) of a :func:`make_random_checkpoint`
    state, its backbone weights kept.

    Facts it is built to (issue 13, from the authors' ``HubertModel`` class and how their code
    loads its checkpoints):

    * the file is s3prl's converted HuBERT format (``task_cfg``, ``model_cfg``, ``model_weight``,
      ``dictionaries_symbols``), loaded strictly into their own ``HubertModel``;
    * that class has no ``label_embs_concat`` parameter at all, and its ``final_proj`` is a
      ModuleList of ``L`` ``Linear(D, final_dim)`` heads, ``final_dim`` being the number of
      classes: ``model_weight`` has ``final_proj.{i}.weight`` ``(C, D)`` and
      ``final_proj.{i}.bias`` ``(C,)`` for ``i = 0..L-1`` and no ``final_proj.weight/bias``;
    * ``model_cfg`` may carry ``cls_pred_position``: ``'before-norm'`` (the class default) makes
      head ``i`` read layer ``i``'s FFN output (fc2, before dropout, the residual add and any
      LayerNorm), ``'after-norm'`` the layer's output.

    Any ``daisy`` entry, ``final_proj`` and ``label_embs_concat`` are dropped; ``L`` random
    heads are added, head ``i``'s logits scaled by ``1 + sharpen * (i + 1)`` so that entropy
    falls with depth and exits vary; ``model_cfg.final_dim`` becomes ``num_classes``.
    """
    weights = {k: v for k, v in state["model_weight"].items() if k not in TEACHER_KEYS}
    model_cfg = dict(state["model_cfg"], final_dim=num_classes)
    if cls_pred_position is not None:
        model_cfg["cls_pred_position"] = cls_pred_position
    num_layers, width = int(model_cfg["encoder_layers"]), int(model_cfg["encoder_embed_dim"])
    generator = torch.Generator().manual_seed(seed)
    for i in range(num_layers):
        scale = (1.0 + sharpen * (i + 1)) / width**0.5
        weights[f"final_proj.{i}.weight"] = scale * torch.randn(num_classes, width, generator=generator)
        weights[f"final_proj.{i}.bias"] = 0.1 * torch.randn(num_classes, generator=generator)
    out = {key: state[key] for key in ("task_cfg", "dictionaries_symbols")}
    out.update(model_cfg=model_cfg, model_weight=weights)
    return out
