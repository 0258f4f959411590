"""Process group and device for training under ``torchrun`` (one process: no torch.distributed)."""

from __future__ import annotations

import atexit
import os
from typing import Any, List, Tuple

import torch

__all__ = ["all_gather_objects", "all_reduce_sum", "barrier", "default_device", "init_distributed", "resolve_device"]


def default_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"`` (the CLIs' ``--device`` default)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def init_distributed(device: str) -> Tuple[int, int, int]:
    """``(rank, world_size, local_rank)``; initialises the process group when WORLD_SIZE > 1.

    The backend is NCCL for a CUDA ``device`` and gloo otherwise (``DAISY_DDP_BACKEND``
    overrides it). A group made here is destroyed at interpreter exit (``atexit``), while
    Python is still alive: left to finalization, gloo's worker threads abort the process now
    and then ("terminate called without an active exception"). A group the caller made is
    the caller's to destroy.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = os.environ.get("DAISY_DDP_BACKEND") or ("nccl" if device.startswith("cuda") else "gloo")
        dist.init_process_group(backend)
        atexit.register(_destroy_group)
    return dist.get_rank(), dist.get_world_size(), local_rank


def _destroy_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(device: str, world: int = 1, local_rank: int = 0) -> torch.device:
    """``device`` as a torch device; under DDP on CUDA, this process's GPU (``local_rank``).

    Raises:
        ValueError: CUDA asked for but not available.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device}: CUDA is not available on this machine")
        if world > 1:
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
    return dev


def barrier(world: int) -> None:
    """Wait for every rank (no-op in one process)."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, world: int) -> torch.Tensor:
    """``tensor`` summed over the ranks, in place (unchanged in one process).

    Under NCCL ``tensor`` must be on this process's GPU.
    """
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(tensor)
    return tensor


def all_gather_objects(obj: Any, world: int) -> List[Any]:
    """Every rank's ``obj`` (picklable), in rank order: ``[obj]`` in one process."""
    if world <= 1:
        return [obj]
    import torch.distributed as dist

    gathered: List[Any] = [None] * world
    dist.all_gather_object(gathered, obj)
    return gathered
