"""Honest timing of the upstream forward: full model vs DAISY vs the per-batch rule vs a fixed exit.

Everything is measured side by side in one run on the same weights and the same audio:
upstream forward only (no data loading, no downstream), device-synchronised, after warm-up.
Modes are interleaved batch by batch (every mode runs batch ``i`` before any runs batch
``i + 1``, in an order rotated per batch and repeat), so that a burst of machine noise hits
them alike; the time saved is the median over repeats of the *paired* saving
``1 - t_mode[r] / t_full[r]``, which cancels noise shared by a repeat's modes.

The *ideal* saving of a mode is what its exit layers would save if skipping a layer for an
utterance saved exactly that utterance's share of the layer's measured cost (shares by valid
frames) and branches were free:

    ideal_time = sum_batches [ front_b + sum_k cost_{b,k} * active_frames_{b,k} / frames_b ]

with ``front_b`` (CNN, projection, positional conv) and ``cost_{b,k}`` (layer k) measured on the
full model for that batch. ``efficiency = achieved saving / ideal saving``.

Beside the ideal, a mode with ``depth_twin`` reports what a *fixed-depth* model at its mean
exit layer ``m`` saves at the same batch size (``depth_saved``): the full model cut after
``floor(m)`` and after ``ceil(m)`` layers, timed in the same interleaved runs, their paired
savings interpolated linearly to ``m``. On a CPU the two are about equal; where a smaller batch
does not run proportionally faster (a GPU at batch 8 or 32), the per-utterance exits save less
than the same mean depth does, and this column shows how much less.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from daisy_upstream.core.early_exit import EarlyExitModel
from daisy_upstream.core.policy import ExitPlan, make_plan

__all__ = [
    "LayerCosts",
    "ModeResult",
    "efficiency",
    "fixed_depth_weights",
    "ideal_time",
    "measure_layer_costs",
    "paired_saving",
    "run_benchmark",
    "saving",
]


def saving(mode_time: float, full_time: float) -> float:
    """Fraction of the full model's time saved (negative when slower)."""
    if full_time <= 0:
        raise ValueError(f"full_time must be > 0, got {full_time}")
    return 1.0 - mode_time / full_time


def paired_saving(mode_times: Sequence[float], full_times: Sequence[float]) -> float:
    """Median over repeats of ``saving(mode_times[r], full_times[r])`` (same-repeat pairs)."""
    if len(mode_times) != len(full_times) or not mode_times:
        raise ValueError(f"need equally many (>= 1) paired times, got {len(mode_times)} and {len(full_times)}")
    return statistics.median(saving(m, f) for m, f in zip(mode_times, full_times))


def efficiency(achieved: float, ideal: float, min_ideal: float = 0.01) -> Optional[float]:
    """``achieved / ideal`` saving; None when the ideal saving is too small to divide by."""
    if ideal < min_ideal:
        return None
    return achieved / ideal


@dataclass
class LayerCosts:
    """Measured cost of one batch on the full model (seconds)."""

    front: float
    layers: List[float]

    @property
    def total(self) -> float:
        return self.front + sum(self.layers)


def ideal_time(costs: LayerCosts, exit_layers: Sequence[int], frames: Sequence[int]) -> float:
    """Time the batch would take if exited utterances cost nothing from the next layer on.

    Args:
        costs: the batch's full-model front-end and per-layer costs.
        exit_layers: each utterance's exit layer (1..L).
        frames: each utterance's valid frames.
    """
    if len(exit_layers) != len(frames) or not frames:
        raise ValueError("exit_layers and frames must be non-empty and of equal length")
    total = float(sum(frames))
    time_ = costs.front
    for k, cost in enumerate(costs.layers, start=1):
        active = sum(n for n, e in zip(frames, exit_layers) if e >= k)
        time_ += cost * active / total
    return time_


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_layer_costs(net: EarlyExitModel, batch: List[Tensor], repeats: int = 3) -> LayerCosts:
    """Front-end and per-layer cost of ``batch`` on the full model (median of ``repeats``), timed
    by hooks on the layers, so in the plain loop (``cuda_graphs`` off): the ideal saving takes the
    layers' shares of the forward from it."""
    device = batch[0].device
    layers = net.model.encoder.layers
    stamps: Dict[int, List[float]] = {}

    def pre(k):
        def hook(module, args):
            _sync(device)
            stamps[k] = [time.perf_counter()]

        return hook

    def post(k):
        def hook(module, args, out):
            _sync(device)
            stamps[k].append(time.perf_counter())

        return hook

    handles = []
    for k, layer in enumerate(layers, start=1):
        handles.append(layer.register_forward_pre_hook(pre(k)))
        handles.append(layer.register_forward_hook(post(k)))
    plan = make_plan([net.num_layers], None)
    runs = []
    graphs, net.cuda_graphs = net.cuda_graphs, "off"  # hooks see no replayed layer (and may not sync in a capture)
    try:
        with torch.no_grad():
            for _ in range(repeats):
                _sync(device)
                start = time.perf_counter()
                net(batch, plan)
                _sync(device)
                total = time.perf_counter() - start
                per_layer = [stamps[k][1] - stamps[k][0] for k in range(1, len(layers) + 1)]
                runs.append((total, per_layer))
    finally:
        net.cuda_graphs = graphs
        for handle in handles:
            handle.remove()
    median_total = statistics.median(r[0] for r in runs)
    per_layer = [statistics.median(r[1][k] for r in runs) for k in range(len(layers))]
    return LayerCosts(front=max(median_total - sum(per_layer), 0.0), layers=per_layer)


