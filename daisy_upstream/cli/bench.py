"""``daisy bench``: upstream forward time, full vs DAISY vs the per-batch rule vs a fixed exit."""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

from daisy_upstream.atomic import atomic_save_figure, atomic_write_json, atomic_write_text

__all__ = ["add_arguments", "run"]

SNR_MIX = (None, 10.0, 5.0, 0.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-k", "--ckpt", help="DAISY checkpoint (default: the embedded tiny model)")
    parser.add_argument("--random-base", action="store_true",
                        help="time a randomly initialised Base of --family instead (timing only; random "
                             "branches sharpened with depth, so that utterances exit mid-way)")
    parser.add_argument("--family", choices=("hubert", "wav2vec2", "data2vec", "wavlm"),
                        help="with --random-base: the family of the Base (default hubert); with -k: "
                             "the family the checkpoint must be (default: its own)")
    parser.add_argument("-g", "--config", help="upstream config YAML (rho, tau, strategy, ...)")
    parser.add_argument("--rho", type=float, help="override the config's rho")
    parser.add_argument("--tau", type=float, help="override the config's tau")
    parser.add_argument("--fixed-layer", type=int,
                        help="layer of the fixed-exit mode (default: DAISY's mean exit layer at batch 1, rounded)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--utterances", type=int, default=32, help="clips in the bench set")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench", help="directory for bench.json and bench.png")


def _bench_set(args) -> List:
    import numpy as np

    from daisy_upstream.evaluation.speech_sets import noisy_copies, pocketsphinx_recordings, segment

    rng = np.random.default_rng(args.seed)
    lengths = rng.uniform(args.min_seconds, args.max_seconds, size=args.utterances).round(2)
    clean = segment(pocketsphinx_recordings(), lengths.tolist())
    return noisy_copies(clean, SNR_MIX, seed=args.seed)


def _load_upstream(args, config, tmp: Path, wavs):
    from daisy_upstream.atomic import atomic_torch_save
    from daisy_upstream.evaluation.loading import load_upstream
    from daisy_upstream.testing import make_random_family_checkpoint, sharpen_branches

    ckpt = args.ckpt
    if args.random_base:
        ckpt = tmp / f"random_{args.family or 'hubert'}_base.pt"
        # random branches sharpened with depth (branch k's logits x (1 + k)): entropy then falls
        # with depth as in a trained model, and utterances exit mid-way (timing only)
        state = make_random_family_checkpoint(args.family or "hubert", base=True, num_classes=500, seed=args.seed)
        atomic_torch_save(sharpen_branches(state, 1.0), ckpt)
    # no calibration anywhere: calibrated on the bench audio itself (said in the output)
    return load_upstream(ckpt, config.to_dict(), device=args.device, calibrate_on=wavs, family=args.family)


def _targets(results) -> List[Dict]:
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
    if ("daisy", 8) in by and ("per-batch", 8) in by:
        add("per-utterance saves more than per-batch at batch 8",
            by[("daisy", 8)].saved - by[("per-batch", 8)].saved,
            by[("daisy", 8)].saved > by[("per-batch", 8)].saved)
    return checks


def _table(results, checks) -> str:
    lines = [f"{'batch':>5} {'mode':<13} {'median s':>9} {'IQR s':>7} {'saved':>7} {'ideal':>7} "
             f"{'effic.':>6} {'mean exit':>9} {'peak MB':>8}  exit histogram (layers 1..L)"]
    for r in results:
        eff = "-" if r.efficiency is None else f"{r.efficiency:.2f}"
        lines.append(
            f"{r.batch_size:>5} {r.mode:<13} {r.median:>9.4f} {r.spread:>7.4f} {100 * r.saved:>6.1f}% "
            f"{100 * r.ideal_saved:>6.1f}% {eff:>6} {r.mean_exit_layer:>9.2f} {r.peak_memory_mb:>8.1f}  "
            f"{r.exit_histogram}"
        )
    lines.append("")
    for c in checks:
        value = "n/a" if c["value"] is None else f"{c['value']:.3f}"
        lines.append(f"{'PASS' if c['pass'] else 'FAIL'}  {c['target']}: {value}")
    return "\n".join(lines)


def _plot(results, path: Path) -> None:
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
        axes[0].scatter(xs, [100 * r.ideal_saved for r in rows], marker="_", s=300, color="black",
                        label="ideal" if i == 0 else None, zorder=3)
    axes[0].set_xticks([j + width * (len(modes) - 1) / 2 for j in range(len(batches))])
    axes[0].set_xticklabels([f"batch {b}" for b in batches])
    axes[0].axhline(0, color="gray", lw=0.8)
    axes[0].set_ylabel("upstream time saved vs full (%)")
    axes[0].legend(fontsize=8)
    for mode in ("daisy", "per-batch"):
        for b in batches:
            r = next((r for r in results if r.mode == mode and r.batch_size == b), None)
            if r is not None:
                axes[1].plot(range(1, len(r.exit_histogram) + 1), r.exit_histogram, marker="o",
                             label=f"{mode}, batch {b}")
    axes[1].set_xlabel("exit layer")
    axes[1].set_ylabel("utterances")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    atomic_save_figure(fig, path)


def run(args: argparse.Namespace) -> int:
    import torch

    from daisy_upstream.evaluation.benchmark import Mode, run_benchmark
    from daisy_upstream.core.policy import make_plan

    from daisy_upstream.core.expert import load_config

    overrides = {k: v for k, v in (("rho", args.rho), ("tau", args.tau)) if v is not None}
    config = load_config(args.config, **overrides)  # a bad key fails here, before any work
    if args.ckpt and not Path(args.ckpt).is_file():
        raise FileNotFoundError(f"checkpoint {args.ckpt} does not exist (-k/--ckpt)")
    if args.threads is not None and args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available on this machine")
    clips = _bench_set(args)
    wavs = [torch.from_numpy(c.wav).to(device) for c in clips]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = _load_upstream(args, config, Path(tmp), wavs)
        upstream, ckpt, calibrated_here = loaded.upstream, loaded.checkpoint, loaded.calibration is not None
        net, L = upstream.net, upstream.num_layers
        daisy_plan = upstream.current_plan()
        if not daisy_plan.check_layers:
            raise ValueError(f"strategy {upstream.config.strategy!r} checks no branch: nothing to compare; "
                             "use an early-exit strategy (-g/--config)")
        if args.fixed_layer is None:
            with torch.no_grad():
                exits = [int(net([w], daisy_plan).exit_layers[0]) for w in wavs]
            args.fixed_layer = max(1, min(L, round(sum(exits) / len(exits))))
        modes = [
            Mode("full", make_plan([L], None)),
            Mode("daisy", daisy_plan),
            Mode("per-batch", daisy_plan, per_batch=True),
            Mode("fixed", make_plan([args.fixed_layer], None)),
            Mode("daisy-noexit", make_plan(range(1, L + 1), 0.0)),
        ]
        print(f"[bench] {ckpt} ({upstream.family.name}, {L} layers) on {device}, tau={upstream.tau:.4f}"
              f"{' (calibrated on the bench audio)' if calibrated_here else ''}, "
              f"{len(wavs)} clips, {sum(len(w) for w in wavs) / 16000:.1f} s", file=sys.stderr)
        results = run_benchmark(net, wavs, modes, args.batch_sizes, args.repeats, args.warmup,
                                progress=lambda msg: print(f"[bench] {msg}", file=sys.stderr))
    checks = _targets(results)
    table = _table(results, checks)
    print(table)
    meta = {
        "checkpoint": str(ckpt), "random_base": args.random_base, "family": upstream.family.name, "layers": L, "tau": upstream.tau,
        "strategy": upstream.config.strategy, "fixed_layer": args.fixed_layer,
        "calibrated_on_bench_audio": calibrated_here, "calibration": loaded.calibration, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "clips": len(wavs),
        "seconds": sum(len(w) for w in wavs) / 16000, "snr_mix": [c.snr_db for c in clips],
        "repeats": args.repeats, "warmup": args.warmup,
    }
    payload = {"meta": meta, "results": [r.to_dict() for r in results], "targets": checks}
    atomic_write_json(out_dir / "bench.json", payload)
    _plot(results, out_dir / "bench.png")
    atomic_write_text(out_dir / "bench.txt", table + "\n")
    print(f"[bench] wrote {out_dir}/bench.json, bench.png, bench.txt", file=sys.stderr)
    return 0
