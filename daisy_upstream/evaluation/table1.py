"""The paper's Table 1 on any data: four MiniSUPERB tasks x (full / rho x span / fixed exit).

A run is a list of *cells*, each finished cell leaving a result file, so an interrupted run
resumes where it stopped:

* ``train``: one s3prl downstream training per (task, run), run in
  ``rho1.0``, ``rho0.7`` (the upstream runs the plain threshold, strategy ``none``, and the
  DAISY featurizer counts where utterances exit), ``fixed`` (strategy ``fixed``) and ``full``;
* ``eval``: one ``-m evaluate -e`` per (task, row); the six DAISY rows evaluate the
  checkpoint of their rho with the span's upstream config given as
  ``-o args.upstream_model_config=...`` (the span comes from the training's exit counts);
* ``time``: per task, the upstream forward on that task's test audio, every row side by
  side with the full model in one :func:`daisy_upstream.evaluation.benchmark.run_benchmark` call
  (same weights, same audio, batch 1).

The metric of an evaluation is read from the files s3prl 0.4.18's downstream experts write
into the experiment directory: ASR ``<split>-noLM-{hyp,ref}.ark`` (WER recomputed over
words as ``asr/expert.py`` does), SID ``log.log`` (``test at step N: acc``), SE / SS
``test_metrics.txt`` (``pesq``, ``stoi``, ``si_sdr``; SS's ``si_sdr`` is the improvement
over the mixture, SI-SDRi).
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from daisy_upstream.atomic import atomic_write_json, atomic_write_text

__all__ = [
    "TASKS",
    "Cell",
    "Row",
    "Table1",
    "default_rows",
    "format_markdown",
    "parse_metric",
    "test_audio_files",
]

#: s3prl ``-d`` names in the paper's column order.
TASKS = ("asr", "voxceleb1", "enhancement_stft", "separation_stft")
TASK_TITLES = {"asr": "ASR", "voxceleb1": "SID", "enhancement_stft": "SE", "separation_stft": "SS"}
#: the corpus.json layout of each task (``daisy make-corpus``)
CORPUS_LAYOUT = {"asr": "asr", "voxceleb1": "sid", "enhancement_stft": "se", "separation_stft": "ss"}
#: the split ``-t`` evaluates
TEST_SPLIT = {"asr": "test-clean", "voxceleb1": "test", "enhancement_stft": "test", "separation_stft": "test"}
RHOS = (1.0, 0.7)
SPANS = ("mean", "threshold", "min-max")
RUNNER_CODE = "import sys; from daisy_upstream.integration.plugin import run_downstream; sys.exit(run_downstream())"


# ---------------------------------------------------------------------------------------
# rows and cells
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One row of Table 1: which training run it evaluates and with which upstream config."""

    key: str
    label: str
    run: str  # training run: rho1.0, rho0.7, fixed, full
    upstream: Dict[str, Any] = field(hash=False, compare=False)


def _rho_key(rho: float) -> str:
    return f"rho{rho:.1f}"


def default_rows(fixed_layer: int, rhos: Sequence[float] = RHOS, spans: Sequence[str] = SPANS) -> List[Row]:
    """The paper's rows: DAISY rho x span, the fixed exit layer, the full model."""
    rows = []
    for rho in rhos:
        for span in spans:
            rows.append(Row(f"{_rho_key(rho)}-{span}", f"DAISY rho={rho:.1f}, {span}", _rho_key(rho),
                            {"rho": float(rho), "strategy": span}))
    rows.append(Row("fixed", f"HuBERT first {fixed_layer}L (fixed exit)", "fixed",
                    {"strategy": "fixed", "fixed_layer": int(fixed_layer)}))
    rows.append(Row("full", "HuBERT, full model", "full", {"strategy": "full"}))
    return rows


def training_configs(rows: Sequence[Row]) -> Dict[str, Dict[str, Any]]:
    """Upstream config of each training run (DAISY rho runs train with strategy ``none``)."""
    runs: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        if row.run.startswith("rho"):
            runs.setdefault(row.run, {"rho": row.upstream["rho"], "strategy": "none"})
        else:
            runs.setdefault(row.run, dict(row.upstream))
    return runs


