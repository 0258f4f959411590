"""Checks of a checkpoint's content when it is loaded: one line naming the key and what was expected.

The reader (:func:`daisy_upstream.core.checkpoint.load_daisy_state`) calls both before it
builds anything from the file:

* :func:`check_structure`: ``task_cfg`` / ``model_cfg`` are mappings, ``dictionaries_symbols`` a
  list, ``model_weight`` and ``daisy.branches`` map names to tensors, and every floating tensor
  is finite (a NaN / inf branch never reaches its threshold, a NaN weight gives NaN states:
  both would run silently at full depth or produce garbage);
* :func:`check_weights_fit`: every tensor of ``model_weight`` the model has is exactly the shape
  the model built from ``model_cfg`` expects (torch would raise a size-mismatch RuntimeError).

Branch shapes against the model (count, width, per-layer class count) are checked by
:meth:`daisy_upstream.core.branches.ExitBranches.from_state_dict` and here (each weight / bias
against branch 0's).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import torch
from torch import Tensor

__all__ = ["check_structure", "check_weights_fit"]


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
        calibration = daisy.get("calibration")
        entropy = calibration.get("layer_entropy") if isinstance(calibration, Mapping) else None
        if isinstance(entropy, (list, tuple)):
            for k, value in enumerate(entropy):
                if (
                    not isinstance(value, (int, float))
                    or isinstance(value, bool)
                    or value != value
                    or value in (float("inf"), float("-inf"))
                ):
                    raise ValueError(
                        f"{name}: daisy.calibration.layer_entropy[{k}] is {value!r}; expected a finite number"
                    )
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
