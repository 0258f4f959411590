"""Training curves of a pretraining run as a PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union

from daisy_upstream.atomic import atomic_save_figure

__all__ = ["plot_curves"]


def plot_curves(log_json: Union[str, Path], png: Union[str, Path]) -> Path:
    """Plot masked accuracy and loss (train and held-out) per step from ``log.json``.

    Iteration 2's steps are drawn after iteration 1's; the majority-class share of the
    held-out targets is drawn as a dashed line per iteration.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(Path(log_json).read_text())
    entries, meta = data["log"], data.get("meta", {})
    if not entries:
        raise ValueError(f"{log_json} has no log entries yet")
    end1 = max((e["step"] for e in entries if e["iteration"] == 1), default=0)
    x = [e["step"] + (end1 if e["iteration"] == 2 else 0) for e in entries]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, style in (("train_acc", "-"), ("valid_acc", "--")):
        ax1.plot(x, [100 * e[key] for e in entries], style, label=key.replace("_", " "))
    for it, key in ((1, "majority_valid_iter1"), (2, "majority_valid_iter2")):
        if key in meta:
            lo, hi = (0, end1) if it == 1 else (end1, max(x))
            ax1.hlines(
                100 * meta[key], lo, hi, colors="grey", linestyles=":", label="majority class" if it == 1 else None
            )
    for key, style in (("train_loss", "-"), ("valid_loss", "--")):
        ax2.plot(x, [e[key] for e in entries], style, label=key.replace("_", " "))
    two = any(e["iteration"] == 2 for e in entries)
    for ax in (ax1, ax2):
        if two:
            ax.axvline(end1, color="k", lw=0.8)
        ax.set_xlabel("training step (iteration 2 after the vertical line)" if two else "training step (iteration 1)")
        ax.legend()
        ax.grid(alpha=0.3)
    ax1.set_ylabel("masked prediction accuracy (%)")
    ax2.set_ylabel("masked cross-entropy (nats)")
    fig.tight_layout()
    png = Path(png)
    atomic_save_figure(fig, png, dpi=120)
    return png
