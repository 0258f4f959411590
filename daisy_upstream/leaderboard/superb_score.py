"""``daisy superb-score``: the SUPERB leaderboard's score and Score-P from metric values.

As the leaderboard website computes them (superbbenchmark/website-react ``overall_metrics.js``):

* per metric, ``s = 1000 * (v - baseline) / (topline - baseline)`` with the public-set reference
  points below (FBANK baseline, topline); error rates work as they are (baseline > topline);
* Score-P: each metric score ``s > 0`` becomes ``s / max(params_in_millions, 1)`` (scores ``<= 0``
  are kept), before any averaging;
* metric scores are averaged within a task (the part of the name before the first ``_``: SF has
  f1 and cer, SE pesq and stoi), task scores over the subset's tasks; a subset task without a
  value leaves the overall score undefined.

Values are as the leaderboard shows them, percent metrics in percent (``SID_acc: 90.3``,
``SE_stoi: 94.2``, ``QbE_mtwv: 7.36``). Names may carry the website's ``_public`` suffix.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

__all__ = [
    "REFERENCE_POINTS",
    "SUBSETS",
    "VALUE_RANGES",
    "check_metric_value",
    "parse_params",
    "read_metrics",
    "superb_score",
    "format_score",
]

#: metric -> (baseline = FBANK, topline), public set (SUPERB_SUBMISSION.md, from Data.js)
REFERENCE_POINTS: Dict[str, tuple] = {
    "PR_per": (82.01, 3.53),
    "KS_acc": (41.3826674, 96.66),
    "IC_acc": (9.649354219, 98.76),
    "SID_acc": (20.058174, 90.3),
    "ER_acc": (48.23672168, 67.62),
    "ASR_wer": (23.18, 3.62),
    "QbE_mtwv": (0.58, 7.36),
    "SF_f1": (69.64, 89.81),
    "SF_cer": (52.94, 21.76),
    "SV_eer": (9.56, 5.11),
    "SD_der": (10.05, 5.62),
    "ST_bleu": (2.32, 20.01),
    "SE_pesq": (2.55, 2.64),
    "SE_stoi": (93.6, 94.2),
    "SS_sisdri": (9.2341, 10.4514),
}
#: the website's subsets: metrics that enter the overall score
SUBSETS: Dict[str, tuple] = {
    "paper": (
        "PR_per",
        "SID_acc",
        "KS_acc",
        "QbE_mtwv",
        "IC_acc",
        "ASR_wer",
        "SV_eer",
        "ER_acc",
        "SD_der",
        "SF_f1",
        "SF_cer",
    ),
    "public": (
        "PR_per",
        "SID_acc",
        "QbE_mtwv",
        "ASR_wer",
        "SV_eer",
        "ER_acc",
        "SD_der",
        "ST_bleu",
        "SE_pesq",
        "SE_stoi",
        "SS_sisdri",
    ),
}
#: leaderboard columns that never enter the score (per-fold ER, ASR with LM)
NOT_SCORED_PREFIXES = ("ERfold", "ASR_LM")
#: a parameter value above this is a count, at or below it millions
COUNT_THRESHOLD = 10_000


def task_of(metric: str) -> str:
    return metric.split("_")[0]


def parse_params(text: Union[str, float, int, None]) -> Optional[float]:
    """Parameters in millions from ``94.7`` (millions), ``94700000`` (a count, > 10,000),
    ``94.7M`` / ``94700k`` / ``0.0947G``, or a ``profile.json`` (its ``params.upstream``)."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        text = str(text).strip()
        path = Path(text)
        if path.suffix == ".json" and path.is_file():
            try:
                return float(json.loads(path.read_text())["params"]["upstream"]) / 1e6
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(
                    f"--params {path}: not a 'daisy profile' profile.json with params.upstream "
                    f"({type(error).__name__}: {error})"
                ) from None
        scale = {"k": 1e-3, "m": 1.0, "g": 1e3}.get(text[-1:].lower())
        try:
            value = float(text[:-1] if scale else text)
        except ValueError:
            raise ValueError(
                f"--params {text!r}: give millions (94.7), a count (94700000), 94.7M, or a profile.json"
            ) from None
        if scale:
            return value * scale
    if not value > 0:
        raise ValueError(f"--params must be > 0, got {text}")
    return value / 1e6 if value > COUNT_THRESHOLD else value


