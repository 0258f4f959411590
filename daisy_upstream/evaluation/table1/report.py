"""Table 1 as text: the paper's Markdown layout, the metric of a cell, elapsed times."""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence

from .plan import TASK_TITLES, Row

__all__ = ["METRIC_HEADERS", "format_elapsed", "format_markdown", "format_metric"]


def format_elapsed(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def format_metric(task: str, metric: Optional[Mapping[str, float]]) -> str:
    """A cell's metric as the table shows it (``–`` when there is none)."""
    if not metric:
        return "–"
    if task == "asr":
        return f"{metric['wer']:.2f}%" + (f" ({metric['cer']:.1f}%)" if "cer" in metric else "")
    if task == "voxceleb1":
        return f"{metric['acc']:.2f}%"
    if task == "enhancement_stft":
        return f"{metric['pesq']:.2f} / {metric['stoi']:.1f}"
    if "mixture_si_sdr" in metric:  # the unprocessed mixture: SI-SDRi 0 by definition
        return f"0 (mixture SI-SDR {metric['mixture_si_sdr']:.2f} dB)"
    return f"{metric['si_sdri']:.2f}"


METRIC_HEADERS = {
    "asr": "ASR WER (CER) ↓",
    "voxceleb1": "SID acc ↑",
    "enhancement_stft": "SE PESQ / STOI ↑",
    "separation_stft": "SS SI-SDRi ↑",
}


def format_markdown(
    cells: Mapping[str, Mapping[str, Mapping[str, Any]]],
    rows: Sequence[Row],
    tasks: Sequence[str],
    title: Optional[str] = None,
    mixed: Optional[Mapping[str, Any]] = None,
) -> str:
    """The paper's Table 1 layout.

    Args:
        cells: ``cells[task][row_key]`` with optional ``metric`` (as :func:`parse_metric`),
            ``saved`` (fraction of the full model's upstream time), ``span``,
            ``mean_exit_layer``; ``cells[task]["unprocessed"]`` (optional): the unprocessed
            input's ``metric``, shown as the last row.
        rows: the rows, top to bottom.
        tasks: the column groups, left to right.
        mixed: the Fig. 5 result (``Table1._mixed``), shown below the tables when given.
    """
    lines = [title, ""] if title else []
    lines += _metric_table(cells, rows, tasks)
    lines += [
        "",
        "Exit span at evaluation (from the training exit counts), mean exit layer on the test audio, and "
        "the saving those exits imply from the measured per-layer cost (benchmark's ideal):",
        "",
    ]
    lines += _exit_table(cells, rows, tasks)
    if mixed:
        lines += _mixed_table(mixed)
    return "\n".join(lines) + "\n"


def _metric_table(cells: Mapping[str, Mapping[str, Any]], rows: Sequence[Row], tasks: Sequence[str]) -> List[str]:
    """Per row and task: the metric and the time saved; the unprocessed input last, when measured."""
    header = ["method"]
    for task in tasks:
        header += [METRIC_HEADERS[task], f"{TASK_TITLES[task]} time saved"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (2 * len(tasks))) + "|"]
    for row in rows:
        values = [row.label]
        for task in tasks:
            cell = cells.get(task, {}).get(row.key, {})
            values.append(format_metric(task, cell.get("metric")))
            saved = cell.get("saved")
            values.append("–" if saved is None else f"{100 * saved:.2f}%")
        lines.append("| " + " | ".join(values) + " |")
    if any("unprocessed" in cells.get(task, {}) for task in tasks):
        values = ["unprocessed input (no downstream)"]
        for task in tasks:
            values += [format_metric(task, cells.get(task, {}).get("unprocessed", {}).get("metric")), "–"]
        lines.append("| " + " | ".join(values) + " |")
    return lines


def _exit_table(cells: Mapping[str, Mapping[str, Any]], rows: Sequence[Row], tasks: Sequence[str]) -> List[str]:
    """Per row and task: where the rows exited (span, mean exit layer and the saving it implies)."""
    lines = [
        "| method | " + " | ".join(TASK_TITLES[t] for t in tasks) + " |",
        "|" + "|".join(["---"] * (len(tasks) + 1)) + "|",
    ]
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
    return lines


def _mixed_table(mixed: Mapping[str, Any]) -> List[str]:
    """Fig. 5's WER per condition, DAISY against the fixed exit of equal average compute."""
    lines = [
        "",
        f"Fig. 5, ASR WER on the mixed-noise set (40% clean, 30% 10 dB, 20% 5 dB, 10% 0 dB): DAISY "
        f"(rho 1.0) against a downstream trained with the fixed exit at layer {mixed['fixed_layer']} "
        "(equal average compute):",
        "",
    ]
    groups = list(next(iter(mixed["wer"].values())))
    lines += ["| method | " + " | ".join(groups) + " |", "|" + "|".join(["---"] + ["---:"] * len(groups)) + "|"]
    for name, by in mixed["wer"].items():
        lines.append(f"| {name} | " + " | ".join(f"{by[g]['wer']:.2f}%" for g in groups) + " |")
    return lines
