"""Reading and writing DAISY checkpoints (s3prl's converted HuBERT format + a ``daisy`` entry).

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

from daisy_upstream.atomic import atomic_path
from daisy_upstream.branches import ExitBranches

__all__ = [
    "DaisyCheckpoint",
    "atomic_torch_save",
    "half_precision",
    "build_hubert",
    "load_daisy_checkpoint",
    "make_random_checkpoint",
    "read_checkpoint",
    "with_branches",
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


def with_branches(
    state: Dict[str, Any],
    branches: ExitBranches,
    calibration: Optional[Dict[str, Any]] = None,
    provenance: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """A copy of a converted checkpoint dict with a ``daisy`` entry (branches + calibration).

    ``provenance`` (how the branches were made) is stored as ``daisy.provenance``, together
    with the backbone's own ``provenance`` entry (as ``backbone``) when ``state`` has one.
    """
    _, authors_heads = _split_authors_heads(state["model_weight"])
    out = {key: state[key] for key in REQUIRED_KEYS}
    if authors_heads:  # re-trained authors' heads replace the old ones
        out["model_weight"] = {k: v for k, v in state["model_weight"].items() if not _AUTHORS_HEAD.match(k)}
    out["daisy"] = {
        "branches": {k: v.detach().cpu().clone() for k, v in branches.state_dict().items()},
        "num_classes": branches.num_classes,
    }
    if calibration is not None:
        out["daisy"]["calibration"] = dict(calibration)
    made = dict(provenance or {})
    backbone = state.get("provenance") or (state.get("daisy") or {}).get("provenance", {}).get("backbone")
    if backbone:
        made["backbone"] = backbone
    if made:
        out["daisy"]["provenance"] = made
    return out


def half_precision(state: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of a checkpoint dict with every floating tensor stored as fp16 (for shipping).

    :func:`load_daisy_checkpoint` restores fp32 on load.
    """

    def cast(value: Any) -> Any:
        if isinstance(value, Tensor) and value.is_floating_point():
            return value.half()
        if isinstance(value, dict):
            return {k: cast(v) for k, v in value.items()}
        return value

    return {k: cast(v) if k in ("model_weight", "daisy") else v for k, v in state.items()}


def atomic_torch_save(obj: Any, path: Union[str, Path]) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename over it."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


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
    num_clusters=500`` is HuBERT Base (for timing). The CNN strides always give 320x
    downsampling (HuBERT's kernels ``(10,5) (3,2)x4 (2,2)x2``).
    """
    if conv_layers is None:
        conv_layers = [(conv_channels, 10, 5)] + [(conv_channels, 3, 2)] * 4 + [(conv_channels, 2, 2)] * 2
    model_cfg = {
        "label_rate": 50,
        "extractor_mode": extractor_mode,
        "encoder_layers": num_layers,
        "encoder_embed_dim": embed_dim,
        "encoder_ffn_embed_dim": ffn_dim,
        "encoder_attention_heads": num_heads,
        "layer_norm_first": layer_norm_first,
        "conv_feature_layers": repr(conv_layers),
        "conv_pos": conv_pos,
        "conv_pos_groups": conv_pos_groups,
        "final_dim": final_dim,
        "encoder_layerdrop": 0.0,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "dropout_input": 0.0,
        "dropout_features": 0.0,
        "logit_temp": 0.1,
    }
    task_cfg = {"label_rate": 50, "sample_rate": 16000, "normalize": normalize, "labels": ["km"]}
    symbols = [FAIRSEQ_SPECIALS + [str(i) for i in range(num_clusters)]]
    state = {"task_cfg": task_cfg, "model_cfg": model_cfg, "dictionaries_symbols": symbols}
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model, _ = build_hubert({**state, "model_weight": {}})
        state["model_weight"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if branches:
            exit_branches = ExitBranches(num_layers, embed_dim, num_clusters)
            calibration = None
            if layer_entropy is not None:
                calibration = {"layer_entropy": [float(v) for v in layer_entropy], "dataset": "given"}
            state = with_branches(state, exit_branches, calibration)
    finally:
        torch.random.set_rng_state(generator_state)
    return state
