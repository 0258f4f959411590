"""The early-exit loop on few static shapes: the path of CUDA graphs (``cuda_graphs: auto``).

The batch's frames are padded up to a length bucket and its rows up to a row bucket
(:mod:`daisy_upstream.core.buckets`). A row that exits stays in its group, masked: its later
outputs are zeros, its entropy NaN, and its state at the exit layer is kept as it leaves, all
on the device (:func:`_step`). So a step reads and writes only its group's static buffers and
is captured once per shape (:mod:`daisy_upstream.core.graphs`). The host reads one small
``(R,)`` mask per checked layer, only to decide whether the running rows fit a smaller shape
(then they are regrouped) or none runs (then the loop stops); with ``read_ahead`` it reads it
after the next layer's step is queued, so the read never drains the queue (a row that exited
runs one more layer, masked).

Each row gets the features, entropies and exit layer it has alone: padded frames are masked
keys of the attention (the key padding mask), rows never mix, and the branch mean weighs only
valid frames (:func:`~daisy_upstream.core.branches.frame_weights`).

Shapes: ``B`` utterances, ``T`` frames, ``R`` rows of a group, ``T_b`` its frames, ``D`` width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from daisy_upstream.core.branches import ExitBranches, frame_weights
from daisy_upstream.core.buckets import length_bucket, regroup, row_bucket
from daisy_upstream.core.graphs import StepGraphs, cuda_capture
from daisy_upstream.core.policy import ExitPlan, exits

__all__ = ["StaticPath", "StaticResult", "fits_buckets", "make_net", "static_loop"]


@dataclass
class _Buffers:
    """A group's static buffers (what a captured step reads and writes)."""

    x: Tensor  # (T_b, R, D) the running state, in the forward's dtype
    padding: Tensor  # (R, T_b) True on padded frames
    weights: Tensor  # (R, T_b) the branch mean's frame weights
    live: Tensor  # (R,) bool: still running
    exit_layer: Tensor  # (R,) long
    exit_state: Tensor  # (R, T_b, D) each row's state at its exit layer
    out: Tensor  # (R, T_b, D) the last step's output, zeros on rows that left before it
    entropy: Tensor  # (R,) the last check's entropies, NaN on rows that left before it
    tau: Tensor  # () the threshold
    carry: Optional[Tensor] = None  # what layer 1 passes on (WavLM's position bias)


@dataclass
class StaticResult:
    """What :func:`static_loop` returns: ``hidden`` ``deepest + 1`` tensors ``(B, T, D)`` (zeros
    past a row's exit layer; frames past its end not zeroed), ``entropies`` ``(B, L)``,
    ``exit_layers`` ``(B,)`` long and ``exit_hidden`` ``(B, T, D)``, all on the device."""

    hidden: List[Tensor]
    entropies: Tensor
    exit_layers: Tensor
    exit_hidden: Tensor


def fits_buckets(rows: int, frames: int) -> bool:
    """Whether a batch of ``rows`` x ``frames`` has a group shape (else the plain loop runs)."""
    return row_bucket(rows) is not None and length_bucket(frames) is not None


@dataclass
class _Net:
    """What a step needs of the early-exit model."""

    model: nn.Module
    family: Any
    branches: Optional[ExitBranches]
    num_layers: int
    final_norm: Optional[nn.Module]


def _make_buffers(x0: Tensor, rows: int, frames: int, out_dtype: torch.dtype, run_dtype: torch.dtype):
    width, device = x0.size(-1), x0.device

    def make() -> _Buffers:
        return _Buffers(
            x=torch.zeros(frames, rows, width, dtype=run_dtype, device=device),
            padding=torch.ones(rows, frames, dtype=torch.bool, device=device),
            weights=torch.zeros(rows, frames, device=device),
            live=torch.zeros(rows, dtype=torch.bool, device=device),
            exit_layer=torch.zeros(rows, dtype=torch.long, device=device),
            exit_state=torch.zeros(rows, frames, width, dtype=out_dtype, device=device),
            out=torch.zeros(rows, frames, width, dtype=out_dtype, device=device),
            entropy=torch.zeros(rows, device=device),
            tau=torch.zeros((), device=device),
        )

    return make


def _step(net: _Net, buf: _Buffers, layer: int, kind: str, reads: str) -> None:
    """Layer ``layer`` (1-based) on the group, in place; ``kind``: ``plain``, ``check`` (the
    branch decides) or ``last`` (every running row stops). Device work only: no host read."""
    y, ffn, carry = net.family.layer(net.model, layer - 1, buf.x, buf.padding, buf.carry if layer > 1 else None)
    buf.x.copy_(y)
    if layer == 1 and carry is not None:
        if buf.carry is None:  # made on the first, eager run; a capture then copies into it
            buf.carry = carry.clone()
        else:
            buf.carry.copy_(carry)
    state = y.transpose(0, 1)  # (R, T_b, D)
    if layer == net.num_layers and net.final_norm is not None:
        state = net.final_norm(state)
    live = buf.live.view(-1, 1, 1)
    buf.out.copy_(torch.where(live, state, 0.0))
    if kind == "plain":
        return
    if kind == "check":
        head = state if reads == "hidden_states" else (y if reads == "layer_output" else ffn).transpose(0, 1)
        entropy = net.branches.check(layer, head, buf.weights)
        buf.entropy.copy_(torch.where(buf.live, entropy, float("nan")))
        stop = exits(entropy, buf.tau) & buf.live
    else:
        stop = buf.live.clone()
    buf.exit_layer.masked_fill_(stop, layer)
    buf.exit_state.copy_(torch.where(stop.view(-1, 1, 1), state, buf.exit_state))
    buf.live.logical_and_(~stop)


