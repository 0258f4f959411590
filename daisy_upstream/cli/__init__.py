"""The ``daisy`` command: one console entry point with subcommands.

Each subcommand lives in its own module under :mod:`daisy_upstream.cli` and exposes
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand is chosen, so ``daisy --help`` stays fast (no torch / s3prl import).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

# subcommand -> (module under daisy_upstream.cli, one-line help)
SUBCOMMANDS = {
    "make-corpus": ("make_corpus", "write synthetic speech corpora in the four s3prl task layouts"),
    "pretrain-tiny": ("pretrain_tiny", "pretrain the embedded tiny HuBERT (resumable)"),
    "train-branches": ("train_branches", "stage 1: train one early-exit branch per layer"),
    "calibrate": ("calibrate", "per-layer mean entropy, E_max/E_min and tau for given rho"),
    "bench": ("bench", "time the upstream forward: full vs DAISY vs per-batch vs fixed"),
    "noise-report": ("noise_report", "exit-layer distribution per SNR (violin plot + table)"),
    "table1": ("table1", "the paper's Table 1 on any data (resumable)"),
    "demo": ("demo", "the main job: corpus, SID training and evaluation, summary"),
    "profile": ("profile", "MACs per utterance (batch 1), DAISY vs full, in the SUPERB form's buckets"),
    "submit": ("submit", "SUPERB public set: predict.zip from s3prl runner experiment directories"),
    "export-hidden": ("export_hidden", "SUPERB hidden set: expert.py + model.pt, checked like the template"),
    "superb-score": ("superb_score", "SUPERB score and Score-P from leaderboard metrics"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="daisy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        parser = build_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}; choose one of: {', '.join(SUBCOMMANDS)}")
        parser.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(f"daisy_upstream.cli.{module_name}")
    parser = argparse.ArgumentParser(prog=f"daisy {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    args.command_line = ["daisy", name, *rest]  # recorded as provenance by commands that write models
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
