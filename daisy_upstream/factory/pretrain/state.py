"""The resumable training state (one file, written atomically, latest only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from daisy_upstream.atomic import atomic_write_text

from .checkpoint import atomic_torch_save

__all__ = ["STATE_FILE", "LOG_FILE", "save_state", "load_state", "compact_optimizer", "expand_optimizer", "write_log"]

STATE_FILE = "state.pt"
LOG_FILE = "log.json"


def compact_optimizer(opt_state: Dict[str, Any]) -> Dict[str, Any]:
    """Store Adam moments in bfloat16 (halves the state size; resume is then near-exact)."""
    out = {"param_groups": opt_state["param_groups"], "state": {}}
    for k, v in opt_state["state"].items():
        out["state"][k] = {
            n: (t.to(torch.bfloat16) if torch.is_tensor(t) and t.is_floating_point() and t.dim() > 0 else t)
            for n, t in v.items()
        }
    return out


def expand_optimizer(opt_state: Dict[str, Any]) -> Dict[str, Any]:
    """Inverse of :func:`compact_optimizer` (no-op on an fp32 state)."""
    out = {"param_groups": opt_state["param_groups"], "state": {}}
    for k, v in opt_state["state"].items():
        out["state"][k] = {
            n: (t.float() if torch.is_tensor(t) and t.dtype == torch.bfloat16 else t) for n, t in v.items()
        }
    return out


def save_state(state: Dict[str, Any], state_dir: Path) -> Path:
    """Write ``state`` to ``state_dir/state.pt`` atomically and its log to ``log.json``."""
    state_dir = Path(state_dir)
    path = state_dir / STATE_FILE
    atomic_torch_save(state, path)
    write_log(state.get("log", []), state.get("meta", {}), state_dir / LOG_FILE)
    return path


def load_state(state_dir: Path) -> Optional[Dict[str, Any]]:
    """The saved state, or ``None`` when ``state_dir`` holds none."""
    path = Path(state_dir) / STATE_FILE
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def write_log(log, meta: Dict[str, Any], path: Path) -> None:
    """Write the training log (a list of dicts) and run metadata as JSON, atomically."""
    atomic_write_text(path, json.dumps({"meta": meta, "log": log}, indent=0) + "\n")