class _Run:
    """One forward's bookkeeping: the current group, which batch row each of its rows is, the
    outputs (with one spare row ``B`` where padding rows write), the pending host read."""

    def __init__(
        self, net: _Net, graphs: StepGraphs, x0: Tensor, counts: Sequence[int], plan: ExitPlan, run_dtype: torch.dtype
    ) -> None:
        self.net, self.graphs, self.plan = net, graphs, plan
        self.batch, self.frames = x0.size(0), x0.size(1)
        self.device, self.out_dtype = x0.device, x0.dtype
        batch, frames = self.batch, self.frames
        self.block = x0.new_zeros(plan.deepest, batch + 1, frames, x0.size(-1))
        self.entropies = x0.new_full((batch + 1, net.num_layers), float("nan"))
        self.exit_layers = torch.full((batch + 1,), plan.deepest, dtype=torch.long, device=self.device)
        self.exit_hidden = x0.new_zeros(batch + 1, frames, x0.size(-1))
        rows, t_b = row_bucket(batch), length_bucket(frames)
        self.group = graphs.group((t_b, rows), _make_buffers(x0, rows, t_b, x0.dtype, run_dtype))
        self.counts = list(counts) + [1] * (rows - batch)  # a padding row: one valid frame
        self.rowmap = self._device([*range(batch), *[batch] * (rows - batch)])
        buf = self.group.buffers
        lengths = self._device(self.counts)
        valid = torch.arange(t_b, device=self.device).unsqueeze(0) < lengths.unsqueeze(1)
        buf.x.zero_()
        buf.x[:frames, :batch].copy_(x0.transpose(0, 1))
        buf.padding.copy_(~valid)
        groups = net.branches.groups if net.branches is not None else 1
        buf.weights.copy_(frame_weights(lengths, t_b, groups))
        buf.live.copy_(torch.arange(rows, device=self.device) < batch)
        buf.exit_layer.fill_(plan.deepest)
        buf.exit_state.zero_()
        buf.tau.fill_(plan.tau if plan.tau is not None else 0.0)

    def _device(self, values: Sequence[int]) -> Tensor:
        host = torch.tensor(list(values), dtype=torch.long)
        if self.device.type == "cuda":  # from pinned memory: the copy does not wait for the queue
            return host.pin_memory().to(self.device, non_blocking=True)
        return host.to(self.device)

    def run_step(self, layer: int, kind: str, reads: str) -> None:
        buf, net = self.group.buffers, self.net
        self.graphs.run(self.group, (layer, kind, reads), lambda: _step(net, buf, layer, kind, reads))
        frames = min(self.frames, self.group.shape[0])
        self.block[layer - 1, :, :frames].index_copy_(0, self.rowmap, buf.out[:, :frames])
        if kind == "check":
            self.entropies[:, layer - 1].index_copy_(0, self.rowmap, buf.entropy)

    def read_live(self) -> Any:
        """Start copying the group's running mask to the host (the one read of a check)."""
        host = self.group.buffers.live.to("cpu", non_blocking=True, copy=True)
        event = None
        if self.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
        return host, event

    def decide(self, read: Any) -> bool:
        """Wait for ``read``; regroup where the running rows fit a smaller shape. False: none runs."""
        host, event = read
        if event is not None:
            event.synchronize()
        alive = host.tolist()
        rows, t_b = len(alive), self.group.shape[0]
        change = regroup(alive, self.counts, rows, t_b)
        if change is None:
            return True
        keep, new_frames = change
        self.flush()
        if not keep:
            return False
        self._move(keep, new_frames)
        return True

    def _move(self, keep: List[int], t_b: int) -> None:
        old, rows = self.group.buffers, len(keep)
        index = self._device(keep)
        make = _make_buffers(old.x, rows, t_b, self.out_dtype, old.x.dtype)
        self.group = self.graphs.group((t_b, rows), make)
        new = self.group.buffers
        new.x.copy_(old.x[:t_b].index_select(1, index))
        for name in ("padding", "weights", "exit_state"):
            getattr(new, name).copy_(getattr(old, name)[:, :t_b].index_select(0, index))
        for name in ("live", "exit_layer"):
            getattr(new, name).copy_(getattr(old, name).index_select(0, index))
        new.tau.copy_(old.tau)
        if old.carry is not None:
            carry = self.net.family.keep_rows(old.carry, index, len(self.counts), t_b)
            if new.carry is None:
                new.carry = carry.clone()
            else:
                new.carry.copy_(carry)
        self.rowmap = self.rowmap.index_select(0, index)
        self.counts = [min(self.counts[i], t_b) for i in keep]

    def flush(self) -> None:
        """Write the group's exit layers and exit states into the batch's."""
        buf = self.group.buffers
        frames = min(self.frames, self.group.shape[0])
        self.exit_layers.index_copy_(0, self.rowmap, buf.exit_layer)
        self.exit_hidden[:, :frames].index_copy_(0, self.rowmap, buf.exit_state[:, :frames])


