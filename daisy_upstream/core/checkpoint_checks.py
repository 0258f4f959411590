"""Checks of a checkpoint's content when it is loaded: one line naming the key and what was expected.

The reader (:func:`daisy_upstream.core.checkpoint.load_daisy_state`) calls both before it
builds anything from the file:

* :func:`check_structure`: ``task_cfg`` / ``model_cfg`` are mappings, ``dictionaries_symbols`` a
  list, ``model_weight`` and ``daisy.branches`` map names to tensors, and every floating tensor
  is finite (a NaN / inf branch never reaches its threshold, a NaN weight gives NaN states:
  both would run silently at full depth or produce garbage);
* :func:`check_weights_fit`: every tensor of ``model_weight`` the model has is exactly the shape
  the model built from ``model_cfg`` expects (torch would raise a size-mismatch RuntimeError).

Before the model is built (a config that asks for far more layers than the file holds would
otherwise build for minutes), :func:`check_structure` also checks ``model_cfg`` against the
weights (layer count, width, FFN width, heads) and every value of the ``daisy`` entry: its
``format_version`` (:data:`FORMAT_VERSION`; a file without one is version 1, a newer one is
refused naming what to upgrade), branch count, width and class count against the config,
``num_classes`` / ``groups`` / ``branch_input`` types and the calibration's entropies (finite,
>= 0, one per layer). :func:`check_device` is the one-line answer to a device this machine lacks.
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, Mapping, Optional

import torch
from torch import Tensor

__all__ = [
    "FORMAT_VERSION",
    "check_device",
    "check_format_version",
    "checked_to",
    "check_structure",
    "check_weights_fit",
]

#: the DAISY checkpoint format this release writes (``daisy.format_version``) and reads up to
FORMAT_VERSION = 1
_LAYER_KEY = re.compile(r"^encoder\.layers\.(\d+)\.")
_BRANCH_KEY = re.compile(r"^(\d+)\.(weight|bias)$")
#: model_cfg fields checked against the weights: field -> (weight of layer 0, its dim that gives it)
_CONFIG_SHAPES = {
    "encoder_embed_dim": ("encoder.layers.0.self_attn.k_proj.weight", 0),
    "encoder_ffn_embed_dim": ("encoder.layers.0.fc1.weight", 0),
}


def check_device(device: Any) -> torch.device:
    """``device`` as a ``torch.device`` this machine has, else one line saying what to use.

    Raises:
        ValueError: not a torch device, or CUDA / MPS / that CUDA index unavailable here.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine; use device='cpu'")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"device {device!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available on this machine; use device='cpu'")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r}: daisy runs on cpu, cuda or mps")
    return parsed


