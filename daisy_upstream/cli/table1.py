"""``daisy table1``: the paper's Table 1 (four MiniSUPERB tasks, full / DAISY rho x span /
fixed exit), resumable, on ``daisy make-corpus`` corpora or your own task configs.

Per task: 4 downstream trainings (rho 1.0 and 0.7 with the plain threshold while training,
the fixed exit layer, the full model), 8 evaluations (the six DAISY rows evaluate their
rho's checkpoint with the span's upstream config; fixed; full) and one timing of the
upstream on the task's test audio (every row beside the full model, batch 1). Each finished
cell leaves a result file under ``--out``; running the same command again skips them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Dict, List

from daisy_upstream.cli import args as types

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0].replace("\n", " ")
    parser.add_argument(
        "--out",
        default="runs/table1",
        help="working folder (a new or empty one, or one an earlier "
        "table1 made: it continues there); table1.md and table1.json go here",
    )
    parser.add_argument("-k", "--ckpt", help="DAISY checkpoint (default: the embedded tiny model)")
    _add_data_arguments(parser)
    _add_run_arguments(parser)


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The tasks and their data: corpora to make or use, or the user's own task configs."""
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        help="subset of asr voxceleb1 enhancement_stft separation_stft (default: all four)",
    )
    parser.add_argument(
        "--corpus",
        action="append",
        default=[],
        metavar="[TASK=]DIR",
        help="an existing 'daisy make-corpus' directory (holds corpus.json), for every task or, "
        "as TASK=DIR, for one (repeatable); default: make them in OUT/corpus and OUT/corpus_asr",
    )
    parser.add_argument(
        "--hours",
        type=types.positive_float,
        default=1.0,
        help="speech to synthesise for the SID, SE and SS corpus (default 1.0: ~50 voices)",
    )
    parser.add_argument(
        "--asr-hours",
        type=types.positive_float,
        default=8.0,
        help="speech to synthesise for the ASR corpus, which also holds Fig. 5's mixed-noise set "
        "(default 8.0: ~6 h of training speech from 320 voices, 50 voices an hour; the ASR head needs "
        "more than the others; equal to --hours: one corpus of make-corpus's default voices)",
    )
    parser.add_argument(
        "--data-config",
        action="append",
        default=[],
        metavar="TASK=PATH",
        help="your own s3prl task config with the data paths filled in (repeatable); "
        "used instead of the corpus for that task",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """How the table's trainings, evaluations and timings run."""
    parser.add_argument(
        "--steps",
        type=types.positive_int,
        default=None,
        help="downstream training steps of every training (default: per task, "
        "evaluation.table1.tasks.SMALL_STEPS at --size small, the config's own at --size paper)",
    )
    parser.add_argument(
        "--fixed-layer",
        type=int,
        default=None,
        help="exit layer of the fixed-exit row (default: half the model's layers; the paper: 6 of 12)",
    )
    parser.add_argument(
        "--size",
        choices=("small", "paper"),
        default="small",
        help="downstream heads and batches: 'small' (CPU-sized, SID lr 1e-2) or 'paper' "
        "(the shipped configs and the paper's learning rates)",
    )
    parser.add_argument("--time-repeats", type=int, default=5, help="timing repeats (median)")
    parser.add_argument("--time-max-utterances", type=int, default=50, help="test utterances timed per task")
    parser.add_argument(
        "--threads",
        type=types.threads,
        default=1,
        help="torch/OpenMP threads for training, evaluation and timing (default 1: honest "
        "batch-1 timings on a shared machine; 0 = torch's default)",
    )
    parser.add_argument(
        "--device", type=types.device, default="cpu", help="torch device of the trainings, evaluations and timing"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for making the corpus")


def _parse_data_configs(items: List[str]) -> Dict[str, Path]:
    from daisy_upstream.evaluation.table1 import TASKS

    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--data-config takes TASK=PATH, got {item!r}")
        task, path = item.split("=", 1)
        if task not in TASKS:
            raise ValueError(f"--data-config {item!r}: unknown task {task!r}; choose from {', '.join(TASKS)}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"--data-config {item!r}: {path} does not exist")
        out[task] = Path(path).resolve()
    return out


def _checkpoint_and_fixed_layer(args: argparse.Namespace):
    """The checkpoint (default: the embedded one) and the fixed-exit row's layer, checked."""
    from daisy_upstream.core.checkpoint import load_daisy_checkpoint
    from daisy_upstream.integration.hubconf import DEFAULT_CHECKPOINT

    ckpt = Path(args.ckpt).resolve() if args.ckpt else DEFAULT_CHECKPOINT
    if not ckpt.exists():  # a file or a transformers folder
        raise FileNotFoundError(
            f"checkpoint {ckpt} does not exist (-k/--ckpt; the embedded one is made by "
            "'daisy pretrain-tiny' + 'daisy train-branches')"
        )
    num_layers = load_daisy_checkpoint(ckpt).num_layers
    fixed_layer = args.fixed_layer if args.fixed_layer is not None else max(1, num_layers // 2)
    if not 1 <= fixed_layer <= num_layers:
        raise ValueError(f"--fixed-layer {fixed_layer}: the model has layers 1..{num_layers}")
    return ckpt, fixed_layer


def _task_configs(args: argparse.Namespace, tasks: List[str]):
    """Every task config read and checked before any work (a bad YAML must not wait for a corpus):
    ``(base configs, the prepared configs of the user's own, the tasks that need a corpus, --corpus)``."""
    from daisy_upstream.evaluation.table1 import prepare_task_config, read_task_config
    from daisy_upstream.evaluation.table1.corpora import parse_corpus_args
    from daisy_upstream.integration.plugin import s3prl_configs

    own = _parse_data_configs(args.data_config)
    extra = sorted(set(own) - set(tasks))
    if extra:
        raise ValueError(f"--data-config given for {extra}, which --tasks leaves out")
    bases = {task: read_task_config(task, own.get(task, s3prl_configs() / task / "config.yaml")) for task in tasks}
    configs = {task: prepare_task_config(task, bases[task], args.steps, args.size) for task in own}
    need_corpus = [t for t in tasks if t not in own]
    given = parse_corpus_args(args.corpus)
    unused = sorted(set(given) - {None} - set(need_corpus))
    if unused:
        raise ValueError(f"--corpus given for {unused}, which --tasks leaves out or --data-config replaces")
    return bases, configs, need_corpus, given


def run(args: argparse.Namespace) -> int:
    from daisy_upstream.evaluation.table1 import TASKS, Table1, holds_table, prepare_task_config
    from daisy_upstream.evaluation.table1.corpora import (
        assign_corpora,
        has_mixed_set,
        make_missing_corpora,
        task_layout,
    )
    from daisy_upstream.outputs import claim_working_folder

    tasks = list(args.tasks or TASKS)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"--tasks: unknown {unknown}; choose from {', '.join(TASKS)}")
    ckpt, fixed_layer = _checkpoint_and_fixed_layer(args)
    bases, configs, need_corpus, given = _task_configs(args, tasks)
    # a folder of the user's own files is refused before anything is written (outputs.py)
    out = claim_working_folder(args.out, "table1", made_before=holds_table).resolve()
    corpora = assign_corpora(need_corpus, given, out, args.hours, args.asr_hours)
    make_missing_corpora(corpora, out, args.hours, args.asr_hours, args.seed, args.workers)
    for task, corpus in corpora.items():
        configs[task] = prepare_task_config(task, bases[task], args.steps, args.size, task_layout(task, corpus))
    mixed_corpus = corpora["asr"] if "asr" in corpora and has_mixed_set(corpora["asr"]) else None  # Fig. 5
    table = Table1(
        out,
        ckpt,
        configs,
        fixed_layer=fixed_layer,
        seed=args.seed,
        time_repeats=args.time_repeats,
        time_max_utterances=args.time_max_utterances,
        threads=args.threads or None,
        device=args.device,
        mixed_corpus=mixed_corpus,
    )
    table.run()
    print((out / "table1.md").read_text())
    return 0