def read_metrics(path: Union[str, Path]) -> Dict[str, float]:
    """A YAML or JSON mapping of metric name -> value (``_public`` suffixes dropped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file {path} does not exist")
    data = yaml.safe_load(path.read_text())  # JSON is YAML
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of metric name -> value, e.g. 'SID_acc: 80.5'")
    metrics = {}
    for name, value in data.items():
        name = str(name)
        name = name[: -len("_public")] if name.endswith("_public") else name
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path}: {name} must be a number, got {value!r}")
        check_metric_value(name, float(value), str(path))
        metrics[name] = float(value)
    return metrics


#: metric kind (the name's part after the first '_') -> (lowest, highest) value as the leaderboard shows it
#: (percent metrics in percent; error rates may pass 100 with insertions; PESQ's scale is -0.5..4.5)
VALUE_RANGES = {
    "acc": (0.0, 100.0),
    "f1": (0.0, 100.0),
    "stoi": (0.0, 100.0),
    "bleu": (0.0, 100.0),
    "per": (0.0, math.inf),
    "wer": (0.0, math.inf),
    "cer": (0.0, math.inf),
    "eer": (0.0, 100.0),
    "der": (0.0, math.inf),
    "pesq": (-0.5, 4.5),
    "mtwv": (-math.inf, 100.0),
}


def check_metric_value(name: str, value: float, source: str = "metrics") -> None:
    """A finite value in the metric's range, else a ``ValueError`` naming the metric and the range."""
    if not math.isfinite(value):
        raise ValueError(f"{source}: {name} is {value}; expected a finite number")
    low, high = VALUE_RANGES.get(name.split("_", 1)[-1], (-math.inf, math.inf))
    if not low <= value <= high:
        raise ValueError(
            f"{source}: {name} = {value:g} is outside {low:g}..{high:g} "
            "(percent metrics are given in percent, e.g. 'SID_acc: 80.5')"
        )


def superb_score(
    metrics: Mapping[str, float], subset: str = "public", params_millions: Optional[float] = None
) -> Dict[str, Any]:
    """Scores per metric and task, and overall for ``subset``.

    Returns:
        ``{"metrics": {name: {"value", "score", "score_p"}}, "tasks": {task: {"score", "score_p",
        "in_subset"}}, "score", "score_p", "missing", "ignored", "warnings", "subset", "params_millions"}``;
        ``score``/``score_p`` are None when a subset metric is missing (``missing`` names it);
        ``score_p`` is None without ``params_millions``.

    Raises:
        ValueError: an unknown metric name or subset, a non-finite or out-of-range value
            (:data:`VALUE_RANGES`), or a non-finite parameter count.
    """
    ignored = _check_inputs(metrics, subset, params_millions)
    divisor = max(params_millions, 1.0) if params_millions is not None else None
    scored, warnings = _metric_scores({m: v for m, v in metrics.items() if m not in ignored}, divisor)
    wanted = SUBSETS[subset]
    tasks = _task_scores(scored, wanted, divisor is not None)
    missing = [m for m in wanted if m not in scored]
    subset_tasks = [t for t, v in tasks.items() if v["in_subset"]]
    overall = None if missing else sum(tasks[t]["score"] for t in subset_tasks) / len(subset_tasks)
    overall_p = (
        None if missing or divisor is None else sum(tasks[t]["score_p"] for t in subset_tasks) / len(subset_tasks)
    )
    return {
        "subset": subset,
        "params_millions": params_millions,
        "metrics": scored,
        "tasks": tasks,
        "score": overall,
        "score_p": overall_p,
        "missing": missing,
        "ignored": ignored,
        "warnings": warnings,
    }


