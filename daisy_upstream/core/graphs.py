"""CUDA graphs for the per-layer step of the static-shape loop, and their bookkeeping.

A step (one encoder layer, its masked output and, where the plan checks it, the branch check
and the exit bookkeeping, :mod:`daisy_upstream.core.static_loop`) reads and writes only the
static buffers of its *group*: the rows and frames of one shape ``(T_b, R)`` from
:mod:`daisy_upstream.core.buckets`. So one capture of a step serves every later batch of that
shape: :class:`StepGraphs` keeps, per group shape, its buffers and its captured steps keyed by
``(layer, kind)``, the shapes in least-recently-used order.

Memory is bounded by :data:`MAX_GROUPS` group shapes: a group holds a few ``(R, T_b, D)``
buffers, and all graphs share one memory pool (the steps run one after another on one stream,
so the temporaries of one step may reuse those of another), whose size is that of the largest
step's temporaries. A shape evicted is captured again when it comes back.

On the first run of a step it runs eagerly (the real computation, which is also the warm-up a
capture needs: cuBLAS handles, kernels chosen), then it is captured; every later run replays.
Without a capture function (:class:`StepGraphs` ``capture=None``: the CPU, and the tests of
the bookkeeping) every run is eager, so the same loop runs everywhere. torch is imported only
by :func:`cuda_capture` (the upstream config reads :data:`GRAPH_MODES`).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, Optional, Tuple

__all__ = ["GRAPH_MODES", "MAX_GROUPS", "Group", "StepGraphs", "cuda_capture"]

#: the upstream config's ``cuda_graphs``: ``auto`` (graphed steps on CUDA where the batch fits
#: the buckets, no gradients), ``off`` (the plain loop)
GRAPH_MODES = ("auto", "off")
#: group shapes kept at once (the memory bound): a group's buffers are about ``3 R T_b D`` floats
#: (HuBERT Base, 32 rows of 6 s: 90 MB), so at most about 3 GB however the shapes come; a batch
#: size meets about 11 length buckets (1-6 s clips) times the row buckets it shrinks through
MAX_GROUPS = 32

Capture = Callable[[Callable[[], None]], Any]


@dataclass
class Group:
    """One group shape's static buffers and its captured steps, ``(layer, kind) -> graph``."""

    shape: Tuple[int, int]
    buffers: Any
    graphs: Dict[Hashable, Any] = field(default_factory=dict)


class StepGraphs:
    """Captured steps by group shape ``(T_b, R)`` and ``(layer, kind)``, at most ``max_groups`` shapes.

    Args:
        capture: ``capture(step) -> graph`` with ``graph.replay()`` (:func:`cuda_capture`), or
            None: every step runs eagerly.
        max_groups: group shapes kept; the least recently used is dropped past it.
    """

    def __init__(self, capture: Optional[Capture] = None, max_groups: int = MAX_GROUPS) -> None:
        if max_groups < 1:
            raise ValueError(f"max_groups must be >= 1, got {max_groups}")
        self.capture = capture
        self.max_groups = max_groups
        self.groups: "OrderedDict[Tuple[int, int], Group]" = OrderedDict()
        self.captures = self.replays = self.eager_runs = self.evictions = 0

    def group(self, shape: Tuple[int, int], make_buffers: Callable[[], Any]) -> Group:
        """The group of ``shape``, made with ``make_buffers()`` when new (most recent now)."""
        group = self.groups.get(shape)
        if group is None:
            group = self.groups[shape] = Group(shape, make_buffers())
            while len(self.groups) > self.max_groups:
                self.groups.popitem(last=False)
                self.evictions += 1
        self.groups.move_to_end(shape)
        return group

    def run(self, group: Group, key: Hashable, step: Callable[[], None]) -> None:
        """Run ``step`` on ``group``'s buffers: replay its capture, or run it (and capture it)."""
        graph = group.graphs.get(key)
        if graph is not None:
            graph.replay()
            self.replays += 1
            return
        step()
        self.eager_runs += 1
        if self.capture is not None:
            group.graphs[key] = self.capture(step)
            self.captures += 1

    def clear(self) -> None:
        """Drop every group (buffers and graphs)."""
        self.groups.clear()


def cuda_capture(pool: Any = None) -> Capture:
    """A capture function for :class:`StepGraphs`: a ``torch.cuda.CUDAGraph`` captured on a side
    stream into the shared ``pool`` (default: a new one).

    ``torch.cuda.graph`` is not used: it synchronises, collects garbage and empties the
    allocator's cache before every capture, which for the few dozen steps of a new shape costs
    more than the steps. Under autocast the capture runs with autocast's weight cache off: a
    cached cast made during a capture would be freed when the forward's autocast ends, while
    the graph still reads it.
    """
    import torch

    pool = torch.cuda.graph_pool_handle() if pool is None else pool
    stream = torch.cuda.Stream()

    def capture(step: Callable[[], None]) -> Any:
        graph = torch.cuda.CUDAGraph()
        stream.wait_stream(torch.cuda.current_stream())  # the buffers' last writes come first
        with contextlib.ExitStack() as stack:
            if torch.is_autocast_enabled("cuda"):
                dtype = torch.get_autocast_dtype("cuda")
                stack.enter_context(torch.autocast("cuda", dtype=dtype, cache_enabled=False))
            stack.enter_context(torch.cuda.stream(stream))
            graph.capture_begin(pool)
            try:
                step()
            finally:
                graph.capture_end()
        torch.cuda.current_stream().wait_stream(stream)
        return graph

    return capture
