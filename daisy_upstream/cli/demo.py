"""``daisy demo``: the main job on the embedded default, start to finish.

1. make a small synthetic corpus (SID layout) with ``daisy make-corpus``;
2. train s3prl's stock ``voxceleb1`` downstream on ``-u daisy_hubert`` (the embedded model)
   for a few hundred steps with s3prl's own runner, counting exits;
3. evaluate the test split with ``-m evaluate -e`` (the span comes from the saved counts);
4. print a summary: accuracy, exit-layer histograms, upstream time saved vs the full model.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional

import yaml

from daisy_upstream.atomic import atomic_write_text
from daisy_upstream.cli import args as types

__all__ = ["add_arguments", "run"]

#: timing repeats of the summary (``daisy bench``'s default)
REPEATS = 5


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


def _say(message: str) -> None:
    print(f"\n[demo] {message}", flush=True)


def _read_task_config(path: Optional[str]) -> Dict[str, Any]:
    """The voxceleb1 task config (default: the shipped one), checked for the sections the demo fills in."""
    from daisy_upstream.integration.plugin import s3prl_configs

    path = path or s3prl_configs() / "voxceleb1" / "config.yaml"
    with open(path) as f:
        config = yaml.safe_load(f)
    datarc = config.get("downstream_expert", {}).get("datarc") if isinstance(config, dict) else None
    if not isinstance(datarc, dict) or not all(isinstance(config.get(k), dict) for k in ("runner", "optimizer")):
        raise ValueError(
            f"--task-config {path}: expected an s3prl voxceleb1 config (downstream_expert.datarc, runner, optimizer)"
        )
    return config


def _task_config(args: argparse.Namespace, corpus: Path) -> Dict[str, Any]:
    """The shipped voxceleb1 config with the corpus's data paths and a CPU-sized run."""
    manifest = json.loads((corpus / "corpus.json").read_text())
    sid = manifest["layouts"]["sid"]

    config = _read_task_config(args.task_config)
    datarc = config["downstream_expert"]["datarc"]
    datarc.update(
        file_path=sid["file_path"], meta_data=sid["meta_data"], num_workers=1, train_batch_size=8, max_timestep=64000
    )
    config["runner"].update(
        total_steps=args.steps,
        gradient_accumulate_steps=1,
        log_step=max(1, args.steps // 6),
        eval_step=args.steps,
        save_step=args.steps,
        max_keep=1,
        eval_dataloaders=["dev"],
    )
    config["optimizer"]["lr"] = 1.0e-2  # the paper's 1e-1 is for 1,251 speakers and 200k steps
    return config


def _summary(args: argparse.Namespace, config: Dict[str, Any], exp: Path, ckpt: str, upstream_cfg: Path) -> str:
    from daisy_upstream.audio.io import load_audio
    from daisy_upstream.core.policy import make_plan
    from daisy_upstream.evaluation.benchmark import Mode, run_benchmark
    from daisy_upstream.evaluation.loading import load_upstream
    from daisy_upstream.evaluation.table1.tasks import test_audio_files
    from daisy_upstream.integration.runner_io import sid_accuracy

    loaded = load_upstream(ckpt, upstream_cfg, stats=exp / f"states-{args.steps}.ckpt", device=args.device)
    upstream, train_counts = loaded.upstream, loaded.exit_counts
    accuracy: Optional[float] = sid_accuracy(exp / "log.log", "test")
    files = test_audio_files("voxceleb1", config)
    wavs = [load_audio(p).to(args.device) for p in files]
    L = upstream.num_layers
    modes = [Mode("full", make_plan([L], None)), Mode("daisy", upstream.current_plan())]
    full, daisy = run_benchmark(upstream.net, wavs, modes, batch_sizes=(1,), repeats=REPEATS, warmup=1)
    speakers = len({p.parts[-3] for p in files})
    lines = [
        "=" * 72,
        "DAISY demo: SID (s3prl voxceleb1 downstream) on the embedded tiny HuBERT",
        f"  experiment directory : {exp}",
        f"  upstream config      : {upstream_cfg} (rho {args.rho}, strategy {args.strategy}, tau {upstream.tau:.4f})",
        f"  test accuracy        : {'n/a' if accuracy is None else f'{100 * accuracy:.2f}%'} "
        f"({len(wavs)} test utterances; chance {100 / max(1, speakers):.1f}%)",
        f"  training exits       : {train_counts} (utterances per exit layer 1..{L})",
        f"  evaluation span      : layers {upstream.current_span()}",
        f"  test exits           : {daisy.exit_histogram} (mean layer {daisy.mean_exit_layer:.2f})",
        f"  upstream time, test  : full {full.median:.3f} s, DAISY {daisy.median:.3f} s -> "
        f"{100 * daisy.saved:.1f}% saved (ideal {100 * daisy.ideal_saved:.1f}%, efficiency "
        f"{'n/a' if daisy.efficiency is None else f'{daisy.efficiency:.2f}'}; batch 1, the bench's paired "
        f"saving: median over {REPEATS} interleaved repeats)",
        "=" * 72,
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from daisy_upstream.integration.hubconf import DEFAULT_CHECKPOINT
    from daisy_upstream.integration.runner_io import runner_command, subprocess_runner

    start = time.time()
    ckpt = str(Path(args.ckpt).resolve()) if args.ckpt else str(DEFAULT_CHECKPOINT)
    if not Path(ckpt).exists():  # a file or a transformers folder
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist (-k/--ckpt)")
    from daisy_upstream.core.checkpoint import load_daisy_checkpoint

    load_daisy_checkpoint(ckpt)  # a bad checkpoint fails here, not after the corpus is made
    _read_task_config(args.task_config)  # so does a bad task config
    types.set_threads(args.threads)
    from daisy_upstream.outputs import claim_working_folder

    # a working folder (re-run to continue): the corpus and the runner record absolute paths in it
    out = claim_working_folder(args.out, "demo", (args.ckpt, args.task_config)).resolve()
    log = out / "demo.log"

    _say(f"1/4 making a {args.hours} h synthetic corpus in {out / 'corpus'}")
    from daisy_upstream.factory.corpus.build import make_corpus

    make_corpus(out / "corpus", hours=args.hours, seed=args.seed, tasks=["sid"], workers=args.workers)

    task_cfg, upstream_cfg = out / "voxceleb1.yaml", out / "daisy_upstream.yaml"
    config = _task_config(args, out / "corpus")
    atomic_write_text(task_cfg, yaml.safe_dump(config, sort_keys=False))
    atomic_write_text(upstream_cfg, yaml.safe_dump({"rho": args.rho, "strategy": args.strategy}))
    exp = out / "exp_sid"
    final = exp / f"states-{args.steps}.ckpt"
    device = ["--device", args.device]
    if not final.is_file():
        _say(f"2/4 training the voxceleb1 downstream for {args.steps} steps (s3prl's runner)")
        subprocess_runner(
            runner_command(
                [
                    "-m",
                    "train",
                    "-d",
                    "voxceleb1",
                    "-c",
                    str(task_cfg),
                    "-g",
                    str(upstream_cfg),
                    "-p",
                    str(exp),
                    "--seed",
                    str(args.seed),
                    "-u",
                    "daisy_hubert_local",
                    "-k",
                    ckpt,
                    *device,
                ]
            ),
            log,
            threads=args.threads,
            echo=True,
        )
    else:
        _say(f"2/4 {final} exists: training skipped")
    _say("3/4 evaluating the test split with -m evaluate -e (span from the saved exit counts)")
    subprocess_runner(
        runner_command(["-m", "evaluate", "-t", "test", "-e", str(final), *device]),
        log,
        threads=args.threads,
        echo=True,
    )
    _say("4/4 timing the upstream on the test audio (full vs DAISY)")
    summary = _summary(args, config, exp, ckpt, upstream_cfg)
    print(summary)
    atomic_write_text(out / "summary.txt", summary + "\n")
    print(f"[demo] done in {(time.time() - start) / 60:.1f} min; experiment in {exp}; log {log}")
    return 0
