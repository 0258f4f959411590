"""Table 1 as text: the paper's Markdown layout, the metric of a cell, elapsed times."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

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
