"""Writing DAISY checkpoints: the ``daisy`` entry (branches, calibration, provenance) added
to a converted HuBERT checkpoint, and fp16 storage for shipping. The format is described in
:mod:`daisy_upstream.core.checkpoint`, which reads it."""
from __future__ import annotations

from typing import Any, Dict, Optional

from torch import Tensor

from daisy_upstream.core.branches import ExitBranches
from daisy_upstream.core.checkpoint import _AUTHORS_HEAD, REQUIRED_KEYS, _split_authors_heads

__all__ = ["half_precision", "with_branches"]


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
        "branch_input": branches.reads,  # what branch k reads (ours: hidden_states[k])
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
