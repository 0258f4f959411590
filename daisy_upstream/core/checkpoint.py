"""Reading DAISY checkpoints (s3prl's converted HuBERT format + a ``daisy`` entry).

Format (a ``torch.save``'d dict, loadable with ``weights_only=True``)::

    task_cfg             dict   fairseq HubertPretrainingConfig fields (s3prl converted format)
    model_cfg            dict   fairseq HubertConfig fields
    model_weight         dict   HubertModel state dict
    dictionaries_symbols list   one list of label symbols per target set (4 fairseq specials first)
    daisy                dict   (optional; absent = a plain HuBERT checkpoint)
        branches         dict   {"0.weight": (C, D), "0.bias": (C,), ..., "{L-1}.bias"}
        num_classes      int    C
        calibration      dict   (optional) {"layer_entropy": [L floats], "dataset": str, ...}
        provenance       dict   (optional) commands and settings that made it; ``backbone``:
                                the pretraining's own record (top-level ``provenance`` of a
                                checkpoint written by ``daisy pretrain-tiny``)

The authors' release layout (per-layer heads ``final_proj.{i}.weight/bias`` in
``model_weight`` instead of one ``final_proj``) is read too; those heads become the branches.
The HuBERT itself is always s3prl's own ``HubertModel``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from daisy_upstream.core.branches import ExitBranches

__all__ = [
    "DaisyCheckpoint",
    "build_hubert",
    "load_daisy_checkpoint",
    "read_checkpoint",
]

REQUIRED_KEYS = ("task_cfg", "model_cfg", "model_weight", "dictionaries_symbols")
_AUTHORS_HEAD = re.compile(r"^final_proj\.(\d+)\.(weight|bias)$")
FAIRSEQ_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


@dataclass
class DaisyCheckpoint:
    """A loaded checkpoint: s3prl's ``HubertModel`` plus what DAISY adds.

    Attributes:
        model: the frozen HuBERT (``s3prl.upstream.hubert.hubert_model.HubertModel``).
        task_cfg: its ``HubertPretrainingConfig``.
        branches: the exit branches, or None for a plain HuBERT checkpoint.
        calibration: ``{"layer_entropy": [...], "dataset": ...}`` or None.
        layout: ``"daisy"``, ``"authors"`` or ``"plain"``.
    """

    model: Any
    task_cfg: Any
    branches: Optional[ExitBranches]
    calibration: Optional[Dict[str, Any]]
    layout: str

    @property
    def num_layers(self) -> int:
        return len(self.model.encoder.layers)


def read_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with errors that say what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(
            f"cannot read {path} as a converted HuBERT checkpoint with weights_only=True "
            f"({type(error).__name__}: {error}). A fairseq checkpoint must be converted first "
            "with s3prl's s3prl.upstream.hubert.convert"
        ) from error
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(
            f"{path} is not in s3prl's converted HuBERT format: missing {missing} "
            f"(expected keys {list(REQUIRED_KEYS)})"
        )
    return state


def build_hubert(state: Dict[str, Any]):
    """An s3prl ``HubertModel`` (random weights) for a converted checkpoint's configs."""
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig
    from s3prl.upstream.utils import merge_with_parent

    task_cfg = merge_with_parent(HubertPretrainingConfig, dict(state["task_cfg"]))
    model_cfg = merge_with_parent(HubertConfig, dict(state["model_cfg"]))
    return HubertModel(model_cfg, task_cfg, state["dictionaries_symbols"]), task_cfg


def _split_authors_heads(weights: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    backbone, heads = {}, {}
    for key, value in weights.items():
        match = _AUTHORS_HEAD.match(key)
        if match:
            heads[f"{match.group(1)}.{match.group(2)}"] = value
        else:
            backbone[key] = value
    return backbone, heads


def load_daisy_checkpoint(path: Union[str, Path]) -> DaisyCheckpoint:
    """Load a DAISY, authors'-layout or plain converted HuBERT checkpoint.

    fp16-stored tensors are restored to fp32. The model is returned in eval mode with
    layerdrop off.

    Raises:
        ValueError: on a malformed file, branches whose count or width does not match the
            model, or a model state dict that does not match its config.
    """
    state = read_checkpoint(path)
    model, task_cfg = build_hubert(state)
    weights = {k: (v.float() if v.is_floating_point() else v) for k, v in state["model_weight"].items()}
    weights, authors_heads = _split_authors_heads(weights)
    num_layers = len(model.encoder.layers)
    embed_dim = model.encoder.embedding_dim
    calibration = None
    if "daisy" in state:
        daisy = state["daisy"]
        if not isinstance(daisy, dict) or "branches" not in daisy:
            raise ValueError(f"{path}: the 'daisy' entry must be a dict with 'branches'")
        branches = ExitBranches.from_state_dict(daisy["branches"], num_layers, embed_dim)
        calibration = daisy.get("calibration")
        layout = "daisy"
    elif authors_heads:
        branches = ExitBranches.from_state_dict(authors_heads, num_layers, embed_dim)
        layout = "authors"
    else:
        branches, layout = None, "plain"
    allowed_missing = {"final_proj.weight", "final_proj.bias"} if layout == "authors" else set()
    result = model.load_state_dict(weights, strict=False)
    missing = set(result.missing_keys) - allowed_missing
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path}: model_weight does not match model_cfg (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(result.unexpected_keys)[:5]})"
        )
    if calibration is not None:
        entropy = calibration.get("layer_entropy") if isinstance(calibration, dict) else None
        if not isinstance(entropy, (list, tuple)) or len(entropy) != num_layers:
            raise ValueError(
                f"{path}: daisy.calibration.layer_entropy must list {num_layers} floats, got {entropy!r}"
            )
    model.feature_grad_mult = 0.0
    model.encoder.layerdrop = 0.0
    model.eval()
    return DaisyCheckpoint(model, task_cfg, branches, calibration, layout)
