"""Stage 1's resumable state: ``<work_dir>/state.pt``, the batch order and the RNG states.

The state holds the branches, the AdamW state, the step, epoch and position in the epoch's
batch order, the CPU and Python RNG states and the evaluation history. No CUDA RNG state is
kept: nothing in stage 1 draws from it (the branches are initialised on the CPU, noise comes
from seeded numpy generators, the backbone runs in eval mode), and a list of every visible
GPU's state would not load on a machine with fewer GPUs; one saved by an older version is
ignored. The batch order of epoch ``e`` is a
permutation seeded by ``(seed, e)``, so a run stopped at step N and resumed ends with exactly
the same weights as an uninterrupted one. A state is only resumed by a run whose
*fingerprint* (the settings and data that shape training) is the same.
"""

from __future__ import annotations

import contextlib
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch
from torch import nn

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.outputs import claim_working_folder, locked_folder

from .distributed import barrier
from .stage1_config import Stage1Config

__all__ = [
    "RESUME_SETTINGS",
    "STATE_FILE",
    "STATE_FORMAT",
    "claim_work_dir",
    "holds_a_state",
    "Progress",
    "epoch_order",
    "load_state",
    "save_state",
]

STATE_FILE = "state.pt"
STATE_FORMAT = "daisy-stage1-state-v1"
#: settings outside the fingerprint that a resume still checks (they change how long it trains,
#: when it evaluates, what it reports): a resume with others is refused unless told otherwise
RESUME_SETTINGS = ("max_steps", "epochs", "eval_every", "rhos")


@dataclass
class Progress:
    """Where training stands: optimizer ``step``, ``epoch``, ``position`` in the epoch's order.

    ``position`` counts the batches of this rank's epoch order already trained on (it advances
    only after a step, so an interrupt before the step redoes the batch). ``history`` holds
    the held-out evaluations so far.
    """

    step: int = 0
    epoch: int = 0
    position: int = 0
    history: List[Dict[str, Any]] = field(default_factory=list)


def epoch_order(num_batches: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> List[int]:
    """This rank's batch indices for ``epoch``: a seeded permutation, every ``world``-th entry.

    All ranks get the same number of batches (the tail that does not divide is dropped).
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_batches, generator=generator).tolist()
    per_rank = len(order) // world
    return order[rank::world][:per_rank]


def save_state(
    path: Path,
    fingerprint: Dict[str, Any],
    progress: Progress,
    branches: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: Stage1Config,
) -> None:
    """Write the state atomically (with the current RNG states)."""
    atomic_torch_save(
        {
            "format": STATE_FORMAT,
            "fingerprint": fingerprint,
            "step": progress.step,
            "epoch": progress.epoch,
            "position": progress.position,
            "branches": {k: v.detach().cpu() for k, v in branches.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "rng": _rng_state(),
            "history": progress.history,
            "config": config.as_dict(),
        },
        path,
    )


def _read(path: Path) -> Dict[str, Any]:
    """The saved state, or one line saying the file is not one."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a user's file of that name, a state cut short
        raise ValueError(
            f"{path} is not a train-branches state ({type(error).__name__}); use another --work-dir"
        ) from error
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a train-branches state; use another work directory")
    return saved


def _check_resume_settings(path: Path, saved: Dict[str, Any], config: Stage1Config, resume_anyway: bool) -> None:
    """Refuse a resume whose :data:`RESUME_SETTINGS` differ from the saved run's, unless told."""
    before, now = saved.get("config") or {}, config.as_dict()
    differ = [k for k in RESUME_SETTINGS if k in before and before[k] != now[k]]
    if differ and not resume_anyway:
        detail = ", ".join(f"{k}: saved {before[k]!r} now {now[k]!r}" for k in differ)
        raise ValueError(
            f"{path} was saved by a run with other settings ({detail}); run with the saved ones, "
            "pass --resume-anyway to continue with the new ones, or use another --work-dir"
        )


def load_state(
    path: Path,
    fingerprint: Dict[str, Any],
    branches: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: Optional[Stage1Config] = None,
    resume_anyway: bool = False,
) -> Optional[Progress]:
    """Restore ``branches``, ``optimizer`` and the RNG states from ``path``; None if no state.

    Raises:
        ValueError: ``path`` is not a stage-1 state, or was saved with another fingerprint,
            or (``config`` given, ``resume_anyway`` not) with other :data:`RESUME_SETTINGS`.
    """
    if not path.exists():
        return None
    saved = _read(path)
    keys = set(fingerprint) | set(saved["fingerprint"])
    differ = sorted(k for k in keys if saved["fingerprint"].get(k) != fingerprint.get(k))
    if differ:
        detail = ", ".join(f"{k}: saved {saved['fingerprint'].get(k)!r} now {fingerprint.get(k)!r}" for k in differ)
        raise ValueError(
            f"{path} was saved by a run with other settings or data ({detail}); "
            "use another work directory, or the same settings to resume"
        )
    if config is not None:
        _check_resume_settings(path, saved, config, resume_anyway)
    branches.load_state_dict(saved["branches"])
    optimizer.load_state_dict(saved["optimizer"])
    _set_rng_state(saved["rng"])
    return Progress(int(saved["step"]), int(saved["epoch"]), int(saved["position"]), list(saved.get("history", [])))


def holds_a_state(work_dir: Path) -> bool:
    """Whether ``work_dir`` holds a train-branches state (a work dir made before they were claimed)."""
    try:
        saved = torch.load(work_dir / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - anything that is not a state: not ours
        return False
    return isinstance(saved, dict) and saved.get("format") == STATE_FORMAT


@contextlib.contextmanager
def claim_work_dir(
    work_dir: Path, inputs: Sequence[Any], is_main: bool, world: int, worth_keeping: Sequence[str] = (STATE_FILE,)
) -> Iterator[None]:
    """Claim ``work_dir`` as train-branches' own and hold its lock (rank 0) while training.

    A work dir this call made is removed again when the call fails before it saved anything
    worth resuming (a file named in ``worth_keeping``: the state, the k-means fit).
    """
    fresh = not work_dir.exists()
    with contextlib.ExitStack() as stack:
        try:
            if is_main:
                claim_working_folder(work_dir, "train-branches", inputs, made_before=holds_a_state, flag="--work-dir")
                stack.enter_context(locked_folder(work_dir, "train-branches", "--work-dir"))
        finally:
            barrier(world)
        try:
            yield
        except BaseException:
            if is_main and fresh and not any((work_dir / name).exists() for name in worth_keeping):
                stack.close()  # the lock first
                shutil.rmtree(work_dir, ignore_errors=True)
            raise


def _rng_state() -> Dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def _set_rng_state(state: Dict[str, Any]) -> None:
    """The CPU and Python states; an old state's ``"cuda"`` list (one per GPU then) is ignored."""
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))


def _as_tuple(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value
