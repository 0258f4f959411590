"""Table 1's task configs: CPU-sized heads and learning rates, data paths, the test audio.

The tables at the top are data: ``SMALL_SIZES`` (downstream heads and batches for a CPU,
``--size small``), ``SMALL_STEPS`` (training steps per task at that size), ``SMALL_SCHEDULES``
and ``SMALL_LR`` (learning-rate schedules and rates that differ from the paper's at that size) and ``PAPER_LR`` (the paper's,
``--size paper``, which keeps the shipped config's ``runner.total_steps``).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import yaml

from daisy_upstream.evaluation.task_audio import test_audio_files

__all__ = [
    "read_task_config",
    "PAPER_LR",
    "SAVE_EVERY",
    "SCHEDULE_KEYS",
    "SMALL_LR",
    "SMALL_SCHEDULES",
    "SMALL_SIZES",
    "SMALL_STEPS",
    "fill_data_paths",
    "prepare_task_config",
    "runner_schedule",
    "test_audio_files",
]

#: downstream heads and batches sized for a CPU ("small"), or the shipped configs ("paper"):
#: the smallest heads that learn within the steps of ``SMALL_STEPS`` on the embedded model. ASR
#: has no dropout and 2x-downsampled frames, so that its CTC head leaves the all-blank phase
#: early; SS stays at 2 layers since on small data more depth only overfits. The measurements
#: behind each are in docs/results/table1_embedded.md.
SMALL_SIZES: Dict[str, Dict[str, Any]] = {
    "asr": {
        "datarc": {"batch_size": 8, "eval_batch_size": 8, "num_workers": 1},
        "modelrc": {
            "project_dim": 256,
            "RNNs": {
                "dim": [256, 256],
                "dropout": [0.0, 0.0],
                "layer_norm": [False, False],
                "proj": [False, False],
                "sample_rate": [2, 1],
            },
        },
    },
    "voxceleb1": {
        "datarc": {"train_batch_size": 8, "num_workers": 1, "max_timestep": 64000},
        "modelrc": {"projector_dim": 256},
    },
    "enhancement_stft": {
        "loaderrc": {"train_batchsize": 4, "num_workers": 1},
        "modelrc": {"rnn_layers": 1, "hidden_size": 256},
    },
    "separation_stft": {
        "loaderrc": {"train_batchsize": 4, "num_workers": 1},
        "modelrc": {"rnn_layers": 2, "hidden_size": 256},
    },
}
#: training steps per task at --size small: where each task's dev metric stops improving on the
#: table's corpora (ASR: past both learning-rate drops of ``SMALL_SCHEDULES``; the learning curves
#: are in docs/results/table1_embedded.md). Raising them later resumes the trainings.
SMALL_STEPS: Dict[str, int] = {"asr": 3600, "voxceleb1": 300, "enhancement_stft": 150, "separation_stft": 100}
#: a training saves a runner checkpoint (the point it resumes from) at least this often
SAVE_EVERY = 100
#: the runner keys that follow from the steps (a table's steps may be raised: its trainings resume)
SCHEDULE_KEYS = ("total_steps", "log_step", "save_step", "eval_step")
#: learning-rate schedules at --size small (``daisy_upstream.integration.schedules``): ASR's
#: constant rate plateaus, and each quarter-step after a plateau lowers the dev WER again
#: (docs/results/table1_embedded.md). A decay at fixed steps, not over the total, keeps a
#: training extended by resuming exact.
SMALL_SCHEDULES: Dict[str, Dict[str, Any]] = {
    "asr": {"name": "multistep_schedule", "milestones": [2800, 3200], "gamma": 0.25}
}
#: learning rates at --size small: the paper's are for full-size data (SID's 1e-1 diverges on
#: small corpora; ASR, SE and SS at 1e-4 barely move in a few hundred steps)
SMALL_LR = {"asr": 2.0e-3, "voxceleb1": 1.0e-2, "enhancement_stft": 1.0e-3, "separation_stft": 1.0e-3}
PAPER_LR = {"asr": 1.0e-4, "voxceleb1": 1.0e-1, "enhancement_stft": 1.0e-4, "separation_stft": 1.0e-4}


def _deep_update(target: Dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


#: the data path keys of each task's ``datarc`` / ``loaderrc`` (what :func:`fill_data_paths` sets)
DATA_PATH_KEYS = (
    "libri_root",
    "bucket_file",
    "dict_path",
    "file_path",
    "meta_data",
    "train_dir",
    "dev_dir",
    "test_dir",
)


def fill_data_paths(task: str, config: Dict[str, Any], layout: Mapping[str, str]) -> None:
    """Put a ``corpus.json`` layout's paths into a task config (in place)."""
    expert = config["downstream_expert"]
    if task == "asr":
        expert["datarc"].update(
            libri_root=layout["libri_root"], bucket_file=layout["bucket_file"], dict_path=layout["dict_path"]
        )
    elif task == "voxceleb1":
        expert["datarc"].update(file_path=layout["file_path"], meta_data=layout["meta_data"])
    else:
        expert["loaderrc"].update(train_dir=layout["train_dir"], dev_dir=layout["dev_dir"], test_dir=layout["test_dir"])