class _PeakRss:
    """Peak resident memory above the level at start, sampled every millisecond (CPU)."""

    def __init__(self) -> None:
        self.base = self._rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    def __enter__(self) -> "_PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def megabytes(self) -> float:
        return (self.peak - self.base) / 2**20


@dataclass
class Mode:
    """One way of running the upstream: a plan and the per-batch flag; ``depth_twin``: also
    time fixed-depth models at this mode's mean exit layer (:attr:`ModeResult.depth_saved`);
    ``run``: another model's forward ``run(wavs)`` timed instead (s3prl's stock upstream, full
    depth: its exit layers count as ``plan.deepest``)."""

    name: str
    plan: ExitPlan
    per_batch: bool = False
    depth_twin: bool = False
    run: Optional[Callable[[List[Tensor]], Any]] = field(default=None, repr=False, compare=False)

    def __call__(self, net: EarlyExitModel, batch: List[Tensor]) -> Optional[List[int]]:
        """Run ``batch``; the exit layers (None for ``run``: all ``plan.deepest``)."""
        if self.run is not None:
            self.run(batch)
            return None
        return net(batch, self.plan, per_batch=self.per_batch).exit_layers.tolist()


@dataclass
class ModeResult:
    mode: str
    batch_size: int
    times: List[float]
    median: float
    spread: float
    saved: float
    ideal_saved: float
    efficiency: Optional[float]
    exit_histogram: List[int]
    mean_exit_layer: float
    peak_memory_mb: float
    depth_saved: Optional[float] = None  # a fixed-depth model at mean_exit_layer (Mode.depth_twin)

    def to_dict(self) -> dict:
        return asdict(self)


def _batches(wavs: List[Tensor], batch_size: int) -> List[List[Tensor]]:
    return [wavs[i : i + batch_size] for i in range(0, len(wavs), batch_size)]


def fixed_depth_weights(mean_exit: float) -> List[Tuple[int, float]]:
    """``(depth, weight)`` of the fixed depths whose interpolation is depth ``mean_exit``."""
    low = math.floor(mean_exit)
    upper = mean_exit - low
    return [(low, 1.0)] if upper < 1e-9 else [(low, 1.0 - upper), (low + 1, upper)]


def run_benchmark(
    net: EarlyExitModel,
    wavs: List[Tensor],
    modes: Sequence[Mode],
    batch_sizes: Sequence[int] = (1, 8, 32),
    repeats: int = 5,
    warmup: int = 1,
    progress: Optional[Callable[[str], None]] = None,
) -> List[ModeResult]:
    """Time every mode at every batch size; the first mode must be the full model.

    Returns one :class:`ModeResult` per (batch size, mode), in that order.
    """
    if not modes or modes[0].run is not None or modes[0].plan.check_layers or modes[0].plan.deepest != net.num_layers:
        raise ValueError("the first mode must be the full model (no checks, deepest = L)")
    say = progress or (lambda message: None)
    results: List[ModeResult] = []
    for batch_size in batch_sizes:
        batches = _batches(wavs, batch_size)
        say(f"batch {batch_size}: measuring per-layer costs")
        costs = [measure_layer_costs(net, batch) for batch in batches]
        exits, frames = _exit_layers(net, batches, modes)
        twins = {
            mode.name: fixed_depth_weights(_mean([e for b in exits[mode.name] for e in b]))
            for mode in modes
            if mode.depth_twin
        }
        timed, depth_of = _with_depth_twins(modes, twins)
        times = _interleaved_times(net, batches, timed, repeats, warmup, lambda m: say(f"batch {batch_size}: {m}"))
        full_ideal = sum(c.total for c in costs)
        for mode in modes:
            ideal = sum(ideal_time(c, e, f) for c, e, f in zip(costs, exits[mode.name], frames))
            depth_saved = None
            if mode.name in twins:  # interpolated between the fixed depths around its mean exit layer
                depth_saved = sum(
                    weight * paired_saving(times[depth_of[depth]], times[modes[0].name])
                    for depth, weight in twins[mode.name]
                )
            peak = _peak_memory(net, batches, mode, wavs[0].device)
            flat = [e for batch_exits in exits[mode.name] for e in batch_exits]
            results.append(
                _result(mode.name, batch_size, times[mode.name], times[modes[0].name], ideal, full_ideal, flat, net)
            )
            results[-1].peak_memory_mb, results[-1].depth_saved = peak, depth_saved
    return results


