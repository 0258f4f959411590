"""``daisy bench`` as a library: the bench audio, the upstream (a random Base for timing only,
built in memory), the five modes (and s3prl's stock upstream) measured side by side (:func:`~daisy_upstream.evaluation.benchmark.run_benchmark`),
the targets, and ``bench.json`` / ``bench.txt`` / ``bench.png``."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from daisy_upstream.atomic import atomic_save_figure, atomic_write_json, atomic_write_text
from daisy_upstream.audio.io import SAMPLE_RATE
from daisy_upstream.core.policy import compute_tau, make_plan
from daisy_upstream.evaluation.bench_subject import Subject, file_subject, random_base_subject
from daisy_upstream.evaluation.benchmark import Mode, ModeResult, run_benchmark
from daisy_upstream.evaluation.loading import config_values
from daisy_upstream.evaluation.speech_sets import noisy_copies, pocketsphinx_recordings, segment
from daisy_upstream.outputs import check_output_folder, output_folder

__all__ = ["SNR_MIX", "bench", "bench_set", "format_table", "no_exit_advice", "plot_bench", "targets"]

#: the bench set's clips are clean or noisy at these SNRs (dB), in turn
SNR_MIX = (None, 10.0, 5.0, 0.0)


def bench_set(utterances: int, min_seconds: float, max_seconds: float, seed: int = 0) -> List:
    """Real speech (pocketsphinx-testdata) cut into ``utterances`` clips of random length, clean
    or mixed with noise at the SNRs of :data:`SNR_MIX` in turn (``noisy_copies``' clips)."""

    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"clip lengths need 0 < min <= max seconds, got {min_seconds} and {max_seconds}")
    rng = np.random.default_rng(seed)
    lengths = rng.uniform(min_seconds, max_seconds, size=utterances).round(2)
    clean = segment(pocketsphinx_recordings(), lengths.tolist())
    return noisy_copies(clean, SNR_MIX, seed=seed)


def bench(
    out: Union[str, Path],
    ckpt: Optional[Union[str, Path]] = None,
    config: Union[None, str, Path, Mapping[str, Any]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
    random_base: bool = False,
    family: Optional[str] = None,
    fixed_layer: Optional[int] = None,
    batch_sizes: Sequence[int] = (1, 8, 32),
    utterances: int = 32,
    min_seconds: float = 1.0,
    max_seconds: float = 6.0,
    repeats: int = 5,
    warmup: int = 1,
    device: str = "cpu",
    seed: int = 0,
    force: bool = False,
    say: Callable[[str], None] = lambda message: None,
    stock: bool = False,
    clips: Optional[Sequence[Any]] = None,
) -> Dict[str, Any]:
    """Time the upstream forward of every mode and write ``out/bench.{json,txt,png}``.

    Modes: ``full``, ``daisy`` (per utterance), ``per-batch`` (the batch exits together), ``fixed``
    (``fixed_layer``, default DAISY's mean exit layer at batch 1), ``daisy-noexit`` (every branch
    checked, none fires) and, with ``stock``, s3prl's own upstream on the same weights in the same
    arithmetic. Without a calibration, tau comes from the bench audio (said in the output).
    ``random_base``: a random Base of ``family`` (default hubert) built in memory, branches
    sharpened with depth (timing only); else ``family`` is the family ``ckpt`` must be. ``out``
    follows :mod:`daisy_upstream.outputs` (checked before any work; the three files together).
    ``clips``: the bench set made before (:func:`bench_set`'s clips), on a machine without sox
    or pocketsphinx-testdata. Returns ``{"meta", "results", "targets", "table"}``.
    ValueError: a strategy that checks no branch, CUDA not available.
    """

    inputs = (ckpt, config if isinstance(config, (str, Path)) else None)
    out = check_output_folder(out, "bench", force, inputs)  # before any work
    values = config_values(config, overrides)  # a bad key fails here, before any work
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device}: CUDA is not available on this machine")
    clips = bench_set(utterances, min_seconds, max_seconds, seed) if clips is None else list(clips)
    wavs = [torch.from_numpy(c.wav).to(device) for c in clips]
    if random_base:
        subject = random_base_subject(family or "hubert", values, device, wavs, seed)
    else:
        subject = file_subject(ckpt, values, device, wavs, family)
    if not subject.plan.check_layers:
        raise ValueError(
            f"strategy {subject.config.strategy!r} checks no branch: nothing to compare; use an early-exit strategy"
        )
    modes, advice, fixed_layer = _modes(subject, wavs, fixed_layer, stock)
    seconds = sum(len(w) for w in wavs) / SAMPLE_RATE
    say(
        f"{subject.source} ({subject.net.family.name}, {subject.net.num_layers} layers) on {device} in "
        f"{subject.config.precision}, CUDA graphs {subject.config.cuda_graphs}, tau={subject.tau:.4f}"
        f"{' (calibrated on the bench audio)' if subject.calibration else ''}, {len(wavs)} clips, {seconds:.1f} s"
    )
    for line in [advice["message"]] if advice else []:
        say(line)
    results = run_benchmark(subject.net, wavs, modes, batch_sizes, repeats, warmup, progress=say)
    checks = targets(results)
    table = format_table(results, checks, [advice["message"]] if advice else [])
    meta = _meta(subject, random_base, seed, fixed_layer, device, advice, clips, seconds, repeats, warmup)
    payload = {"meta": meta, "results": [r.to_dict() for r in results], "targets": checks}
    with output_folder(out, "bench", force, inputs) as tmp:
        atomic_write_json(tmp / "bench.json", payload)
        plot_bench(results, tmp / "bench.png")
        atomic_write_text(tmp / "bench.txt", table + "\n")
    return {**payload, "table": table}