def checked_to(module: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.nn.Module:
    """``module.to(...)`` (``nn.Module.to``), with a device this machine lacks answered by
    :func:`check_device` in one line instead of torch's own error."""
    for value in (kwargs.get("device"), *args):
        if isinstance(value, (str, torch.device)):
            check_device(value)
    return torch.nn.Module.to(module, *args, **kwargs)


def check_format_version(daisy: Mapping[str, Any], name: str) -> int:
    """The ``daisy`` entry's ``format_version`` (absent: 1, the files written before it existed).

    Raises:
        ValueError: not a positive integer, or newer than this release reads.
    """
    version = daisy.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{name}: daisy.format_version is {version!r}; expected an integer >= 1")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{name}: written in DAISY checkpoint format {version}, this daisy_upstream reads up to "
            f"{FORMAT_VERSION}; upgrade daisy_upstream (pip install -U daisy_upstream) to read it"
        )
    return version


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_config(state: Mapping[str, Any], weights: Mapping[str, Any], name: str) -> Optional[Dict[str, int]]:
    """``model_cfg`` (``cfg`` for WavLM) against the weights, before anything is built.

    Returns:
        the layer count and width the config gives (None where it has no such field).
    """
    key = "model_cfg" if "model_cfg" in state else "cfg"
    cfg = state.get(key)
    if not isinstance(cfg, Mapping):
        return None
    for field in ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads"):
        if field in cfg and not _positive_int(cfg[field]):
            raise ValueError(f"{name}: {key}.{field} is {cfg[field]!r}; expected an integer >= 1")
    layers = {int(m.group(1)) for k in weights if (m := _LAYER_KEY.match(str(k)))}
    if "encoder_layers" in cfg and layers and cfg["encoder_layers"] != max(layers) + 1:
        raise ValueError(
            f"{name}: {key}.encoder_layers is {cfg['encoder_layers']}, but the weights hold "
            f"{max(layers) + 1} layer(s) (encoder.layers.0..{max(layers)}): weights and config of different models?"
        )
    for field, (weight_key, dim) in _CONFIG_SHAPES.items():
        value = weights.get(weight_key)
        if field in cfg and isinstance(value, Tensor) and value.dim() == 2 and value.shape[dim] != cfg[field]:
            raise ValueError(
                f"{name}: {key}.{field} is {cfg[field]}, but {weight_key} has shape {tuple(value.shape)}: "
                "weights and config of different models?"
            )
    heads, width = cfg.get("encoder_attention_heads"), cfg.get("encoder_embed_dim")
    if heads is not None and width is not None and width % heads:
        raise ValueError(f"{name}: {key}.encoder_embed_dim {width} is not divisible by encoder_attention_heads {heads}")
    return {"layers": cfg.get("encoder_layers"), "width": width}