def _exit_layers(net: EarlyExitModel, batches, modes: Sequence[Mode]) -> Tuple[Dict[str, List[List[int]]], List]:
    """Each mode's exit layers per batch, and each batch's valid frames (from the full model)."""
    exits: Dict[str, List[List[int]]] = {}
    frames: List[List[int]] = []
    with torch.no_grad():
        for batch in batches:  # the full model (the first mode)
            out = net(batch, modes[0].plan)
            frames.append(out.lengths.tolist())
        for mode in modes:
            exits[mode.name] = []
            for batch in batches:
                layers = mode(net, batch)
                exits[mode.name].append([mode.plan.deepest] * len(batch) if layers is None else layers)
    return exits, frames


def _with_depth_twins(modes: Sequence[Mode], twins: Dict[str, List[Tuple[int, float]]]):
    """The modes to time: ``modes`` and a fixed-depth model for each twin depth no mode runs;
    ``depth -> the name of the mode that runs it``."""
    depth_of: Dict[int, str] = {}  # fixed depth -> the (first) mode that runs it
    for m in modes:
        if not m.plan.check_layers and not m.per_batch and m.run is None:
            depth_of.setdefault(m.plan.deepest, m.name)
    timed = list(modes)
    for depth in sorted({d for weights in twins.values() for d, _ in weights} - set(depth_of)):
        depth_of[depth] = f"depth {depth}"
        timed.append(Mode(depth_of[depth], make_plan([depth], None)))
    return timed, depth_of


def _interleaved_times(
    net: EarlyExitModel, batches, timed: Sequence[Mode], repeats: int, warmup: int, say: Callable[[str], None]
) -> Dict[str, List[float]]:
    """Per mode, the total time of every repeat over all batches; the modes interleaved batch by
    batch, in an order rotated per batch and repeat (no mode always runs first)."""
    device = batches[0][0].device
    times: Dict[str, List[float]] = {mode.name: [] for mode in timed}
    with torch.no_grad():
        for repeat in range(warmup + repeats):
            say(f"repeat {repeat + 1 - warmup}/{repeats}" if repeat >= warmup else "warm-up")
            totals = {mode.name: 0.0 for mode in timed}
            for index, batch in enumerate(batches):
                shift = (repeat + index) % len(timed)
                for mode in list(timed[shift:]) + list(timed[:shift]):
                    _sync(device)
                    start = time.perf_counter()
                    mode(net, batch)
                    _sync(device)
                    totals[mode.name] += time.perf_counter() - start
            if repeat >= warmup:
                for name, total in totals.items():
                    times[name].append(total)
    return times


def _result(
    name: str,
    batch_size: int,
    times: List[float],
    full_times: List[float],
    ideal: float,
    full_ideal: float,
    flat_exits: List[int],
    net: EarlyExitModel,
) -> ModeResult:
    median = statistics.median(times)
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [median] * 3
    achieved, ideal_saved = paired_saving(times, full_times), saving(ideal, full_ideal)
    return ModeResult(
        mode=name,
        batch_size=batch_size,
        times=times,
        median=median,
        spread=quartiles[2] - quartiles[0],
        saved=achieved,
        ideal_saved=ideal_saved,
        efficiency=efficiency(achieved, ideal_saved),
        exit_histogram=[flat_exits.count(k) for k in range(1, net.num_layers + 1)],
        mean_exit_layer=_mean(flat_exits),
        peak_memory_mb=0.0,
    )


def _mean(values: Sequence[int]) -> float:
    return sum(values) / len(values)


def _peak_memory(net: EarlyExitModel, batches, mode: Mode, device: torch.device) -> float:
    with torch.no_grad():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            for batch in batches:
                mode(net, batch)
            torch.cuda.synchronize(device)
            return (torch.cuda.max_memory_allocated(device) - base) / 2**20
        with _PeakRss() as meter:
            for batch in batches:
                mode(net, batch)
        return meter.megabytes
