"""Table 1: plan, run resumably through s3prl's runner, and render (``daisy table1``).

Each finished cell (see :mod:`.plan`) writes its result file with the inputs it was made
from; running again skips the cells whose inputs are unchanged. A training that stopped
(interrupt, session end) resumes from its newest runner checkpoint (``-e states-N.ckpt``,
exact: :mod:`daisy_upstream.integration.exact_resume`); a finished training asked for more
steps is continued the same way, and the evaluations and timings of its old checkpoint are
redone. Several processes may share one folder: each cell is claimed by a lock file
(:mod:`.lock`). A folder holds one table: a re-run with another checkpoint, fixed layer, seed
or task config (steps aside) is refused.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import yaml

from daisy_upstream.atomic import atomic_write_json, atomic_write_text
from daisy_upstream.core.checkpoint import checkpoint_record
from daisy_upstream.core.expert import load_config
from daisy_upstream.core.policy import evaluation_span
from daisy_upstream.evaluation.mixed_set import mixed_set_comparison, mixed_set_exits
from daisy_upstream.evaluation.task_audio import test_audio_files
from daisy_upstream.integration.runner_io import (
    Runner,
    exit_counts,
    load_runner_checkpoint,
    parse_metric,
    runner_command,
    subprocess_runner,
)

from .baselines import UNPROCESSED_TASKS, unprocessed_metric
from .lock import CellLock
from .plan import SETTINGS, TASK_TITLES, TASKS, TEST_SPLIT, Cell, Row, default_rows, training_configs
from .report import format_elapsed, format_markdown
from .tasks import DATA_PATH_KEYS, SCHEDULE_KEYS, runner_schedule
from .timing import time_rows

__all__ = ["Table1"]


class Table1:
    """Plan, run (resumably) and render Table 1 in ``out``.

    Args:
        out: working directory (configs, experiments, results, ``table1.md``).
        ckpt: DAISY checkpoint (the upstream, ``-k``).
        task_configs: ``{task: config dict}`` with the data paths filled in; each training
            runs the config's ``runner.total_steps`` and is evaluated at its last step.
        fixed_layer: exit layer of the fixed-exit row.
        runner: runs one runner command (``cmd, log``); default
            :func:`daisy_upstream.integration.runner_io.subprocess_runner`.
        threads: torch / OpenMP threads of the runner and of the timing (None: defaults).
        device: torch device of the runner's trainings and evaluations (``--device``) and of
            the timing.
        mixed_corpus: a ``daisy make-corpus`` folder with the ``noisy`` layout: with ASR among
            the tasks, the paper's Fig. 5 is added (DAISY rho 1.0 against a fixed exit of equal
            average compute on the mixed-noise set, the fixed-exit downstream trained apart).
    """

    def __init__(
        self,
        out: Path,
        ckpt: Path,
        task_configs: Mapping[str, Dict[str, Any]],
        fixed_layer: int,
        seed: int = 0,
        runner: Optional[Runner] = None,
        time_repeats: int = 3,
        time_max_utterances: int = 50,
        threads: Optional[int] = 1,
        device: str = "cpu",
        mixed_corpus: Optional[Path] = None,
        log: Callable[[str], None] = lambda m: print(m, flush=True),
    ) -> None:
        self.out = Path(out).resolve()
        self.ckpt = Path(ckpt).resolve()
        self.tasks = [t for t in TASKS if t in task_configs]
        unknown = set(task_configs) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown task(s) {sorted(unknown)}; choose from {', '.join(TASKS)}")
        self.task_configs = dict(task_configs)
        self.steps = {task: int(config["runner"]["total_steps"]) for task, config in self.task_configs.items()}
        self.fixed_layer = int(fixed_layer)
        self.seed = seed
        self.rows = default_rows(self.fixed_layer)
        self.runs = training_configs(self.rows)
        self.runner = runner or functools.partial(subprocess_runner, threads=threads)
        self.threads = threads
        self.device = device
        self.time_repeats = time_repeats
        self.time_max_utterances = time_max_utterances
        self.mixed_corpus = None if mixed_corpus is None else Path(mixed_corpus).resolve()
        self.log = log

    # -- layout -------------------------------------------------------------------------
    def task_dir(self, task: str) -> Path:
        return self.out / "runs" / task

    def train_dir(self, task: str, run: str) -> Path:
        return self.task_dir(task) / f"train_{run}"

    def eval_dir(self, task: str, row: str) -> Path:
        return self.task_dir(task) / f"eval_{row}"

    def final_checkpoint(self, task: str, run: str) -> Path:
        return self.train_dir(task, run) / f"states-{self.steps[task]}.ckpt"

    def upstream_config_path(self, name: str) -> Path:
        return self.out / "upstream" / f"{name}.yaml"

    def task_config_path(self, task: str) -> Path:
        return self.out / "configs" / f"{task}.yaml"

    def cells(self) -> List[Cell]:
        """Every cell, each with the inputs its result must have been made from and the
        result files of the cells it needs (``after``)."""
        cells = []
        for task in self.tasks:
            trains = [self.train_dir(task, run) / "cell.json" for run in self.runs]
            for run in self.runs:
                cells.append(
                    Cell(
                        "train", task, run, self.train_dir(task, run) / "cell.json", inputs={"steps": self.steps[task]}
                    )
                )
            if task == "asr" and self.mixed_corpus is not None:  # early: it trains one more downstream
                cells.append(
                    Cell(
                        "mixed",
                        "asr",
                        "fig5",
                        self.mixed_dir() / "cell.json",
                        inputs={"checkpoint": str(self.final_checkpoint("asr", "rho1.0")), "steps": self.steps["asr"]},
                        after=(self.train_dir("asr", "rho1.0") / "cell.json",),
                    )
                )
            for row in self.rows:
                cells.append(
                    Cell(
                        "eval",
                        task,
                        row.key,
                        self.eval_dir(task, row.key) / "cell.json",
                        inputs={"checkpoint": str(self.final_checkpoint(task, row.run))},
                        after=(self.train_dir(task, row.run) / "cell.json",),
                    )
                )
            cells.append(
                Cell(
                    "time",
                    task,
                    "all",
                    self.task_dir(task) / "timing.json",
                    inputs={"checkpoints": [str(self.final_checkpoint(task, run)) for run in self.runs]},
                    after=tuple(trains),
                )
            )
            if task in UNPROCESSED_TASKS:
                cells.append(Cell("base", task, "unprocessed", self.task_dir(task) / "unprocessed.json"))
        return cells

    def mixed_dir(self) -> Path:
        return self.task_dir("asr") / "mixed_set"

    # -- settings: a folder holds one table ----------------------------------------------
    def settings(self) -> Dict[str, Any]:
        sha256 = checkpoint_record(self.ckpt)["sha256"] if self.ckpt.is_file() else None
        return {
            "ckpt": str(self.ckpt),
            "ckpt_sha256": sha256,
            "fixed_layer": self.fixed_layer,
            "seed": self.seed,
            "task_configs": self.task_configs,
            "mixed_corpus": None if self.mixed_corpus is None else str(self.mixed_corpus),
        }

    def claim(self) -> None:
        """Write the inputs; refuse a folder holding a table made with other settings."""
        path = self.out / SETTINGS
        mine = json.loads(json.dumps(self.settings()))
        if path.is_file():
            before = json.loads(path.read_text())
            for task in set(before.get("task_configs", {})) & set(mine["task_configs"]):
                if _without_schedule(before["task_configs"][task]) != _without_schedule(mine["task_configs"][task]):
                    raise ValueError(
                        f"{self.out} holds a Table 1 whose {task} config differs from this one "
                        "(other than in its steps); use another --out (or delete it to start over)"
                    )
            # the checkpoint by content: the same file elsewhere (another checkout) is the same table
            same = ("ckpt_sha256",) if before.get("ckpt_sha256") else ("ckpt",)
            for key in same + ("fixed_layer", "seed"):
                if before.get(key) != mine[key]:
                    raise ValueError(
                        f"{self.out} holds a Table 1 made with {key}={before.get(key)!r}, "
                        f"not {mine[key]!r}; use another --out (or delete it to start over)"
                    )
            mine["task_configs"] = {**before.get("task_configs", {}), **mine["task_configs"]}
        atomic_write_json(path, mine)

        for task, config in self.task_configs.items():
            atomic_write_text(self.task_config_path(task), yaml.safe_dump(config, sort_keys=False))
        for run, upstream in self.runs.items():
            atomic_write_text(self.upstream_config_path(f"train_{run}"), yaml.safe_dump(upstream, sort_keys=False))
        for row in self.rows:
            atomic_write_text(
                self.upstream_config_path(f"eval_{row.key}"), yaml.safe_dump(row.upstream, sort_keys=False)
            )

    # -- one cell -----------------------------------------------------------------------
    def _train(self, task: str, run: str) -> Dict[str, Any]:
        """Train ``run`` of ``task`` to ``self.steps[task]``: from scratch, or resumed from the
        newest runner checkpoint of an earlier, shorter or interrupted, attempt."""
        expdir = self.train_dir(task, run)
        steps = self.steps[task]
        log = self.task_dir(task) / f"train_{run}.log"
        resume = newest_checkpoint(expdir)
        done = 0 if resume is None else _checkpoint_step(resume)
        if done > steps:
            raise ValueError(
                f"{expdir} holds a {task} training at step {done}, beyond the {steps} steps asked; "
                "ask for at least that many steps, or use another --out"
            )
        schedule = ",,".join(f"config.runner.{k}={v}" for k, v in runner_schedule(steps).items())
        if resume is None:
            if expdir.exists():  # an attempt that saved no checkpoint: start it again
                shutil.rmtree(expdir)
            expdir.mkdir(parents=True)
            log.unlink(missing_ok=True)  # a failed attempt's log goes with it
            self.runner(runner_command(self._fresh_training_args(task, run, expdir, schedule)), log)
        elif done < steps:
            self.log(f"[table1] {task} {run}: resuming from step {done} of {steps} ({resume.name})")
            overrides = ",,".join(self._resume_overrides(task, run, expdir)) + ",," + schedule
            self.runner(
                runner_command(["-m", "train", "-e", str(resume), "--device", self.device, "-o", overrides]), log
            )
        final = self.final_checkpoint(task, run)
        if not final.is_file():
            raise RuntimeError(f"training {task} {run} finished without writing {final}; see {log}")
        return {"checkpoint": str(final), "exit_counts": exit_counts(final), "resumed_from_step": done or None}

    def _fresh_training_args(self, task: str, run: str, expdir: Path, schedule: str) -> List[str]:
        """The runner's arguments of a training of ``run`` started from scratch in ``expdir``."""
        return [
            "-m",
            "train",
            "-d",
            task,
            "-c",
            str(self.task_config_path(task)),
            "-u",
            "daisy_hubert_local",
            "-k",
            str(self.ckpt),
            "-g",
            str(self.upstream_config_path(f"train_{run}")),
            "-p",
            str(expdir),
            "--seed",
            str(self.seed),
            "--device",
            self.device,
            "-o",
            schedule,
        ]

    def _resume_overrides(self, task: str, run: str, expdir: Path) -> List[str]:
        """``-o`` overrides of a resumed training: the checkpoint's own paths (experiment folder,
        upstream, its config, the data) may be another machine's or checkout's; it takes this table's."""
        here = [
            f"args.expdir={expdir}",
            f"args.upstream_ckpt={self.ckpt}",
            f"args.upstream_model_config={self.upstream_config_path(f'train_{run}')}",
        ]
        return here + [f"config.downstream_expert.{key}={value}" for key, value in _data_paths(self.task_configs[task])]

    def _train_cell(self, task: str, run: str) -> None:
        """A training outside the table's runs (Fig. 5's fixed exit), as a resumable cell of its own."""
        cell = Cell("train", task, run, self.train_dir(task, run) / "cell.json", inputs={"steps": self.steps[task]})
        while not cell.done():
            with CellLock(cell.result) as held:  # the table's own fixed run may be training elsewhere
                if held and not cell.done():
                    t0 = time.time()
                    result = self._train(task, run)
                    result.update(seconds=round(time.time() - t0, 1), inputs=cell.inputs)
                    atomic_write_json(cell.result, result)
            if not cell.done():
                time.sleep(30)

    def _evaluate(self, task: str, row: Row) -> Dict[str, Any]:
        expdir = self.eval_dir(task, row.key)
        if expdir.exists():
            shutil.rmtree(expdir)
        expdir.mkdir(parents=True)
        log = self.task_dir(task) / f"eval_{row.key}.log"
        log.unlink(missing_ok=True)
        ckpt = self.final_checkpoint(task, row.run)
        overrides = f"args.upstream_model_config={self.upstream_config_path(f'eval_{row.key}')},,args.expdir={expdir}"
        self.runner(
            runner_command(
                [
                    "-m",
                    "evaluate",
                    "-e",
                    str(ckpt),
                    "-t",
                    TEST_SPLIT[task],
                    "--device",
                    self.device,
                    "-o",
                    overrides,
                ]
            ),
            log,
        )
        counts = exit_counts(ckpt)
        return {
            "metric": parse_metric(task, expdir),
            "checkpoint": str(ckpt),
            "upstream_config": row.upstream,
            "span": evaluation_span(load_config(row.upstream), len(counts), counts),
        }

    def _time(self, task: str) -> Dict[str, Any]:
        return time_rows(
            self.ckpt,
            self.rows,
            {run: exit_counts(self.final_checkpoint(task, run)) for run in self.runs},
            test_audio_files(task, self.task_configs[task])[: self.time_max_utterances],
            repeats=self.time_repeats,
            threads=self.threads,
            device=self.device,
        )

    def _mixed(self) -> Dict[str, Any]:
        """Fig. 5: the rho 1.0 downstream with DAISY vs a downstream trained with the fixed exit
        at the layer of equal average compute on the mixed set (trained here unless that layer
        is the table's fixed layer)."""
        daisy_ckpt = self.final_checkpoint("asr", "rho1.0")
        prepared = mixed_set_exits(self.mixed_corpus, daisy_ckpt, device=self.device)
        layer = prepared["fixed_layer"]
        run = "fixed" if layer == self.fixed_layer else f"fixed{layer}"
        if run != "fixed":
            self.log(f"[table1] Fig. 5: the ASR downstream with the fixed exit at layer {layer}")
            atomic_write_text(
                self.upstream_config_path(f"train_{run}"),
                yaml.safe_dump({"strategy": "fixed", "fixed_layer": layer}, sort_keys=False),
            )
        self._train_cell("asr", run)
        payload = mixed_set_comparison(
            self.task_dir("asr"),
            self.mixed_corpus,
            daisy_ckpt,
            fixed_downstream_ckpt=self.final_checkpoint("asr", run),
            device=self.device,
            threads=self.threads,
            runner=self.runner,
            prepared=prepared,
        )
        return {
            "fixed_layer": layer,
            "fixed_run": run,
            "wer": payload["wer"],
            "json": str(self.mixed_dir() / "mixed_set.json"),
        }

    def run_cell(self, cell: Cell) -> Dict[str, Any]:
        if cell.kind == "train":
            return self._train(cell.task, cell.name)
        if cell.kind == "eval":
            return self._evaluate(cell.task, next(r for r in self.rows if r.key == cell.name))
        if cell.kind == "base":
            return {"metric": unprocessed_metric(cell.task, self.task_configs[cell.task])}
        if cell.kind == "mixed":
            return self._mixed()
        return self._time(cell.task)

    # -- all of it ----------------------------------------------------------------------
    def run(self, wait_seconds: float = 30.0) -> Dict[str, Any]:
        """Run every cell not done yet; cells held by another process sharing ``out`` (and
        the cells that need them) are waited for."""
        self.claim()
        cells = self.cells()
        start = time.time()
        for n, cell in enumerate(cells, start=1):
            if cell.done():
                self.log(f"[table1] ({n}/{len(cells)}) {cell.title}: done before, skipped")
        while True:
            pending = [c for c in cells if not c.done()]
            if not pending:
                break
            ran = False
            for cell in pending:
                if cell.done() or not all(c.done() for c in cells if c.result in cell.after):
                    continue
                with CellLock(cell.result) as held:
                    if held and not cell.done():
                        self._run_one(cell, cells.index(cell) + 1, len(cells), start)
                        ran = True
            if not ran:
                if not any(CellLock.held_elsewhere(c.result) for c in cells if not c.done()):
                    blocked = ", ".join(c.title for c in cells if not c.done())
                    raise RuntimeError(f"table1: {blocked}: cannot run, what they need is not done")
                time.sleep(wait_seconds)
        payload = self.write_outputs()
        self.log(
            f"[table1] all {len(cells)} cells finished; {self.out / 'table1.md'} "
            f"(this run {format_elapsed(time.time() - start)})"
        )
        return payload

    def _run_one(self, cell: Cell, n: int, total: int, start: float) -> None:
        head = f"[table1] ({n}/{total}) {cell.title}"
        self.log(f"{head}: running (elapsed {format_elapsed(time.time() - start)})")
        t0 = time.time()
        result = self.run_cell(cell)
        result.update(seconds=round(time.time() - t0, 1), inputs=cell.inputs)
        atomic_write_json(cell.result, result)
        self.log(f"{head}: finished in {format_elapsed(result['seconds'])}")
        self.write_outputs()

    def collect(self) -> Dict[str, Dict[str, Dict[str, Any]]]:
        """``cells[task][row]``: metric, saved, span, ... from the finished result files."""
        table: Dict[str, Dict[str, Dict[str, Any]]] = {}
        for task in self.tasks:
            timing_path = self.task_dir(task) / "timing.json"
            timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
            for row in self.rows:
                cell: Dict[str, Any] = {}
                path = self.eval_dir(task, row.key) / "cell.json"
                if path.is_file():
                    result = json.loads(path.read_text())
                    cell.update(metric=result["metric"], span=result.get("span"), eval_seconds=result.get("seconds"))
                train = self.train_dir(task, row.run) / "cell.json"
                if train.is_file():
                    result = json.loads(train.read_text())
                    cell.update(train_exit_counts=result.get("exit_counts"), train_seconds=result.get("seconds"))
                mode = timing.get("modes", {}).get(row.key)
                if mode:
                    cell.update(
                        saved=mode["saved"],
                        ideal_saved=mode["ideal_saved"],
                        mean_exit_layer=mode["mean_exit_layer"],
                        test_exit_histogram=mode["exit_histogram"],
                        upstream_seconds=mode["median"],
                    )
                    cell.setdefault("span", mode.get("span"))
                table.setdefault(task, {})[row.key] = cell
            base = self.task_dir(task) / "unprocessed.json"
            if base.is_file():
                table.setdefault(task, {})["unprocessed"] = json.loads(base.read_text())
        return table

    def write_outputs(self) -> Dict[str, Any]:
        cells = self.collect()
        steps = ", ".join(f"{TASK_TITLES[t]} {self.steps[t]}" for t in self.tasks)
        title = (
            f"Table 1 on `{self.out}`: training steps per downstream {steps}; upstream "
            f"`{self.ckpt.name}`; time saved = upstream forward time saved vs the full model "
            "on the task's test audio (batch 1, same weights, median of repeats; the full row's own "
            "value is the timing noise, full vs full)"
        )
        mixed_path = self.mixed_dir() / "cell.json"
        mixed = json.loads(mixed_path.read_text()) if mixed_path.is_file() else None
        markdown = format_markdown(cells, self.rows, self.tasks, title=title, mixed=mixed)
        atomic_write_text(self.out / "table1.md", markdown)
        payload = {
            "settings": json.loads(json.dumps(self.settings())),
            "rows": [{"key": r.key, "label": r.label, "run": r.run, "upstream": r.upstream} for r in self.rows],
            "cells": cells,
            "mixed": mixed,
        }
        atomic_write_json(self.out / "table1.json", payload)
        return payload