def _check_inputs(metrics: Mapping[str, float], subset: str, params_millions: Optional[float]) -> List[str]:
    """Refuse an unknown subset or metric, a bad value or parameter count; the metrics not scored."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}; choose one of {', '.join(SUBSETS)}")
    ignored = [m for m in metrics if m.startswith(NOT_SCORED_PREFIXES)]
    unknown = [m for m in metrics if m not in REFERENCE_POINTS and m not in ignored]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; the leaderboard's names are {', '.join(REFERENCE_POINTS)}")
    for name, value in metrics.items():
        check_metric_value(name, float(value))
    if params_millions is not None and not (math.isfinite(params_millions) and params_millions > 0):
        raise ValueError(f"params must be a finite number > 0, got {params_millions}")
    return ignored


def _metric_scores(metrics: Mapping[str, float], divisor: Optional[float]) -> Tuple[Dict[str, Dict], List[str]]:
    """Each metric's score (1000 x its place between baseline and topline) and score-P, and warnings."""
    scored, warnings = {}, []
    for name, value in metrics.items():
        baseline, topline = REFERENCE_POINTS[name]
        if 0 < value < 1 < max(baseline, topline):
            warnings.append(
                f"{name} {value:g} looks like a fraction; the reference points are in percent "
                f"({baseline:g} .. {topline:g}): multiply by 100"
            )
        s = 1000.0 * (value - baseline) / (topline - baseline)
        s_p = None if divisor is None else (s / divisor if s > 0 else s)
        scored[name] = {"value": value, "score": s, "score_p": s_p}
    return scored, warnings


def _task_scores(scored: Dict[str, Dict], wanted: Sequence[str], with_params: bool) -> Dict[str, Dict[str, Any]]:
    """Per task: its metrics, the mean of their scores (None unless all are there), whether in the subset."""
    tasks: Dict[str, Dict[str, Any]] = {}
    for task in dict.fromkeys(task_of(m) for m in [*scored, *wanted]):
        names = [m for m in REFERENCE_POINTS if task_of(m) == task and (m in scored or m in wanted)]
        complete = all(m in scored for m in names)
        mean = (lambda key: sum(scored[m][key] for m in names) / len(names)) if complete else None
        tasks[task] = {
            "metrics": names,
            "score": mean("score") if mean else None,
            "score_p": mean("score_p") if mean and with_params else None,
            "in_subset": any(m in wanted for m in names),
        }
    return tasks


def format_score(result: Dict[str, Any]) -> str:
    """A per-task table and the overall line (rounded as the website shows them)."""

    def num(x: Optional[float]) -> str:
        return "-" if x is None else f"{x:.2f}"

    lines = [f"{'task':<5} {'metric':<10} {'value':>9} {'score':>9} {'score-P':>9}  subset"]
    for task, info in result["tasks"].items():
        for name in info["metrics"]:
            m = result["metrics"].get(name)
            lines.append(
                f"{task:<5} {name:<10} {num(m and m['value']):>9} {num(m and m['score']):>9} "
                f"{num(m and m['score_p']):>9}  {'yes' if info['in_subset'] else 'no'}"
            )
        if len(info["metrics"]) > 1:
            lines.append(f"{task:<5} {'(task)':<10} {'':>9} {num(info['score']):>9} {num(info['score_p']):>9}")
    subset = result["subset"]
    if result["missing"]:
        lines.append(f"SUPERB score ({subset}): undefined, missing {', '.join(result['missing'])}")
    else:
        p = result["params_millions"]
        lines.append(f"SUPERB score ({subset}): {round(result['score'])}  ({result['score']:.2f})")
        lines.append(
            f"Score-P ({subset}): "
            + ("- (give --params)" if result["score_p"] is None else f"{result['score_p']:.2f}  (params {p:.2f} M)")
        )
    if result["ignored"]:
        lines.append(f"not scored by the leaderboard: {', '.join(result['ignored'])}")
    lines += [f"warning: {w}" for w in result["warnings"]]
    return "\n".join(lines)
