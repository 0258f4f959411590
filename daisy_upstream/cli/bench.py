"""``daisy bench``: upstream forward time, full vs DAISY vs the per-batch rule vs a fixed exit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from daisy_upstream.cli import args as types

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-k", "--ckpt", help="DAISY checkpoint (default: the embedded tiny model)")
    parser.add_argument(
        "--random-base",
        action="store_true",
        help="time a randomly initialised Base of --family instead (timing only; random "
        "branches sharpened with depth, so that utterances exit mid-way)",
    )
    parser.add_argument(
        "--family",
        choices=("hubert", "wav2vec2", "data2vec", "wavlm"),
        help="with --random-base: the family of the Base (default hubert); with -k: "
        "the family the checkpoint must be (default: its own)",
    )
    parser.add_argument("-g", "--config", help="upstream config YAML (rho, tau, strategy, ...)")
    parser.add_argument("--rho", type=types.rho, help="override the config's rho")
    parser.add_argument("--tau", type=float, help="override the config's tau")
    types.add_precision(parser, default=None)
    parser.add_argument(
        "--cuda-graphs",
        choices=("auto", "off"),
        help="the config's cuda_graphs: auto (on CUDA the per-layer steps run as CUDA graphs on "
        "bucketed shapes) or off (the plain loop); no effect on the CPU (default: the config's, auto)",
    )
    parser.add_argument(
        "--stock",
        action="store_true",
        help="also time s3prl's stock upstream of the family on the same weights (mode 'stock')",
    )
    parser.add_argument(
        "--fixed-layer",
        type=types.positive_int,
        help="layer of the fixed-exit mode (default: DAISY's mean exit layer at batch 1, rounded)",
    )
    parser.add_argument("--batch-sizes", type=types.positive_int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--utterances", type=types.positive_int, default=32, help="clips in the bench set")
    parser.add_argument("--min-seconds", type=types.positive_float, default=1.0)
    parser.add_argument("--max-seconds", type=types.positive_float, default=6.0)
    parser.add_argument("--repeats", type=types.positive_int, default=5)
    parser.add_argument("--warmup", type=types.non_negative_int, default=1)
    parser.add_argument("--device", type=types.device, default="cpu")
    parser.add_argument("--threads", type=types.threads, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench", help="folder for bench.json, bench.png, bench.txt")
    parser.add_argument("--force", action="store_true", help="replace an --out that bench wrote before")


def run(args: argparse.Namespace) -> int:
    from daisy_upstream.evaluation.bench import bench

    if args.ckpt and not Path(args.ckpt).exists():  # a file or a transformers folder
        raise FileNotFoundError(f"checkpoint {args.ckpt} does not exist (-k/--ckpt)")
    types.set_threads(args.threads)
    overrides = {"rho": args.rho, "tau": args.tau, "precision": args.precision, "cuda_graphs": args.cuda_graphs}
    result = bench(
        args.out,
        args.ckpt,
        args.config,
        overrides,
        random_base=args.random_base,
        family=args.family,
        fixed_layer=args.fixed_layer,
        batch_sizes=args.batch_sizes,
        utterances=args.utterances,
        min_seconds=args.min_seconds,
        max_seconds=args.max_seconds,
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        seed=args.seed,
        force=args.force,
        stock=args.stock,
        say=lambda message: print(f"[bench] {message}", file=sys.stderr),
    )
    print(result["table"])
    print(f"[bench] wrote {args.out}/bench.json, bench.png, bench.txt", file=sys.stderr)
    return 0