@dataclass(frozen=True)
class Cell:
    """A unit of work that leaves ``result`` (a JSON file) when finished."""

    kind: str  # train | eval | time
    task: str
    name: str  # run (train), row key (eval), "all" (time)
    result: Path

    @property
    def title(self) -> str:
        return f"{self.kind} {self.task} {self.name}"

    def done(self) -> bool:
        return self.result.is_file()


# ---------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------
def _fmt_elapsed(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


# ---------------------------------------------------------------------------------------
# metrics from what the runner writes
# ---------------------------------------------------------------------------------------
def _read_ark(path: Path) -> Dict[str, List[str]]:
    out = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        parts = line.split()
        out[parts[0]] = parts[1:]
    return out


def word_errors(hyp_ark: Path, ref_ark: Path, keys: Optional[Sequence[str]] = None) -> Tuple[int, int]:
    """(word edits, reference words) over the utterances of two s3prl ``.ark`` files."""
    import editdistance

    hyp, ref = _read_ark(hyp_ark), _read_ark(ref_ark)
    if set(hyp) != set(ref):
        raise ValueError(f"{hyp_ark} and {ref_ark} list different utterances")
    errors = words = 0
    for key in (ref if keys is None else keys):
        errors += editdistance.eval(hyp[key], ref[key])
        words += len(ref[key])
    return errors, words


def _metrics_txt(path: Path) -> Dict[str, float]:
    values = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            values[parts[0]] = float(parts[1])
    return values


def parse_metric(task: str, expdir: Path, split: Optional[str] = None) -> Dict[str, float]:
    """The task metric of an evaluation from the files in its experiment directory.

    Returns ``{"wer": %}`` (ASR), ``{"acc": %}`` (SID), ``{"pesq", "stoi" (%), "si_sdr"}``
    (SE) or ``{"si_sdri"}`` (SS).

    Raises:
        FileNotFoundError / ValueError: the evaluation did not write what is expected.
    """
    expdir = Path(expdir)
    split = split or TEST_SPLIT[task]
    if task == "asr":
        hyp, ref = expdir / f"{split}-noLM-hyp.ark", expdir / f"{split}-noLM-ref.ark"
        if not hyp.is_file():
            raise FileNotFoundError(f"ASR evaluation wrote no {hyp}")
        errors, words = word_errors(hyp, ref)
        if words == 0:
            raise ValueError(f"{ref} holds no reference words")
        return {"wer": 100.0 * errors / words, "utterances": len(_read_ark(ref))}
    if task == "voxceleb1":
        log = expdir / "log.log"
        if not log.is_file():
            raise FileNotFoundError(f"SID evaluation wrote no {log}")
        acc = None
        for line in log.read_text().splitlines():
            if line.startswith(f"{split} at step"):
                acc = float(line.rsplit(":", 1)[1])
        if acc is None:
            raise ValueError(f"{log} has no '{split} at step N: accuracy' line")
        return {"acc": 100.0 * acc}
    path = expdir / f"{split}_metrics.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{task} evaluation wrote no {path}")
    values = _metrics_txt(path)
    if task == "enhancement_stft":
        missing = {"pesq", "stoi", "si_sdr"} - set(values)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}")
        return {"pesq": values["pesq"], "stoi": 100.0 * values["stoi"], "si_sdr": values["si_sdr"]}
    if task == "separation_stft":
        if "si_sdr" not in values:
            raise ValueError(f"{path} lacks si_sdr")
        return {"si_sdri": values["si_sdr"]}
    raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")


def format_metric(task: str, metric: Optional[Mapping[str, float]]) -> str:
    if not metric:
        return "–"
    if task == "asr":
        return f"{metric['wer']:.2f}%"
    if task == "voxceleb1":
        return f"{metric['acc']:.2f}%"
    if task == "enhancement_stft":
        return f"{metric['pesq']:.2f} / {metric['stoi']:.1f}"
    return f"{metric['si_sdri']:.2f}"


