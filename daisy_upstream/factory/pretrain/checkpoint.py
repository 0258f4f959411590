"""s3prl's converted HuBERT checkpoint format (atomic saving is daisy_upstream.core.checkpoint's)."""

from __future__ import annotations

import copy
import os
from typing import Any, Dict, Optional, Tuple, Union

import torch
from s3prl.upstream.hubert.convert import load_converted_model
from s3prl.upstream.hubert.hubert_model import HubertModel

from daisy_upstream.atomic import atomic_torch_save

from .model import SPECIAL_SYMBOLS

__all__ = ["save_converted", "load_converted", "atomic_torch_save"]

PathLike = Union[str, os.PathLike]


def save_converted(
    model: HubertModel,
    model_cfg: Dict[str, Any],
    task_cfg: Dict[str, Any],
    num_clusters: int,
    path: PathLike,
    provenance: Optional[Dict[str, Any]] = None,
) -> None:
    """Write ``model`` in s3prl's converted HuBERT format.

    The file is a dict with ``task_cfg``, ``model_cfg`` (plain dicts), ``model_weight``
    (the state dict, fp32 CPU tensors), ``dictionaries_symbols`` (one list: fairseq's four
    specials then ``"0" .. str(num_clusters-1)``) and, if given, ``provenance`` (how it was
    made; s3prl ignores it, ``daisy train-branches`` carries it on). It loads with
    ``s3prl.upstream.hubert.convert.load_converted_model`` and ``hubert_local(ckpt=path)``.
    """
    rows = model.label_embs_concat.shape[0]
    if rows != num_clusters + len(SPECIAL_SYMBOLS):
        raise ValueError(f"label_embs_concat has {rows} rows, expected {num_clusters + 4}")
    state = {
        "task_cfg": copy.deepcopy(dict(task_cfg)),
        "model_cfg": copy.deepcopy(dict(model_cfg)),
        "model_weight": {k: v.detach().to("cpu", torch.float32).clone() for k, v in model.state_dict().items()},
        "dictionaries_symbols": [list(SPECIAL_SYMBOLS) + [str(i) for i in range(num_clusters)]],
    }
    if provenance is not None:
        state["provenance"] = copy.deepcopy(provenance)
    atomic_torch_save(state, path)


def load_converted(path: PathLike) -> Tuple[HubertModel, Any]:
    """Load a converted checkpoint with s3prl's own loader; returns ``(model, task_cfg)``."""
    return load_converted_model(str(path))