def static_loop(
    net: _Net,
    graphs: StepGraphs,
    x0: Tensor,
    counts: Sequence[int],
    plan: ExitPlan,
    reads: str,
    read_ahead: bool,
    run_dtype: Optional[torch.dtype] = None,
) -> StaticResult:
    """Run ``plan`` on ``x0`` ``(B, T, D)`` (``hidden_states[0]``, valid frames ``counts``); the
    layers run in ``run_dtype`` (default ``x0``'s), what leaves is ``x0``'s dtype."""
    run = _Run(net, graphs, x0, counts, plan, x0.dtype if run_dtype is None else run_dtype)
    checks, pending, running = set(plan.check_layers), None, True
    for layer in range(1, plan.deepest + 1):
        kind = "last" if layer == plan.deepest else ("check" if layer in checks else "plain")
        run.run_step(layer, kind, reads)
        if pending is not None:  # an earlier check's read, now that this layer is queued
            running, pending = run.decide(pending), None
            if not running:
                break
        if kind == "check":
            read = run.read_live()
            if read_ahead:
                pending = read
            elif not run.decide(read):
                running = False
                break
    if running:
        run.flush()
    batch = run.batch
    hidden = [x0] + [run.block[k, :batch] for k in range(plan.deepest)]
    return StaticResult(hidden, run.entropies[:batch], run.exit_layers[:batch], run.exit_hidden[:batch])


def make_net(model: nn.Module, family: Any, branches: Optional[ExitBranches], num_layers: int) -> _Net:
    """What :func:`static_loop` needs of an early-exit model."""
    return _Net(model, family, branches, num_layers, family.final_norm(model))


class StaticPath:
    """An early-exit model's static-shape path: whether a forward takes it, and its step caches
    (one :class:`~daisy_upstream.core.graphs.StepGraphs` per device and arithmetic: TF32 flags,
    autocast dtype, since a captured step keeps the kernels it was captured with)."""

    def __init__(self) -> None:
        self.caches: Dict[tuple, StepGraphs] = {}
        self.weights: tuple = ()

    @staticmethod
    def applies(mode: str, x: Tensor, plain_only: bool) -> bool:
        """Whether a forward of ``x`` ``(B, T, D)`` takes the path under ``cuda_graphs`` ``mode``
        (``auto``: on CUDA without gradients; ``static``: anywhere; ``off``: never)."""
        if mode == "off" or plain_only:
            return False
        if mode == "auto" and (x.device.type != "cuda" or torch.is_grad_enabled()):
            return False
        return fits_buckets(x.size(0), x.size(1))

    def graphs(self, device: torch.device, mode: str, weights: tuple = ()) -> StepGraphs:
        """The step cache of ``device`` in the current arithmetic (captured on CUDA under ``auto``).

        ``weights``: where the weights the steps read live (their data pointers); captured steps
        read those addresses, so when they move (a DataParallel replica's fresh copies, a load
        with ``assign``) every cache is dropped and steps are captured again."""
        if weights != self.weights:
            self.caches.clear()
            self.weights = weights
        autocast = torch.is_autocast_enabled(device.type)
        key = (
            str(device),
            mode,
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
            torch.get_autocast_dtype(device.type) if autocast else None,
        )
        graphs = self.caches.get(key)
        if graphs is None:
            capture = cuda_capture() if mode == "auto" and device.type == "cuda" else None
            graphs = self.caches[key] = StepGraphs(capture)
        return graphs

    def run(
        self,
        net: _Net,
        x: Tensor,
        counts: Sequence[int],
        plan: ExitPlan,
        reads: str,
        mode: str,
        read_ahead: bool,
        run_dtype: Optional[torch.dtype] = None,
    ) -> StaticResult:
        weights = tuple(p.data_ptr() for m in (net.model, net.branches) if m is not None for p in m.parameters())
        return static_loop(net, self.graphs(x.device, mode, weights), x, counts, plan, reads, read_ahead, run_dtype)

    def stats(self) -> Dict[str, int]:
        """Group shapes held, captures, replays and evictions over every cache."""
        caches = list(self.caches.values())
        return {
            "shapes": sum(len(c.groups) for c in caches),
            "captures": sum(c.captures for c in caches),
            "replays": sum(c.replays for c in caches),
            "evictions": sum(c.evictions for c in caches),
        }

    def clear(self) -> None:
        self.caches.clear()
        self.weights = ()
