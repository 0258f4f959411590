"""``daisy submit``: the SUPERB public-set predict.zip from s3prl runner experiment directories."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from daisy_upstream.leaderboard.submit import describe_tasks

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "tasks (s3prl submit.py's flags; 'asr' = asr_no_lm):\n" + describe_tasks()
    parser.add_argument("pairs", nargs="+", metavar="TASK=EXPDIR", help="a task and its runner experiment directory")
    parser.add_argument("--out", type=Path, default=Path("predict.zip"), help="the zip to write (default predict.zip)")
    parser.add_argument("--force", action="store_true", help="replace an --out that submit wrote before")


def run(args: argparse.Namespace) -> int:
    from daisy_upstream.leaderboard.submit import parse_pairs, write_predict_zip
    from daisy_upstream.outputs import check_output_files

    tasks = parse_pairs(args.pairs)
    check_output_files([args.out], "submit", args.force)  # before reading the experiments
    members, warnings = write_predict_zip(tasks, args.out, force=args.force)
    for warning in warnings:
        print(f"daisy submit: warning: {warning}", file=sys.stderr)
    for member in members:
        print(f"  {member}")
    print(f"wrote {args.out}: {len(tasks)} task(s): {' '.join(tasks)}")
    return 0
