"""``daisy superb-score``: the SUPERB score and Score-P, per task and overall, from leaderboard metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "metrics",
        type=Path,
        help="YAML or JSON: leaderboard metric name -> value, e.g. "
        "'SID_acc: 80.5' (percent metrics in percent; a '_public' suffix is allowed)",
    )
    parser.add_argument(
        "--subset",
        choices=("public", "paper"),
        default="public",
        help="the leaderboard subset whose tasks enter the overall score (default public)",
    )
    parser.add_argument(
        "--params",
        help="shared parameters for Score-P: millions (94.7), a count "
        "(94700000; any value above 10,000 is a count), 94.7M, or a 'daisy profile' profile.json",
    )
    parser.add_argument("--json", type=Path, help="also write the scores to this JSON file")
    parser.add_argument("--force", action="store_true", help="replace a --json file that superb-score wrote before")


def run(args: argparse.Namespace) -> int:
    from daisy_upstream.atomic import atomic_write_json
    from daisy_upstream.leaderboard.superb_score import format_score, parse_params, read_metrics, superb_score
    from daisy_upstream.outputs import check_output_files, output_files

    inputs = [args.metrics, args.params if args.params and Path(args.params).exists() else None]
    if args.json:
        check_output_files([args.json], "superb-score", args.force, inputs)
    result = superb_score(read_metrics(args.metrics), args.subset, parse_params(args.params))
    print(format_score(result))
    if args.json:
        with output_files([args.json], "superb-score", args.force, inputs) as (tmp,):
            atomic_write_json(tmp, result)
    return 0
