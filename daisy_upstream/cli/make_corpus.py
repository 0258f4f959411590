"""``daisy make-corpus``: synthetic speech corpora in the four s3prl task layouts."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from daisy_upstream.cli import args as types


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``daisy make-corpus``."""
    from daisy_upstream.factory.corpus.build import TASKS  # light import (no torch)

    parser.add_argument("out", type=Path, help="corpus folder to write (corpus.json inside)")
    parser.add_argument(
        "--hours",
        type=types.positive_float,
        default=0.5,
        help="hours of synthetic speech (train+dev+test; default 0.5, made in about a minute on 2 cores)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--tasks",
        default=None,
        help=f"comma-separated subset of {','.join(TASKS)} (default: all; "
        "'real' only when pocketsphinx-testdata is installed)",
    )
    parser.add_argument(
        "--speakers",
        type=types.non_negative_int,
        default=0,
        help="number of speakers (default: max(10, 50*sqrt(hours)))",
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="parallel synthesis processes (default: all cores)"
    )
    parser.add_argument("--no-flite", action="store_true", help="use espeak-ng voices only")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Run ``daisy make-corpus``; returns the exit status."""
    from daisy_upstream.factory.corpus.build import make_corpus

    tasks = None if args.tasks is None else [t.strip() for t in args.tasks.split(",") if t.strip()]
    out = make_corpus(
        args.out,
        hours=args.hours,
        seed=args.seed,
        tasks=tasks,
        workers=args.workers,
        num_speakers=args.speakers,
        flite=not args.no_flite,
        progress=not args.quiet,
    )
    print(f"corpus written to {out} (manifest: {out / 'corpus.json'})")
    return 0
