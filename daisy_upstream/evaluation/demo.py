"""``daisy demo``: the main job on the embedded default, start to finish.

1. make a small synthetic corpus (SID layout) with ``daisy make-corpus``;
2. train s3prl's stock ``voxceleb1`` downstream on ``-u daisy_hubert`` (the embedded model)
   for a few hundred steps with s3prl's own runner, counting exits;
3. evaluate the test split with ``-m evaluate -e`` (the span comes from the saved counts);
4. measure: accuracy, exit-layer histograms, upstream time saved vs the full model; print a
   summary and write it as ``demo.json`` (:func:`demo_results`; the README's demo figures are
   copied from the committed ``docs/results/demo.json``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import yaml

from daisy_upstream.atomic import atomic_write_json, atomic_write_text
from daisy_upstream.audio.io import load_audio
from daisy_upstream.core.checkpoint import checkpoint_record, load_daisy_checkpoint
from daisy_upstream.core.policy import make_plan
from daisy_upstream.evaluation.benchmark import Mode, run_benchmark
from daisy_upstream.evaluation.loading import load_upstream
from daisy_upstream.evaluation.task_audio import test_audio_files
from daisy_upstream.factory.corpus.build import make_corpus
from daisy_upstream.integration.hubconf import DEFAULT_CHECKPOINT
from daisy_upstream.integration.plugin import s3prl_configs
from daisy_upstream.integration.runner_io import runner_command, sid_accuracy, subprocess_runner
from daisy_upstream.outputs import check_output_files, claim_working_folder, output_files

__all__ = ["DemoSettings", "demo_results", "demo_task_config", "format_summary", "read_task_config", "run_demo"]

#: timing repeats of the summary (``daisy bench``'s default)
REPEATS = 5

PathLike = Union[str, Path]


@dataclass
class DemoSettings:
    """What ``daisy demo``'s options set (see its ``--help``)."""

    out: PathLike = "runs/demo"
    ckpt: Optional[PathLike] = None
    hours: float = 0.4
    steps: int = 300
    rho: float = 1.0
    strategy: str = "threshold"
    task_config: Optional[PathLike] = None
    seed: int = 0
    workers: int = 1
    threads: Optional[int] = None
    device: str = "cpu"
    results: Optional[PathLike] = None
    force: bool = False


def _say(message: str) -> None:
    print(f"\n[demo] {message}", flush=True)


def read_task_config(path: Optional[PathLike]) -> Dict[str, Any]:
    """The voxceleb1 task config (default: the shipped one), checked for the sections the demo fills in."""
    path = path or s3prl_configs() / "voxceleb1" / "config.yaml"
    with open(path) as f:
        config = yaml.safe_load(f)
    datarc = config.get("downstream_expert", {}).get("datarc") if isinstance(config, dict) else None
    if not isinstance(datarc, dict) or not all(isinstance(config.get(k), dict) for k in ("runner", "optimizer")):
        raise ValueError(
            f"--task-config {path}: expected an s3prl voxceleb1 config (downstream_expert.datarc, runner, optimizer)"
        )
    return config


