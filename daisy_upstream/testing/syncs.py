"""Counting the ops that make the host wait for the device (tests of the early-exit loop's syncs)."""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from daisy_upstream.core.policy import make_plan

__all__ = ["HostSyncCounter", "assert_one_host_read_per_checked_layer"]


class HostSyncCounter(TorchDispatchMode):
    """``with HostSyncCounter() as counter: ...``; ``counter.counts``: op name -> calls, for the
    ops that read a device value on the host: scalar reads, ``nonzero``, copies to the CPU.

    Counted the same on any device (a CPU run counts the reads a GPU run would wait for)."""

    SYNCS = {
        "aten._local_scalar_dense.default",
        "aten.item.default",
        "aten.is_nonzero.default",
        "aten.nonzero.default",
        "aten.equal.default",
    }

    def __init__(self) -> None:
        super().__init__()
        self.counts: Dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        to_host = name.startswith("aten._to_copy") and kwargs.get("device") == torch.device("cpu")
        copy_to_host = name == "aten.copy_.default" and args[0].device.type == "cpu" and args[1].device.type != "cpu"
        if name in self.SYNCS or to_host or copy_to_host:
            self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **kwargs)


def assert_one_host_read_per_checked_layer(upstream, batch: List[Tensor], checked: Sequence[int] = range(1, 5)) -> None:
    """With about half the rows leaving at the second checked layer, a forward of ``upstream``
    (an ``UpstreamExpert``) on ``batch`` reads the device at most once per checked layer before
    the last (the last stops every row) plus the batch's one finiteness check, and never uses
    boolean-mask indexing (a ``nonzero`` each). Call under ``torch.no_grad()``."""
    table = upstream.run(batch, make_plan(checked, 0.0)).entropies
    tau = float(table[:, checked[1] - 1].median())
    with HostSyncCounter() as counter:
        out = upstream.run(batch, make_plan(checked, tau))
    assert 1 < len(set(out.exit_layers.tolist())), out.exit_layers
    assert sum(counter.counts.values()) <= 1 + (len(checked) - 1), counter.counts
    assert "aten.nonzero.default" not in counter.counts, counter.counts