def _modes(subject: Subject, wavs: List[Any], fixed_layer: Optional[int], stock: bool):
    """The modes timed, the no-exit advice and the fixed layer (DAISY's mean exit alone, rounded)."""

    net, plan, num_layers = subject.net, subject.plan, subject.net.num_layers
    with torch.no_grad():  # each clip alone: exits and entropies do not depend on batch-mates
        alone = [net([w], plan) for w in wavs]
    exits = [int(out.exit_layers[0]) for out in alone]
    tau_per_rho = compute_tau(subject.layer_entropy, 1.0) if subject.layer_entropy else None
    advice = no_exit_advice(exits, torch.cat([out.entropies for out in alone]), plan, tau_per_rho)
    if fixed_layer is None:
        fixed_layer = max(1, min(num_layers, round(sum(exits) / len(exits))))
    modes = [
        Mode("full", make_plan([num_layers], None)),
        Mode("daisy", plan, depth_twin=True),
        Mode("per-batch", plan, per_batch=True),
        Mode("fixed", make_plan([fixed_layer], None)),
        Mode("daisy-noexit", make_plan(range(1, num_layers + 1), 0.0)),
    ]
    if stock:
        modes.append(Mode("stock", make_plan([num_layers], None), run=subject.stock()))
    return modes, advice, fixed_layer


def _meta(subject: Subject, random_base, seed, fixed_layer, device, advice, clips, seconds, repeats, warmup):
    """``bench.json``'s ``meta``: what was timed, how, on what."""

    config, net = subject.config, subject.net
    return {
        "checkpoint": subject.record,
        "random_base": random_base,
        "family": net.family.name,
        "layers": net.num_layers,
        "tau": subject.tau,
        "strategy": config.strategy,
        "fixed_layer": fixed_layer,
        "precision": config.precision,
        "cuda_graphs": config.cuda_graphs,
        "graph_steps": net.graph_stats(),
        "calibrated_on_bench_audio": subject.calibration is not None,
        "calibration": subject.calibration,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "no_exit": advice,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "clips": len(clips),
        "seconds": seconds,
        "snr_mix": [c.snr_db for c in clips],
        "repeats": repeats,
        "warmup": warmup,
    }


def no_exit_advice(
    exits: Sequence[int], entropies, plan, tau_per_rho: Optional[float] = None
) -> Optional[Dict[str, Any]]:
    """None when some clip exits before ``plan.deepest``; else what to change, in one line.

    Args:
        exits: each clip's exit layer under ``plan``.
        entropies: ``(N, L)`` each clip's mean branch entropy per layer (NaN where unchecked).
        tau_per_rho: ``(E_max + E_min) / 2`` of the calibration (tau = that x rho), or None
            where tau was given explicitly.

    Returns:
        ``{"message", "tau", "rho"}``: the tau at which about half the clips would exit (the
        median over clips of their lowest checked entropy, nudged above it) and the rho that
        gives it (None without ``tau_per_rho``, or where it would exceed 1).
    """
    if not plan.check_layers or any(e < plan.deepest for e in exits):
        return None
    lowest = entropies[:, [k - 1 for k in plan.check_layers]].min(dim=1).values
    suggested = float(lowest.median()) * 1.0001 + 1e-6  # the median clip itself exits too
    rho_needed = suggested / tau_per_rho if tau_per_rho else None
    rho_needed = rho_needed if rho_needed is not None and rho_needed <= 1 else None
    change = f"--rho {rho_needed:.3f} or --tau {suggested:.4f}" if rho_needed else f"--tau {suggested:.4f}"
    message = (
        f"no utterance exits: all {len(exits)} clips ran to layer {plan.deepest}, since tau {plan.tau:.4f} is "
        f"below every checked branch entropy (each clip's lowest: {float(lowest.min()):.4f} to "
        f"{float(lowest.max()):.4f}); pass {change} for about half of them to exit"
    )
    return {"message": message, "tau": suggested, "rho": rho_needed}


