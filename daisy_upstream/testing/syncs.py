"""Counting the ops that make the host wait for the device (tests of the early-exit loop's syncs)."""
from __future__ import annotations

from typing import Dict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HostSyncCounter"]


class HostSyncCounter(TorchDispatchMode):
    """``with HostSyncCounter() as counter: ...``; ``counter.counts``: op name -> calls, for the
    ops that read a device value on the host: scalar reads, ``nonzero``, copies to the CPU.

    Counted the same on any device (a CPU run counts the reads a GPU run would wait for)."""

    SYNCS = {"aten._local_scalar_dense.default", "aten.item.default", "aten.is_nonzero.default",
             "aten.nonzero.default", "aten.equal.default"}

    def __init__(self) -> None:
        super().__init__()
        self.counts: Dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        to_host = name.startswith("aten._to_copy") and kwargs.get("device") == torch.device("cpu")
        copy_to_host = (name == "aten.copy_.default" and args[0].device.type == "cpu"
                        and args[1].device.type != "cpu")
        if name in self.SYNCS or to_host or copy_to_host:
            self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **kwargs)