METRIC_HEADERS = {
    "asr": "ASR WER ↓",
    "voxceleb1": "SID acc ↑",
    "enhancement_stft": "SE PESQ / STOI ↑",
    "separation_stft": "SS SI-SDRi ↑",
}


def format_markdown(cells: Mapping[str, Mapping[str, Mapping[str, Any]]], rows: Sequence[Row],
                    tasks: Sequence[str], title: Optional[str] = None) -> str:
    """The paper's Table 1 layout.

    Args:
        cells: ``cells[task][row_key]`` with optional ``metric`` (as :func:`parse_metric`),
            ``saved`` (fraction of the full model's upstream time), ``span``,
            ``mean_exit_layer``.
        rows: the rows, top to bottom.
        tasks: the column groups, left to right.
    """
    header = ["method"]
    for task in tasks:
        header += [METRIC_HEADERS[task], f"{TASK_TITLES[task]} time saved"]
    lines = []
    if title:
        lines += [title, ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (2 * len(tasks))) + "|"]
    for row in rows:
        values = [row.label]
        for task in tasks:
            cell = cells.get(task, {}).get(row.key, {})
            values.append(format_metric(task, cell.get("metric")))
            saved = cell.get("saved")
            values.append("–" if saved is None else f"{100 * saved:.2f}%")
        lines.append("| " + " | ".join(values) + " |")
    # where the rows exited: span and mean exit layer on the test audio
    lines += ["", "Exit span at evaluation (from the training exit counts), mean exit layer on the test audio, and "
              "the saving those exits imply from the measured per-layer cost (benchmark's ideal):", ""]
    lines += ["| method | " + " | ".join(TASK_TITLES[t] for t in tasks) + " |",
              "|" + "|".join(["---"] * (len(tasks) + 1)) + "|"]
    for row in rows:
        values = [row.label]
        for task in tasks:
            cell = cells.get(task, {}).get(row.key, {})
            span, mean = cell.get("span"), cell.get("mean_exit_layer")
            text = "–" if span is None else f"{span[0]}" if len(span) == 1 else f"{span[0]}..{span[-1]}"
            ideal = cell.get("ideal_saved")
            if mean is not None:
                text += f" (mean {mean:.2f}" + (f", ideal saving {100 * ideal:.1f}%)" if ideal is not None else ")")
            values.append(text)
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# task configs and test audio
# ---------------------------------------------------------------------------------------
#: downstream heads and batches sized for a CPU ("small"), or the shipped configs ("paper")
SMALL_SIZES: Dict[str, Dict[str, Any]] = {
    "asr": {"datarc": {"batch_size": 8, "num_workers": 1},
            "modelrc": {"project_dim": 256, "RNNs": {"dim": [256, 256]}}},
    "voxceleb1": {"datarc": {"train_batch_size": 8, "num_workers": 1, "max_timestep": 64000},
                  "modelrc": {"projector_dim": 256}},
    "enhancement_stft": {"loaderrc": {"train_batchsize": 4, "num_workers": 1},
                         "modelrc": {"rnn_layers": 2, "hidden_size": 256}},
    "separation_stft": {"loaderrc": {"train_batchsize": 4, "num_workers": 1},
                        "modelrc": {"rnn_layers": 2, "hidden_size": 256}},
}
#: the paper's learning rates are for full-size data; SID's 1e-1 diverges on small corpora
SMALL_LR = {"voxceleb1": 1.0e-2}
PAPER_LR = {"asr": 1.0e-4, "voxceleb1": 1.0e-1, "enhancement_stft": 1.0e-4, "separation_stft": 1.0e-4}


