"""``daisy calibrate``: per-layer branch entropy on a dataset, E_max/E_min and tau for rho or a budget.

Writes a calibration YAML (the upstream config's ``calibration:`` reads it, ``budget:`` included),
a PNG plot of mean entropy vs layer (the paper's Fig. 2) beside the MACs saved against tau, and
prints a table. When entropy does not fall with depth (docs/training.md, "The premise") it warns
in one line on stderr; ``--strict-premise`` makes that an error (exit 2, nothing written).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from daisy_upstream.cli import args as types


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``daisy calibrate``."""
    parser.add_argument(
        "-k", "--ckpt", "--checkpoint", dest="ckpt", type=Path, required=True, help="DAISY checkpoint (with branches)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--audio", type=Path, help="a directory tree of wav/flac, a list file or a LibriSpeech-layout root"
    )
    source.add_argument(
        "--s3prl-config", type=Path, help="an s3prl downstream config whose data paths to read (with --split)"
    )
    parser.add_argument(
        "--task",
        choices=["asr", "voxceleb1"],
        default=None,
        help="task of --s3prl-config (default: the config's folder name)",
    )
    parser.add_argument(
        "--split",
        default=None,
        help="split of --s3prl-config: asr train/dev-clean/test-clean..., voxceleb1 train/dev/test",
    )
    parser.add_argument(
        "--rho",
        type=types.rho,
        nargs="+",
        default=[0.7, 0.76, 1.0],
        help="rho values to compute tau for (default 0.7 0.76 1.0)",
    )
    parser.add_argument(
        "--budget",
        type=types.budget,
        nargs="+",
        default=[],
        help="fractions in (0, 1] of the full model's MACs to spend: the tau that spends at most that on "
        "this audio is logged (the YAML's budget_curve lets the upstream config's 'budget:' resolve any)",
    )
    parser.add_argument(
        "--strict-premise",
        action="store_true",
        help="fail (exit 2, nothing written) when branch entropy does not fall with depth, instead of a warning",
    )
    parser.add_argument("--out", type=Path, required=True, help="calibration YAML to write")
    parser.add_argument("--plot", type=Path, default=None, help="PNG plot (default: OUT with .png)")
    parser.add_argument("--force", action="store_true", help="replace output files that calibrate wrote before")
    parser.add_argument("--batch-seconds", type=types.positive_float, default=60.0, help="audio seconds per forward")
    parser.add_argument(
        "--max-utterances",
        type=types.positive_int,
        default=None,
        help="use a deterministic subset of this many utterances",
    )
    parser.add_argument(
        "--device", type=types.device, default=None, help="torch device (default: cuda when a GPU is visible, else cpu)"
    )
    types.add_precision(parser)
    types.add_loader(parser, "decoding and padding the batches")
    parser.add_argument(
        "--threads", type=types.threads, default=None, help="torch CPU threads (0 or none: torch's default)"
    )
    parser.add_argument(
        "--reject-resample",
        action="store_true",
        help="reject audio not at 16 kHz instead of resampling it with a warning",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _corpus(args: argparse.Namespace):
    """The audio of ``--audio`` or ``--s3prl-config``, cut to ``--max-utterances``."""
    from daisy_upstream.audio.corpus import AudioCorpus, files_from_s3prl_config, split_heldout
    from daisy_upstream.audio.io import AudioProblems

    resample = not args.reject_resample
    if args.audio is not None:
        corpus = AudioCorpus.from_source(args.audio, resample=resample)
    else:
        task = args.task or args.s3prl_config.resolve().parent.name
        if args.split is None:
            raise ValueError(
                "--s3prl-config needs --split (asr: train, dev-clean, test-clean; voxceleb1: train, dev, test)"
            )
        problems = AudioProblems()
        files, name, root = files_from_s3prl_config(args.s3prl_config, task, args.split, problems)
        corpus = AudioCorpus.from_files(files, name, root, resample=resample, problems=problems)
    if args.max_utterances is not None:
        if args.max_utterances < len(corpus):
            _, chosen = split_heldout(corpus.keys, args.max_utterances / len(corpus), seed=0)
            corpus = corpus.subset(
                chosen[: args.max_utterances], f"{len(chosen[: args.max_utterances])} of {corpus.name}"
            )
    return corpus


def run(args: argparse.Namespace) -> int:
    """Run ``daisy calibrate``; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from daisy_upstream.training.calibration import (
        calibrate_checkpoint,
        check_premise,
        format_table,
        plot_calibration,
        write_calibration_yaml,
    )

    types.set_threads(args.threads)
    from daisy_upstream.outputs import check_output_files, output_files

    plot = args.plot or args.out.with_suffix(".png")
    inputs = (args.ckpt, args.audio, args.s3prl_config)
    check_output_files([args.out, plot], "calibrate", args.force, inputs)  # before any work
    corpus = _corpus(args)
    from daisy_upstream.training.distributed import default_device

    result = calibrate_checkpoint(
        args.ckpt,
        corpus,
        args.rho,
        args.batch_seconds,
        args.device or default_device(),
        progress=not args.no_progress,
        precision=args.precision,
        workers=args.workers,
        prefetch=args.prefetch,
        budgets=args.budget,
    )
    check_premise(result.to_dict(), strict=args.strict_premise, prog="daisy calibrate")
    for budget in result.budgets:
        logging.info("budget %g: tau %.6f", budget, result.tau_for_budget(budget))
    with output_files([args.out, plot], "calibrate", args.force, inputs) as (yaml_tmp, plot_tmp):
        write_calibration_yaml(result, yaml_tmp, force=True)
        plot_calibration(result, plot_tmp, force=True)
    print(format_table(result))
    print(f"audio: {corpus.problems.summary()}")
    print(f"wrote {args.out} and {plot}")
    knob = f"budget: {args.budget[0]:g}" if args.budget else f"rho: {args.rho[0]:g}"
    print(f"use it: upstream config 'calibration: {args.out.resolve()}' with '{knob}'")
    return 0
