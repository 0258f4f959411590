"""The file s3prl's stock ``<family>_local`` loads, made from any source (``daisy convert``).

The stock loaders are strict (s3prl upstream/*/convert.py ``load_converted_model``: every
parameter of the model built from the configs, data2vec's ``_ema`` deleted first), so what a
source lacks (``source["absent"]``: a transformers model's pretraining head) is written as
zeros of the model's shapes, data2vec's ``_ema`` as an empty dict, and all of it listed in
``source["filled"]``. Those parameters never enter the stock upstream's hidden states; when
daisy_upstream reads the file back, :func:`drop_filled` makes them absent again, so nothing
is ever computed from them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, List

import torch

from daisy_upstream.core.families import family_of_state

__all__ = ["drop_filled", "sha256_of", "source_digests", "stock_checkpoint"]


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_digests(path: Path) -> Dict[str, str]:
    """``{file name: sha256}`` of a checkpoint file, or of a folder's files (hidden ones left out), by name."""
    if path.is_file():
        return {path.name: sha256_of(path)}
    return {p.name: sha256_of(p) for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")}


def stock_checkpoint(state: Dict[str, Any], path: Path) -> Dict[str, Any]:
    """``state`` (as :func:`~daisy_upstream.core.sources.read_source` returned it from ``path``)
    as the stock upstream of its family loads it, with ``source`` recording where it came
    from: ``format``, ``path`` (absolute), ``sha256`` per file, ``filled``."""
    family = family_of_state(state, str(path))
    out = {key: state[key] for key in family.required_keys}
    if "daisy" in state:  # the stock upstream ignores it; daisy_upstream keeps the branches
        out["daisy"] = state["daisy"]
    source = dict(state.get("source") or {"format": "s3prl"})
    absent: List[str] = list(source.pop("absent", []))
    weights_key = "model" if "model" in family.required_keys else "model_weight"
    weights = dict(out[weights_key])
    if absent:
        model, _ = family.build(state)
        own = model.state_dict()
        weights.update({key: torch.zeros_like(own[key]) for key in absent})
    if family.name == "data2vec" and "_ema" not in weights:  # data2vec/convert.py deletes it before loading
        weights["_ema"] = {}
        absent.append("_ema")
    out[weights_key] = weights
    out["source"] = {**source, "path": str(path.resolve()), "sha256": source_digests(path), "filled": absent}
    return out


def drop_filled(state: Dict[str, Any]) -> Dict[str, Any]:
    """A file :func:`stock_checkpoint` wrote, with its filled parameters absent again."""
    source = state.get("source")
    filled = source.get("filled") if isinstance(source, dict) else None
    if not filled or not isinstance(filled, list):
        return state
    weights_key = "model" if "model" in state and "cfg" in state else "model_weight"
    weights = {k: v for k, v in state[weights_key].items() if k not in filled}
    absent = [key for key in filled if key != "_ema"]
    return {**state, weights_key: weights, "source": {**source, "absent": absent}}