def _deep_update(target: Dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def fill_data_paths(task: str, config: Dict[str, Any], layout: Mapping[str, str]) -> None:
    """Put a ``corpus.json`` layout's paths into a task config (in place)."""
    expert = config["downstream_expert"]
    if task == "asr":
        expert["datarc"].update(libri_root=layout["libri_root"], bucket_file=layout["bucket_file"],
                                dict_path=layout["dict_path"])
    elif task == "voxceleb1":
        expert["datarc"].update(file_path=layout["file_path"], meta_data=layout["meta_data"])
    else:
        expert["loaderrc"].update(train_dir=layout["train_dir"], dev_dir=layout["dev_dir"],
                                  test_dir=layout["test_dir"])


def prepare_task_config(task: str, base: Dict[str, Any], steps: int, size: str,
                        layout: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """A task config for one Table 1 training: data paths, steps, sizes, the paper's lr."""
    import copy

    config = copy.deepcopy(base)
    if layout is not None:
        fill_data_paths(task, config, layout)
    _check_no_placeholders(task, config)
    config.setdefault("runner", {}).update(
        total_steps=int(steps), gradient_accumulate_steps=1, log_step=max(1, steps // 5),
        eval_step=10 * steps, save_step=int(steps), max_keep=1,
    )
    config.setdefault("optimizer", {})["lr"] = PAPER_LR[task]
    if size == "small":
        _deep_update(config["downstream_expert"], SMALL_SIZES[task])
        if task in SMALL_LR:
            config["optimizer"]["lr"] = SMALL_LR[task]
    elif size != "paper":
        raise ValueError(f"size must be 'small' or 'paper', got {size!r}")
    return config


def _check_no_placeholders(task: str, config: Mapping[str, Any]) -> None:
    def walk(value, path):
        if isinstance(value, Mapping):
            for k, v in value.items():
                yield from walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(value, str) and value.startswith("/path/to/"):
            yield path

    bad = list(walk(config.get("downstream_expert", {}), "downstream_expert"))
    if bad:
        raise ValueError(f"the {task} config still has placeholder data paths: {', '.join(bad)}; "
                         "fill them in (see docs_readme_s3prl.md) or use a corpus (--corpus)")


def _scp_paths(path: Path) -> List[Path]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    out = []
    for line in path.read_text().splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) == 2:
            out.append(Path(parts[1].strip()))
    return out


def test_audio_files(task: str, config: Mapping[str, Any]) -> List[Path]:
    """The files the task's test split evaluates (what the upstream sees), from a task config."""
    expert = config["downstream_expert"]
    if task == "asr":
        import csv

        datarc = expert["datarc"]
        files = []
        for name in datarc[TEST_SPLIT[task]]:
            with open(Path(datarc["bucket_file"]) / f"{name}.csv") as f:
                files += [Path(datarc["libri_root"]) / r["file_path"] for r in csv.DictReader(f)]
        return files
    if task == "voxceleb1":
        datarc = expert["datarc"]
        root = Path(datarc["file_path"])
        files = []
        for line in Path(datarc["meta_data"]).read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "3":
                found = sorted(root.glob(f"*/wav/{parts[1]}"))
                if not found:
                    raise FileNotFoundError(f"{parts[1]} (test split of {datarc['meta_data']}) not found under {root}/*/wav")
                files.append(found[0])
        return files
    sub = "noisy" if task == "enhancement_stft" else "mix_clean"
    return _scp_paths(Path(expert["loaderrc"]["test_dir"]) / sub / "wav.scp")


# ---------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------
Runner = Callable[[List[str], Path], None]


def subprocess_runner(cmd: List[str], log: Path, threads: Optional[int] = 1) -> None:
    """Run s3prl's runner, its output appended to ``log``; raise with the log's tail on failure.

    ``threads`` sets the child's OMP/MKL threads (None: leave the environment as it is).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # the child imports the same daisy_upstream as this process (a checkout beside an install)
    here = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"s3prl's runner failed (exit {proc.returncode}); full log {log}:\n{tail}")


# ---------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------
class Table1:
    """Plan, run (resumably) and render Table 1 in ``out``.

    Args:
        out: working directory (configs, experiments, results, ``table1.md``).
        ckpt: DAISY checkpoint (the upstream, ``-k``).
        task_configs: ``{task: config dict}`` with the data paths filled in.
        steps: downstream training steps per training.
        fixed_layer: exit layer of the fixed-exit row.
        runner: runs one runner command (``cmd, log``); default :func:`subprocess_runner`.
        threads: torch / OpenMP threads of the runner and of the timing (None: defaults).
    """

    def __init__(self, out: Path, ckpt: Path, task_configs: Mapping[str, Dict[str, Any]], steps: int,
                 fixed_layer: int, seed: int = 0, runner: Optional[Runner] = None,
                 time_repeats: int = 3, time_max_utterances: int = 50, threads: Optional[int] = 1,
                 log: Callable[[str], None] = lambda m: print(m, flush=True)) -> None:
        self.out = Path(out).resolve()
        self.ckpt = Path(ckpt).resolve()
        self.tasks = [t for t in TASKS if t in task_configs]
        unknown = set(task_configs) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown task(s) {sorted(unknown)}; choose from {', '.join(TASKS)}")
        self.task_configs = dict(task_configs)
        self.steps = int(steps)
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {steps}")
        self.fixed_layer = int(fixed_layer)
        self.seed = seed
        self.rows = default_rows(self.fixed_layer)
        self.runs = training_configs(self.rows)
        self.runner = runner or functools.partial(subprocess_runner, threads=threads)
        self.threads = threads
        self.time_repeats = time_repeats
        self.time_max_utterances = time_max_utterances
        self.log = log

    # -- layout -------------------------------------------------------------------------
    def task_dir(self, task: str) -> Path:
        return self.out / "runs" / task

    def train_dir(self, task: str, run: str) -> Path:
        return self.task_dir(task) / f"train_{run}"

    def eval_dir(self, task: str, row: str) -> Path:
        return self.task_dir(task) / f"eval_{row}"

    def final_checkpoint(self, task: str, run: str) -> Path:
        return self.train_dir(task, run) / f"states-{self.steps}.ckpt"

    def upstream_config_path(self, name: str) -> Path:
        return self.out / "upstream" / f"{name}.yaml"

    def task_config_path(self, task: str) -> Path:
        return self.out / "configs" / f"{task}.yaml"

    def cells(self) -> List[Cell]:
        cells = []
        for task in self.tasks:
            for run in self.runs:
                cells.append(Cell("train", task, run, self.train_dir(task, run) / "cell.json"))
            for row in self.rows:
                cells.append(Cell("eval", task, row.key, self.eval_dir(task, row.key) / "cell.json"))
            cells.append(Cell("time", task, "all", self.task_dir(task) / "timing.json"))
        return cells

    # -- settings: a folder holds one table ----------------------------------------------
    def settings(self) -> Dict[str, Any]:
        return {"ckpt": str(self.ckpt), "steps": self.steps, "fixed_layer": self.fixed_layer,
                "seed": self.seed, "task_configs": self.task_configs}

    def claim(self) -> None:
        """Write the inputs; refuse a folder holding a table made with other settings."""
        path = self.out / "settings.json"
        mine = json.loads(json.dumps(self.settings()))
        if path.is_file():
            before = json.loads(path.read_text())
            for task in set(before.get("task_configs", {})) & set(mine["task_configs"]):
                if before["task_configs"][task] != mine["task_configs"][task]:
                    raise ValueError(f"{self.out} holds a Table 1 whose {task} config differs from this one; "
                                     "use another --out (or delete it to start over)")
            for key in ("ckpt", "steps", "fixed_layer", "seed"):
                if before.get(key) != mine[key]:
                    raise ValueError(f"{self.out} holds a Table 1 made with {key}={before.get(key)!r}, "
                                     f"not {mine[key]!r}; use another --out (or delete it to start over)")
            mine["task_configs"] = {**before.get("task_configs", {}), **mine["task_configs"]}
        atomic_write_json(path, mine)
        import yaml

        for task, config in self.task_configs.items():
            atomic_write_text(self.task_config_path(task), yaml.safe_dump(config, sort_keys=False))
        for run, upstream in self.runs.items():
            atomic_write_text(self.upstream_config_path(f"train_{run}"), yaml.safe_dump(upstream, sort_keys=False))
        for row in self.rows:
            atomic_write_text(self.upstream_config_path(f"eval_{row.key}"), yaml.safe_dump(row.upstream, sort_keys=False))

    # -- one cell -----------------------------------------------------------------------
    def _runner_cmd(self, args: Sequence[str]) -> List[str]:
        return [sys.executable, "-c", RUNNER_CODE, *args]

    def _train(self, task: str, run: str) -> Dict[str, Any]:
        expdir = self.train_dir(task, run)
        if expdir.exists():  # an interrupted training: start it again from scratch
            shutil.rmtree(expdir)
        expdir.mkdir(parents=True)
        log = self.task_dir(task) / f"train_{run}.log"
        log.unlink(missing_ok=True)  # a failed attempt's log goes with it
        self.runner(self._runner_cmd([
            "-m", "train", "-d", task, "-c", str(self.task_config_path(task)),
            "-u", "daisy_hubert_local", "-k", str(self.ckpt),
            "-g", str(self.upstream_config_path(f"train_{run}")),
            "-p", str(expdir), "--seed", str(self.seed), "--device", "cpu",
        ]), log)
        final = self.final_checkpoint(task, run)
        if not final.is_file():
            raise RuntimeError(f"training {task} {run} finished without writing {final}; see {log}")
        return {"checkpoint": str(final), "exit_counts": exit_counts(final)}

    def _evaluate(self, task: str, row: Row) -> Dict[str, Any]:
        expdir = self.eval_dir(task, row.key)
        if expdir.exists():
            shutil.rmtree(expdir)
        expdir.mkdir(parents=True)
        log = self.task_dir(task) / f"eval_{row.key}.log"
        log.unlink(missing_ok=True)
        ckpt = self.final_checkpoint(task, row.run)
        overrides = f"args.upstream_model_config={self.upstream_config_path(f'eval_{row.key}')},,args.expdir={expdir}"
        self.runner(self._runner_cmd([
            "-m", "evaluate", "-e", str(ckpt), "-t", TEST_SPLIT[task], "--device", "cpu", "-o", overrides,
        ]), log)
        return {"metric": parse_metric(task, expdir), "checkpoint": str(ckpt),
                "upstream_config": row.upstream, "span": logged_span(log)}

    def _time(self, task: str) -> Dict[str, Any]:
        return time_rows(self.ckpt, self.rows, {run: exit_counts(self.final_checkpoint(task, run))
                                                for run in self.runs},
                         test_audio_files(task, self.task_configs[task])[: self.time_max_utterances],
                         repeats=self.time_repeats, threads=self.threads)

    def run_cell(self, cell: Cell) -> Dict[str, Any]:
        if cell.kind == "train":
            return self._train(cell.task, cell.name)
        if cell.kind == "eval":
            return self._evaluate(cell.task, next(r for r in self.rows if r.key == cell.name))
        return self._time(cell.task)

    # -- all of it ----------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        self.claim()
        cells = self.cells()
        start = time.time()
        for n, cell in enumerate(cells, start=1):
            head = f"[table1] ({n}/{len(cells)}) {cell.title}"
            if cell.done():
                self.log(f"{head}: done before, skipped")
                continue
            self.log(f"{head}: running (elapsed {_fmt_elapsed(time.time() - start)})")
            t0 = time.time()
            result = self.run_cell(cell)
            result["seconds"] = round(time.time() - t0, 1)
            atomic_write_json(cell.result, result)
            self.log(f"{head}: finished in {_fmt_elapsed(result['seconds'])}")
            self.write_outputs()
        payload = self.write_outputs()
        self.log(f"[table1] all {len(cells)} cells finished; {self.out / 'table1.md'} "
                 f"(this run {_fmt_elapsed(time.time() - start)})")
        return payload

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
                    cell.update(metric=result["metric"], span=result.get("span"),
                                eval_seconds=result.get("seconds"))
                train = self.train_dir(task, row.run) / "cell.json"
                if train.is_file():
                    result = json.loads(train.read_text())
                    cell.update(train_exit_counts=result.get("exit_counts"), train_seconds=result.get("seconds"))
                mode = timing.get("modes", {}).get(row.key)
                if mode:
                    cell.update(saved=mode["saved"], ideal_saved=mode["ideal_saved"],
                                mean_exit_layer=mode["mean_exit_layer"], test_exit_histogram=mode["exit_histogram"],
                                upstream_seconds=mode["median"])
                    cell.setdefault("span", mode.get("span"))
                table.setdefault(task, {})[row.key] = cell
        return table

    def write_outputs(self) -> Dict[str, Any]:
        cells = self.collect()
        title = (f"Table 1 on `{self.out}`: {self.steps} training steps per downstream, upstream "
                 f"`{self.ckpt.name}`; time saved = upstream forward time saved vs the full model "
                 "on the task's test audio (batch 1, same weights, median of repeats; the full row's own "
                 "value is the timing noise, full vs full)")
        markdown = format_markdown(cells, self.rows, self.tasks, title=title)
        atomic_write_text(self.out / "table1.md", markdown)
        payload = {"settings": json.loads(json.dumps(self.settings())),
                   "rows": [{"key": r.key, "label": r.label, "run": r.run, "upstream": r.upstream} for r in self.rows],
                   "cells": cells}
        atomic_write_json(self.out / "table1.json", payload)
        return payload


# ---------------------------------------------------------------------------------------
# runner checkpoints and logs
# ---------------------------------------------------------------------------------------
def load_runner_checkpoint(path: Path) -> Dict[str, Any]:
    import argparse

    import torch

    torch.serialization.add_safe_globals([argparse.Namespace])
    return torch.load(path, map_location="cpu", weights_only=True)


def exit_counts(path: Path) -> List[int]:
    """The DAISY featurizer's training exit counts saved in an s3prl runner checkpoint."""
    state = load_runner_checkpoint(path)
    featurizer = state.get("Featurizer") or {}
    if "exit_counts" not in featurizer:
        raise ValueError(f"{path} holds no DAISY exit counts (was it trained with -u daisy_hubert*?)")
    return [int(c) for c in featurizer["exit_counts"].tolist()]


def logged_span(log: Path) -> Optional[List[int]]:
    """The exit span the upstream reported last in a runner log (``DAISY exit span [..]``)."""
    span = None
    if log.is_file():
        for line in log.read_text().splitlines():
            if "DAISY exit span [" in line:
                inside = line.split("DAISY exit span [", 1)[1].split("]", 1)[0]
                span = [int(x) for x in inside.split(",") if x.strip()]
    return span


# ---------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------
def time_rows(ckpt: Path, rows: Sequence[Row], counts: Mapping[str, Sequence[int]],
              files: Sequence[Path], repeats: int = 3, threads: Optional[int] = 1) -> Dict[str, Any]:
    """Every row's upstream forward on ``files`` beside the full model (one benchmark run).

    ``threads``: torch intra-op threads while timing (None: torch's default). One thread is
    the honest choice on a loaded machine: with more threads than free cores, OpenMP's
    waiting dominates and the timings say more about the other load than about the model.
    """
    import torch

    from daisy_upstream.audio.io import load_audio
    from daisy_upstream.evaluation.benchmark import Mode, run_benchmark
    from daisy_upstream.integration.hubconf import daisy_hubert_local
    from daisy_upstream.core.policy import make_plan

    if not files:
        raise ValueError("no test audio to time")
    torch.manual_seed(0)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    modes, spans, net = [], {}, None
    for row in rows:
        upstream = daisy_hubert_local(str(ckpt), model_config=dict(row.upstream)).eval()
        if net is None:
            net = upstream.net
            modes.append(Mode("__full__", make_plan([upstream.num_layers], None)))
        upstream.set_exit_statistics(counts[row.run])
        span = upstream.current_span()
        spans[row.key] = span
        modes.append(Mode(row.key, upstream.current_plan()))
    wavs = [load_audio(p) for p in files]
    try:
        results = run_benchmark(net, wavs, modes, batch_sizes=(1,), repeats=repeats, warmup=1)
    finally:
        torch.set_num_threads(previous_threads)
    out = {"utterances": len(wavs), "audio_seconds": round(sum(len(w) for w in wavs) / 16000, 2),
           "repeats": repeats, "batch_size": 1, "threads": threads, "modes": {}}
    for result in results:
        record = result.to_dict()
        record["span"] = spans.get(result.mode)
        out["modes"][result.mode] = record
    return out