def read_task_config(task: str, path: Union[str, Path]) -> Dict[str, Any]:
    """An s3prl task config YAML, checked for the sections Table 1 fills in (before any work).

    Raises:
        ValueError: not a mapping with ``downstream_expert`` and ``runner`` mappings.
        yaml.YAMLError: not YAML.
    """
    with open(path) as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict) or not all(
        isinstance(config.get(k), dict) for k in ("downstream_expert", "runner")
    ):
        raise ValueError(f"{path}: expected an s3prl {task} task config (with downstream_expert and runner sections)")
    return config


def prepare_task_config(
    task: str, base: Dict[str, Any], steps: Optional[int], size: str, layout: Optional[Mapping[str, str]] = None
) -> Dict[str, Any]:
    """A task config for one Table 1 training: data paths, steps, sizes, the paper's lr.

    ``steps`` None: ``SMALL_STEPS[task]`` at size ``small``, the config's own
    ``runner.total_steps`` at size ``paper``.
    """
    if size not in ("small", "paper"):
        raise ValueError(f"size must be 'small' or 'paper', got {size!r}")
    if steps is None:
        steps = SMALL_STEPS[task] if size == "small" else base.get("runner", {}).get("total_steps")
        if steps is None:
            raise ValueError(f"the {task} config has no runner.total_steps; give the number of steps")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    config = copy.deepcopy(base)
    if layout is not None:
        fill_data_paths(task, config, layout)
    _check_no_placeholders(task, config)
    # max_keep 2: s3prl deletes old checkpoints before it writes the new one, so an interrupt
    # during a save leaves the one before it to resume from
    config.setdefault("runner", {}).update(
        gradient_accumulate_steps=1, max_keep=2, exact_resume=True, **runner_schedule(int(steps))
    )
    config.setdefault("optimizer", {})["lr"] = PAPER_LR[task]
    if size == "small":
        _deep_update(config["downstream_expert"], SMALL_SIZES[task])
        if task in SMALL_LR:
            config["optimizer"]["lr"] = SMALL_LR[task]
        if task in SMALL_SCHEDULES:
            config["scheduler"] = copy.deepcopy(SMALL_SCHEDULES[task])
    return config


def runner_schedule(steps: int) -> Dict[str, int]:
    """The runner's step keys for a training of ``steps`` steps: a checkpoint at least every
    ``SAVE_EVERY`` steps and at the last step, a log line every ~fifth, no dev evaluation."""
    return {
        "total_steps": int(steps),
        "log_step": max(1, steps // 5),
        "save_step": math.gcd(int(steps), SAVE_EVERY),
        "eval_step": 10 * int(steps),
    }


def _check_no_placeholders(task: str, config: Mapping[str, Any]) -> None:
    def walk(value, path):
        if isinstance(value, Mapping):
            for k, v in value.items():
                yield from walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(value, str) and value.startswith("/path/to/"):
            yield path

    bad = list(walk(config.get("downstream_expert", {}), "downstream_expert"))
    if bad:
        raise ValueError(
            f"the {task} config still has placeholder data paths: {', '.join(bad)}; "
            "fill them in (see docs/s3prl_recipes.md) or use a corpus (--corpus)"
        )