_STATES = re.compile(r"^states-(\d+)\.ckpt$")


def _checkpoint_step(path: Path) -> int:
    return int(_STATES.match(path.name).group(1))


def newest_checkpoint(expdir: Path) -> Optional[Path]:
    """The runner checkpoint (``states-N.ckpt``) of the highest step in ``expdir`` that loads
    (one cut short by an interrupt is passed over), or None."""
    if not expdir.is_dir():
        return None
    found = sorted((p for p in expdir.iterdir() if _STATES.match(p.name)), key=_checkpoint_step, reverse=True)
    for path in found:
        try:
            load_runner_checkpoint(path)
        except Exception:  # noqa: BLE001 - truncated or unreadable: an interrupted save
            continue
        return path
    return None


def _data_paths(config: Mapping[str, Any]):
    """``(datarc.key, value)`` of a task config's data paths (what :func:`.tasks.fill_data_paths` sets)."""
    expert = config.get("downstream_expert", {})
    for section in ("datarc", "loaderrc"):
        for key in DATA_PATH_KEYS:
            if key in expert.get(section, {}):
                yield f"{section}.{key}", expert[section][key]


def _without_schedule(config: Mapping[str, Any]) -> Dict[str, Any]:
    """A task config without the runner keys that follow from its steps (those may change)."""
    config = json.loads(json.dumps(config))
    for key in SCHEDULE_KEYS:
        config.get("runner", {}).pop(key, None)
    return config
