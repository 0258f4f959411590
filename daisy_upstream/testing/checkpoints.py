"""Checkpoints for tests: the layout of the authors' release; the random HuBERT-architecture
checkpoints and branches sharpened with depth come from
:mod:`daisy_upstream.evaluation.random_models` (re-exported here)."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from daisy_upstream.core.checkpoint import TEACHER_KEYS
from daisy_upstream.evaluation.random_models import (
    add_random_branches,
    cnn_320x,
    encoder_cfg,
    make_random_checkpoint,
    sharpen_branches,
)

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
