"""The ``daisy`` command: one console entry point with subcommands.

Each subcommand lives in its own module under :mod:`daisy_upstream.cli` and exposes
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand is chosen, so ``daisy --help`` stays fast (no torch / s3prl import).

A user error (``ValueError``, ``OSError`` such as a missing or existing file, a YAML error;
:class:`daisy_upstream.audio.io.NoAudioError` is a ``ValueError``) prints one line
``daisy <command>: error: ...`` and exits with status 2; ``daisy --debug <command>`` or
``DAISY_DEBUG=1`` shows the traceback instead. A failed s3prl runner exits with status 1 and
the tail of its log. A ``--device`` this machine lacks is such a user error, found by
argparse before any work (:func:`daisy_upstream.cli.args.device`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

from daisy_upstream.integration.quiet import quiet_third_party

# subcommand -> (module under daisy_upstream.cli, one-line help)
SUBCOMMANDS = {
    "convert": ("convert", "any checkpoint (fairseq, transformers, ...) -> s3prl's converted format"),
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
    parser = argparse.ArgumentParser(
        prog="daisy",
        description=__doc__.splitlines()[0],
        epilog="--debug (or DAISY_DEBUG=1): show the traceback of an error",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


class _OneLineParser(argparse.ArgumentParser):
    """A subcommand's parser: a bad argument is one line ``daisy <command>: error: ...``, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _one_line(error: BaseException) -> str:
    """The error's message on one line (a multi-line message joined with '; ')."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def _user_errors() -> tuple:
    """Exception types that are the user's to fix: bad values, missing / existing files, bad YAML."""
    errors: tuple = (ValueError, OSError)  # NoAudioError is a ValueError; FileExistsError an OSError
    try:
        import yaml

        errors += (yaml.YAMLError,)
    except ImportError:  # pragma: no cover - pyyaml is a dependency
        pass
    return errors


def subcommand(name: str):
    """``(module, parser)`` of a subcommand (its module imported now)."""
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(f"daisy_upstream.cli.{module_name}")
    parser = _OneLineParser(prog=f"daisy {name}", description=help_text)
    module.add_arguments(parser)
    return module, parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("DAISY_DEBUG", "") not in ("", "0")
    while argv and argv[0] == "--debug":
        debug, argv = True, argv[1:]
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        parser = build_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}; choose one of: {', '.join(SUBCOMMANDS)}")
        parser.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    quiet_third_party()
    module, parser = subcommand(name)
    args = parser.parse_args(rest)
    args.command_line = ["daisy", name, *rest]  # recorded as provenance by commands that write models
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"daisy {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - sorted below: user errors, the runner, the rest
        if debug:
            raise
        from daisy_upstream.integration.runner_io import RunnerFailed

        if isinstance(error, RunnerFailed):  # the runner's own log tail follows the one line
            head, _, tail = str(error).partition("\n")
            print(f"daisy {name}: error: {head}\n{tail}", file=sys.stderr, end="")
            return 1
        if isinstance(error, _user_errors()):
            print(f"daisy {name}: error: {_one_line(error)}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
