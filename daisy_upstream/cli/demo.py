"""``daisy demo``: the main job on the embedded default, start to finish
(:mod:`daisy_upstream.evaluation.demo`)."""

from __future__ import annotations

import argparse
import os

from daisy_upstream.cli import args as types

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        default="runs/demo",
        help="where the corpus and the experiment go: a new or "
        "empty folder, or one an earlier demo made (it continues there)",
    )
    parser.add_argument("-k", "--ckpt", help="DAISY checkpoint (default: the embedded tiny model)")
    parser.add_argument("--hours", type=types.positive_float, default=0.4, help="synthetic speech to make")
    parser.add_argument("--steps", type=types.positive_int, default=300, help="downstream training steps")
    parser.add_argument("--rho", type=types.rho, default=1.0)
    parser.add_argument("--strategy", default="threshold")
    parser.add_argument(
        "--task-config",
        default=None,
        help="s3prl voxceleb1 task config to start from (data paths are filled in; "
        "default: the shipped s3prl_configs/voxceleb1/config.yaml)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=types.positive_int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--threads", type=types.threads, help="torch threads in every step (0 or none: torch's default)"
    )
    parser.add_argument(
        "--device", type=types.device, default="cpu", help="torch device of training, evaluation and timing"
    )
    parser.add_argument(
        "--results",
        default=None,
        help="also write the summary's figures to this JSON file (as OUT/demo.json); "
        "'make demo' writes docs/results/demo.json, whose figures the README quotes",
    )
    parser.add_argument("--force", action="store_true", help="replace a --results file an earlier demo wrote")


def run(args: argparse.Namespace) -> int:
    from daisy_upstream.evaluation.demo import DemoSettings, run_demo

    types.set_threads(args.threads)
    names = ("out", "ckpt", "hours", "steps", "rho", "strategy", "task_config", "seed", "workers", "threads")
    run_demo(DemoSettings(**{k: getattr(args, k) for k in names + ("device", "results", "force")}))
    return 0