def demo_task_config(base: Dict[str, Any], corpus: Path, steps: int) -> Dict[str, Any]:
    """``base`` (a voxceleb1 config) with the corpus's data paths and a CPU-sized run of ``steps``."""
    sid = json.loads((corpus / "corpus.json").read_text())["layouts"]["sid"]
    base["downstream_expert"]["datarc"].update(
        file_path=sid["file_path"], meta_data=sid["meta_data"], num_workers=1, train_batch_size=8, max_timestep=64000
    )
    base["runner"].update(
        total_steps=steps,
        gradient_accumulate_steps=1,
        log_step=max(1, steps // 6),
        eval_step=steps,
        save_step=steps,
        max_keep=1,
        eval_dataloaders=["dev"],
    )
    base["optimizer"]["lr"] = 1.0e-2  # the paper's 1e-1 is for 1,251 speakers and 200k steps
    return base


def demo_results(
    settings: DemoSettings, config: Dict[str, Any], exp: Path, ckpt: PathLike, upstream_cfg: Path
) -> Dict[str, Any]:
    """What the demo measured, as ``demo.json`` holds it (no path of this machine in it)."""
    loaded = load_upstream(ckpt, upstream_cfg, stats=exp / f"states-{settings.steps}.ckpt", device=settings.device)
    upstream = loaded.upstream
    files = test_audio_files("voxceleb1", config)
    wavs = [load_audio(p).to(settings.device) for p in files]
    modes = [Mode("full", make_plan([upstream.num_layers], None)), Mode("daisy", upstream.current_plan())]
    full, daisy = run_benchmark(upstream.net, wavs, modes, batch_sizes=(1,), repeats=REPEATS, warmup=1)
    return {
        "checkpoint": checkpoint_record(ckpt),
        "settings": {k: getattr(settings, k) for k in ("hours", "steps", "rho", "strategy", "seed", "device")},
        "num_layers": upstream.num_layers,
        "tau": upstream.tau,
        "test_accuracy": sid_accuracy(exp / "log.log", "test"),
        "test_utterances": len(wavs),
        "speakers": len({p.parts[-3] for p in files}),
        "training_exits": loaded.exit_counts,
        "evaluation_span": upstream.current_span(),
        "test_exits": list(daisy.exit_histogram),
        "mean_exit_layer": daisy.mean_exit_layer,
        "upstream_seconds": {"full": full.median, "daisy": daisy.median},
        "saved": daisy.saved,
        "ideal_saved": daisy.ideal_saved,
        "efficiency": daisy.efficiency,
        "timing": {"batch_size": 1, "repeats": REPEATS},
    }


def format_summary(results: Dict[str, Any], exp: Path, upstream_cfg: Path) -> str:
    """The summary ``daisy demo`` prints at the end (the figures of :func:`demo_results`)."""
    accuracy, efficiency, settings = results["test_accuracy"], results["efficiency"], results["settings"]
    seconds = results["upstream_seconds"]
    chance = 100 / max(1, results["speakers"])
    return "\n".join(
        [
            "=" * 72,
            "DAISY demo: SID (s3prl voxceleb1 downstream) on the embedded tiny HuBERT",
            f"  experiment directory : {exp}",
            f"  upstream config      : {upstream_cfg} (rho {settings['rho']}, strategy {settings['strategy']}, "
            f"tau {results['tau']:.4f})",
            f"  test accuracy        : {'n/a' if accuracy is None else f'{100 * accuracy:.2f}%'} "
            f"({results['test_utterances']} test utterances; chance {chance:.1f}%)",
            f"  training exits       : {results['training_exits']} (utterances per exit layer "
            f"1..{results['num_layers']})",
            f"  evaluation span      : layers {results['evaluation_span']}",
            f"  test exits           : {results['test_exits']} (mean layer {results['mean_exit_layer']:.2f})",
            f"  upstream time, test  : full {seconds['full']:.3f} s, DAISY {seconds['daisy']:.3f} s -> "
            f"{100 * results['saved']:.1f}% saved (ideal {100 * results['ideal_saved']:.1f}%, efficiency "
            f"{'n/a' if efficiency is None else f'{efficiency:.2f}'}; batch 1, the bench's paired "
            f"saving: median over {results['timing']['repeats']} interleaved repeats)",
            "=" * 72,
        ]
    )


def _check_inputs(settings: DemoSettings) -> str:
    """The checkpoint's path; a bad checkpoint, task config or results file fails here, before any work."""
    ckpt = str(Path(settings.ckpt).resolve()) if settings.ckpt else str(DEFAULT_CHECKPOINT)
    if not Path(ckpt).exists():  # a file or a transformers folder
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist (-k/--ckpt)")
    load_daisy_checkpoint(ckpt)
    read_task_config(settings.task_config)
    if settings.results is not None:  # refused now rather than after the run
        check_output_files([settings.results], "demo", settings.force, (settings.ckpt, settings.task_config))
    return ckpt


def _train_and_evaluate(
    settings: DemoSettings, ckpt: str, task_cfg: Path, upstream_cfg: Path, exp: Path, log: Path
) -> None:
    """Steps 2 and 3: train the downstream (unless a finished training is there), evaluate the test split."""
    final = exp / f"states-{settings.steps}.ckpt"
    device = ["--device", settings.device]
    if not final.is_file():
        _say(f"2/4 training the voxceleb1 downstream for {settings.steps} steps (s3prl's runner)")
        train = ["-m", "train", "-d", "voxceleb1", "-c", str(task_cfg), "-g", str(upstream_cfg), "-p", str(exp)]
        train += ["--seed", str(settings.seed), "-u", "daisy_hubert_local", "-k", ckpt, *device]
        subprocess_runner(runner_command(train), log, threads=settings.threads, echo=True)
    else:
        _say(f"2/4 {final} exists: training skipped")
    _say("3/4 evaluating the test split with -m evaluate -e (span from the saved exit counts)")
    evaluate = ["-m", "evaluate", "-t", "test", "-e", str(final), *device]
    subprocess_runner(runner_command(evaluate), log, threads=settings.threads, echo=True)


def run_demo(settings: DemoSettings) -> Dict[str, Any]:
    """Run the demo in the working folder ``settings.out`` (re-run to continue); its results."""
    start = time.time()
    ckpt = _check_inputs(settings)
    # a working folder (re-run to continue): the corpus and the runner record absolute paths in it
    out = claim_working_folder(settings.out, "demo", (settings.ckpt, settings.task_config)).resolve()
    log, exp = out / "demo.log", out / "exp_sid"
    _say(f"1/4 making a {settings.hours} h synthetic corpus in {out / 'corpus'}")
    make_corpus(out / "corpus", hours=settings.hours, seed=settings.seed, tasks=["sid"], workers=settings.workers)
    task_cfg, upstream_cfg = out / "voxceleb1.yaml", out / "daisy_upstream.yaml"
    config = demo_task_config(read_task_config(settings.task_config), out / "corpus", settings.steps)
    atomic_write_text(task_cfg, yaml.safe_dump(config, sort_keys=False))
    atomic_write_text(upstream_cfg, yaml.safe_dump({"rho": settings.rho, "strategy": settings.strategy}))
    _train_and_evaluate(settings, ckpt, task_cfg, upstream_cfg, exp, log)
    _say("4/4 timing the upstream on the test audio (full vs DAISY)")
    results = demo_results(settings, config, exp, ckpt, upstream_cfg)
    summary = format_summary(results, exp, upstream_cfg)
    print(summary)
    atomic_write_text(out / "summary.txt", summary + "\n")
    atomic_write_json(out / "demo.json", results)
    if settings.results is not None:
        with output_files([settings.results], "demo", settings.force, (settings.ckpt, settings.task_config)) as [tmp]:
            atomic_write_json(tmp, results)
    print(f"[demo] done in {(time.time() - start) / 60:.1f} min; experiment in {exp}; log {log}")
    return results