def _finite_entropy(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _check_daisy_entry(daisy: Mapping[str, Any], model: Optional[Dict[str, int]], name: str) -> None:
    """Every value of the ``daisy`` entry: version, types, and the branches against the config."""
    check_format_version(daisy, name)
    branches = daisy["branches"]
    for field in ("num_classes", "groups"):
        if field in daisy and not _positive_int(daisy[field]):
            raise ValueError(f"{name}: daisy.{field} is {daisy[field]!r}; expected an integer >= 1")
    if "branch_input" in daisy and not isinstance(daisy["branch_input"], str):
        raise ValueError(f"{name}: daisy.branch_input is {daisy['branch_input']!r}; expected a name")
    bad = sorted(str(k) for k in branches if not _BRANCH_KEY.match(str(k)))
    if bad:
        raise ValueError(f"{name}: daisy.branches holds {bad[0]!r}; expected 'K.weight' / 'K.bias' keys")
    count = len({str(k).split(".")[0] for k in branches})
    weight = branches.get("0.weight")
    layers, width = (model or {}).get("layers"), (model or {}).get("width")
    if layers is not None and count != layers:
        raise ValueError(f"{name}: daisy.branches has {count} branches but the model has {layers} layers (its config)")
    if width is not None and isinstance(weight, Tensor) and weight.dim() == 2 and weight.shape[1] != width:
        raise ValueError(
            f"{name}: daisy.branches['0.weight'] reads {weight.shape[1]} features; the config gives width {width}"
        )
    classes, groups = daisy.get("num_classes"), daisy.get("groups", 1)
    if classes is not None and isinstance(weight, Tensor) and weight.dim() == 2 and weight.shape[0] != classes * groups:
        raise ValueError(
            f"{name}: daisy.num_classes is {classes} (x {groups} group(s)), but the branches have "
            f"{weight.shape[0]} outputs"
        )
    calibration = daisy.get("calibration")
    if calibration is not None and not isinstance(calibration, Mapping):
        raise ValueError(f"{name}: daisy.calibration must be a mapping, got {type(calibration).__name__}")
    entropy = calibration.get("layer_entropy") if isinstance(calibration, Mapping) else None
    if isinstance(entropy, (list, tuple)):
        for k, value in enumerate(entropy):
            if not _finite_entropy(value):
                raise ValueError(
                    f"{name}: daisy.calibration.layer_entropy[{k}] is {value!r}; expected a finite number >= 0"
                )
        if layers is not None and len(entropy) != layers:
            raise ValueError(f"{name}: daisy.calibration.layer_entropy must list {layers} floats, got {len(entropy)}")


def _check_tensors(tensors: Any, where: str, name: str) -> None:
    if not isinstance(tensors, Mapping):
        raise ValueError(f"{name}: {where} must map parameter names to tensors, got {type(tensors).__name__}")
    for key, value in tensors.items():
        if isinstance(value, Mapping):  # a nested state (data2vec keeps its EMA teacher under '_ema')
            _check_tensors(value, f"{where}[{key!r}]", name)
            continue
        if not isinstance(value, Tensor):
            raise ValueError(f"{name}: {where}[{key!r}] must be a tensor, got {type(value).__name__}")
        if value.is_floating_point() and value.numel() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise ValueError(
                f"{name}: {where}[{key!r}] holds {bad} NaN/inf of {value.numel()} values; expected "
                "finite weights (the file is damaged: re-download, re-convert or re-train it)"
            )


def check_structure(state: Mapping[str, Any], weights: Any, name: str = "checkpoint") -> str:
    """The types of a checkpoint dict's entries and the finiteness of its tensors.

    Args:
        state: the file's dict (s3prl's converted format of the model's family).
        weights: its model state dict, wherever the family keeps it (``model_weight`` for HuBERT,
            wav2vec 2.0 and data2vec, whose EMA teacher under ``_ema`` is checked too; ``model``
            for WavLM).

    Returns:
        the key the weights sit under (for :func:`check_weights_fit`'s messages).

    Raises:
        ValueError: one line naming the key and what was expected.
    """
    for key in ("task_cfg", "model_cfg", "cfg"):
        if key in state and not isinstance(state[key], Mapping):
            raise ValueError(f"{name}: {key} must be a mapping of config fields, got {type(state[key]).__name__}")
    symbols = state.get("dictionaries_symbols", [])
    if not isinstance(symbols, (list, tuple)) or not all(isinstance(s, (list, tuple)) for s in symbols):
        raise ValueError(f"{name}: dictionaries_symbols must be a list of symbol lists, got {type(symbols).__name__}")
    where = next((k for k, v in state.items() if v is weights), "model weights")
    _check_tensors(weights, where, name)
    daisy = state.get("daisy")
    if isinstance(daisy, Mapping) and "branches" in daisy:
        branches = daisy["branches"]
        _check_tensors(branches, "daisy.branches", name)
        first = {part: branches.get(f"0.{part}") for part in ("weight", "bias")}
        for key, value in branches.items():
            part = key.split(".", 1)[-1]
            expected = first.get(part)
            if expected is not None and value.shape != expected.shape:
                raise ValueError(
                    f"{name}: daisy.branches[{key!r}] has shape {tuple(value.shape)}; expected "
                    f"{tuple(expected.shape)} like branch 0 (one (C, D) weight and (C,) bias per layer)"
                )
        weight, bias = first["weight"], first["bias"]
        if weight is not None and (weight.dim() != 2 or bias is None or tuple(bias.shape) != (weight.shape[0],)):
            raise ValueError(
                f"{name}: daisy.branches['0.weight'] / ['0.bias'] have shapes "
                f"{tuple(weight.shape)} / {None if bias is None else tuple(bias.shape)}; expected (C, D) / (C,)"
            )
    model = _check_config(state, weights, name) if isinstance(weights, Mapping) else None
    if isinstance(daisy, Mapping) and "branches" in daisy:
        _check_daisy_entry(daisy, model, name)
    return where


def check_weights_fit(
    model: torch.nn.Module, weights: Dict[str, Tensor], name: str = "checkpoint", where: str = "model_weight"
) -> None:
    """Every tensor of ``weights`` the model has must have the model's shape (from ``model_cfg``).

    Raises:
        ValueError: one line naming the first mismatching key, its shape and the expected one.
    """
    own = model.state_dict()
    for key, value in weights.items():
        if key in own and tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(
                f"{name}: {where}[{key!r}] has shape {tuple(value.shape)}; the config gives "
                f"{tuple(own[key].shape)} (weights and config of different models?)"
            )
