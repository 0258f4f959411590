"""``daisy export-hidden``: a SUPERB hidden-set submission folder (expert.py + model.pt), checked."""

from __future__ import annotations

import argparse
from pathlib import Path

from daisy_upstream.cli import args as types

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="the submission folder to write")
    parser.add_argument("-k", "--ckpt", help="DAISY checkpoint (default: the embedded tiny model)")
    parser.add_argument(
        "-g",
        "--config",
        help="upstream config YAML (rho, tau, strategy, ...); "
        "layers_past_exit is set to 'copy' for the organizers' stock featurizer",
    )
    parser.add_argument("--rho", type=types.rho, help="override the config's rho")
    parser.add_argument("--tau", type=float, help="override the config's tau")
    parser.add_argument(
        "--stats",
        metavar="RUNNER_CKPT",
        help="s3prl runner checkpoint whose Featurizer.exit_counts "
        "are baked in (for strategies mean / threshold / min-max)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an --out that a previous export-hidden wrote (a folder holding anything else is refused)",
    )


def run(args: argparse.Namespace) -> int:
    from daisy_upstream.leaderboard.export_hidden import export_hidden

    result = export_hidden(
        args.out,
        ckpt=args.ckpt,
        config=args.config,
        overrides={"rho": args.rho, "tau": args.tau},
        stats=args.stats,
        force=args.force,
    )
    checks = result["checks"]
    print(f"DAISY: {result['policy']}")
    print(f"template checks passed in a fresh interpreter: shapes {checks['shapes']}, rates {checks['rates']}")
    print(f"wrote {args.out}: expert.py, model.pt, requirements.txt, README.md")
    return 0