def targets(results: Sequence[ModeResult]) -> List[Dict[str, Any]]:
    """The PASS/FAIL targets (printed, not unit tests): efficiency, overhead, full depth against
    s3prl's stock upstream (``t_stock / t_full - 1``, where timed), per-utterance vs per-batch."""
    by = {(r.mode, r.batch_size): r for r in results}
    checks = []

    def add(name, value, ok):
        checks.append({"target": name, "value": value, "pass": bool(ok)})

    for batch, floor in ((1, 0.9), (8, 0.8)):
        r = by.get(("daisy", batch))
        if r is not None:
            eff = r.efficiency
            add(f"efficiency >= {floor} at batch {batch}", eff, eff is not None and eff >= floor)
    for batch in sorted({r.batch_size for r in results}):
        r = by.get(("daisy-noexit", batch))
        if r is not None:
            add(f"overhead with exits impossible <= 5% at batch {batch}", -r.saved, -r.saved <= 0.05)
    for batch in sorted({r.batch_size for r in results}):
        r = by.get(("stock", batch))
        if r is not None:  # r.saved: full's time saved against stock's, 1 - t_stock / t_full (paired)
            add(f"full depth no slower than s3prl's stock upstream at batch {batch}", -r.saved, -r.saved >= 0)
    if ("daisy", 8) in by and ("per-batch", 8) in by:
        add(
            "per-utterance saves more than per-batch at batch 8",
            by[("daisy", 8)].saved - by[("per-batch", 8)].saved,
            by[("daisy", 8)].saved > by[("per-batch", 8)].saved,
        )
    return checks


def format_table(results: Sequence[ModeResult], checks: Sequence[Dict[str, Any]], notes: Sequence[str] = ()) -> str:
    """The bench table, the notes and the targets, one screen."""
    lines = [
        f"{'batch':>5} {'mode':<13} {'median s':>9} {'IQR s':>7} {'saved':>7} {'ideal':>7} "
        f"{'depth':>7} {'effic.':>6} {'mean exit':>9} {'peak MB':>8}  exit histogram (layers 1..L)"
    ]
    for r in results:
        eff = "-" if r.efficiency is None else f"{r.efficiency:.2f}"
        depth = "-" if r.depth_saved is None else f"{100 * r.depth_saved:.1f}%"
        lines.append(
            f"{r.batch_size:>5} {r.mode:<13} {r.median:>9.4f} {r.spread:>7.4f} {100 * r.saved:>6.1f}% "
            f"{100 * r.ideal_saved:>6.1f}% {depth:>7} {eff:>6} {r.mean_exit_layer:>9.2f} "
            f"{r.peak_memory_mb:>8.1f}  {r.exit_histogram}"
        )
    lines += [
        "",
        "saved: measured vs full; ideal: what the exits imply (frames x layer costs); "
        "depth: a fixed-depth model at the mean exit layer, same batch size (measured)",
        *notes,
        "",
    ]
    for c in checks:
        value = "n/a" if c["value"] is None else f"{c['value']:.3f}"
        lines.append(f"{'PASS' if c['pass'] else 'FAIL'}  {c['target']}: {value}")
    return "\n".join(lines)


def plot_bench(results: Sequence[ModeResult], path: Path) -> None:
    """Time saved per mode and batch size (measured vs ideal), and the exit histograms (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r.batch_size for r in results})
    modes = [m for m in dict.fromkeys(r.mode for r in results) if m != "full"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        rows = [next(r for r in results if r.mode == mode and r.batch_size == b) for b in batches]
        xs = [j + i * width for j in range(len(batches))]
        axes[0].bar(xs, [100 * r.saved for r in rows], width, label=f"{mode} (measured)")
        axes[0].scatter(
            xs,
            [100 * r.ideal_saved for r in rows],
            marker="_",
            s=300,
            color="black",
            label="ideal" if i == 0 else None,
            zorder=3,
        )
        twins = [(x, r.depth_saved) for x, r in zip(xs, rows) if r.depth_saved is not None]
        if twins:
            axes[0].scatter(
                *zip(*[(x, 100 * d) for x, d in twins]),
                marker="x",
                color="red",
                zorder=3,
                label="fixed depth at the mean exit layer",
            )
    axes[0].set_xticks([j + width * (len(modes) - 1) / 2 for j in range(len(batches))])
    axes[0].set_xticklabels([f"batch {b}" for b in batches])
    axes[0].axhline(0, color="gray", lw=0.8)
    axes[0].set_ylabel("upstream time saved vs full (%)")
    axes[0].legend(fontsize=8)
    for mode in ("daisy", "per-batch"):
        for b in batches:
            r = next((r for r in results if r.mode == mode and r.batch_size == b), None)
            if r is not None:
                axes[1].plot(
                    range(1, len(r.exit_histogram) + 1), r.exit_histogram, marker="o", label=f"{mode}, batch {b}"
                )
    axes[1].set_xlabel("exit layer")
    axes[1].set_ylabel("utterances")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    atomic_save_figure(fig, path)
