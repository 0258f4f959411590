"""Every compatibility shim for s3prl 0.4.18 on torch 2.8, in one place, applied once.

Each shim is narrow, says what it fixes, and touches no file of the installed s3prl.
Each is idempotent; :mod:`daisy_upstream.plugin` applies them when the s3prl module they
fix is imported (never at interpreter start-up).
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import os
from pathlib import Path

__all__ = ["key_voxceleb1_cache_by_dataset", "patch_runner_module", "voxceleb1_cache_dir"]


def _allow_namespace_in_checkpoints() -> None:
    # torch >= 2.6 loads with weights_only=True by default; s3prl's runner checkpoints hold
    # the run's argparse.Namespace ('Args'), so resuming / evaluating with -e failed.
    # Allow exactly that class, nothing else.
    import torch

    torch.serialization.add_safe_globals([argparse.Namespace])


def voxceleb1_cache_dir(root: str, meta_data: str) -> str:
    """Where the VoxCeleb1 file lists of one dataset (root + split file) are cached."""
    meta = Path(meta_data)
    stamp = f"{Path(root).resolve()}|{meta.resolve()}|{meta.stat().st_mtime_ns if meta.exists() else 0}"
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "daisy_upstream" / "voxceleb1"
    return str(base / hashlib.sha1(stamp.encode()).hexdigest()[:16]) + os.sep


def key_voxceleb1_cache_by_dataset(vox) -> None:
    """Applied to ``s3prl.downstream.voxceleb1.dataset`` when it is imported."""
    # s3prl's SpeakerClassifiDataset caches its file lists as <package>/.cache/<split>.pkl,
    # keyed by split only: a second dataset (another root or split file) silently reuses the
    # first one's files. Point the module's CACHE_PATH at a directory keyed by the dataset
    # root, the split file and its mtime for the duration of each constructor call.
    original = vox.SpeakerClassifiDataset.__init__
    if getattr(original, "_daisy_shim", False):
        return

    @functools.wraps(original)
    def __init__(self, mode, file_path, meta_data, *args, **kwargs):
        previous = vox.CACHE_PATH
        vox.CACHE_PATH = voxceleb1_cache_dir(str(file_path), str(meta_data))
        try:
            original(self, mode, file_path, meta_data, *args, **kwargs)
        finally:
            vox.CACHE_PATH = previous

    __init__._daisy_shim = True
    vox.SpeakerClassifiDataset.__init__ = __init__


def _cpu_distributed_runner(runner) -> None:
    # s3prl's runner is written for one GPU per process: run_downstream calls
    # torch.cuda.set_device(local_rank) and wraps models in DDP(device_ids=[local_rank]).
    # With --backend gloo on a machine without CUDA both fail. Only when CUDA is absent:
    # set_device becomes a no-op and DDP gets no device_ids (what DDP requires on CPU).
    import torch

    if torch.cuda.is_available() or getattr(runner.DDP, "_daisy_shim", False):
        return
    ddp = runner.DDP

    def cpu_ddp(module, *args, device_ids=None, **kwargs):
        return ddp(module, *args, **kwargs)

    cpu_ddp._daisy_shim = True
    runner.DDP = cpu_ddp
    torch.cuda.set_device = lambda device: None


def patch_runner_module(runner) -> None:
    """Applied to ``s3prl.downstream.runner`` when it is imported."""
    _allow_namespace_in_checkpoints()
    _cpu_distributed_runner(runner)
