"""What ``daisy calibrate`` shows: the table it prints and the plot it writes (Fig. 2 and the budget curve)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Union

from daisy_upstream.atomic import atomic_save_figure

from .premise import premise_line

if TYPE_CHECKING:  # the result type only (calibration imports this module)
    from .calibration import CalibrationResult

__all__ = ["format_table", "plot_calibration"]


def plot_calibration(result: "CalibrationResult", path: Union[str, Path], force: bool = False) -> Path:
    """PNG of mean entropy vs layer: mean, +-1 std band, quartile bars, the linear fit and R^2
    (the paper's Fig. 2); beside it, when the result has a budget curve, the share of the full
    model's MACs saved against tau, with the taus of the rhos and budgets marked.

    Written atomically; refuses to overwrite without ``force``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    layers = list(range(1, result.num_layers + 1))
    mean, std = result.layer_entropy, result.layer_std
    q25, q75 = result.layer_quantile(0.25), result.layer_quantile(0.75)
    slope, intercept, r2 = result.fit
    curve = result.curve
    fig, axes = plt.subplots(1, 2 if curve else 1, figsize=(12.0 if curve else 6.4, 4.0), dpi=120, squeeze=False)
    ax = axes[0][0]
    ax.fill_between(
        layers,
        [m - s for m, s in zip(mean, std)],
        [m + s for m, s in zip(mean, std)],
        color="tab:blue",
        alpha=0.15,
        label="mean ± 1 std",
    )
    ax.vlines(layers, q25, q75, color="tab:gray", linewidth=5, alpha=0.45, label="interquartile range")
    ax.plot(layers, result.layer_quantile(0.5), "_", color="k", markersize=12, label="median")
    ax.plot(layers, mean, "o-", color="tab:blue", label="mean over utterances")
    ax.plot(layers, [slope * k + intercept for k in layers], "--", color="tab:red", label=f"linear fit, R² = {r2:.3f}")
    ax.set_xlabel("layer")
    ax.set_ylabel("branch mean entropy (nats)")
    ax.set_xticks(layers)
    ax.set_title(f"{result.entropies.size(0)} utterances: {result.dataset}"[:80], fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if curve:
        _plot_curve(axes[0][1], result, curve)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=120)
    return path


def _plot_curve(ax, result: "CalibrationResult", curve: dict) -> None:
    """Saving (1 - spent) against tau, the rho and budget taus marked."""
    ax.step(curve["tau"], [100 * (1 - s) for s in curve["spent"]], where="post", color="tab:green")
    for rho in result.rhos:
        ax.axvline(result.tau(rho), color="tab:gray", linestyle=":", linewidth=1)
        ax.annotate(f"rho {rho:g}", (result.tau(rho), 0), rotation=90, fontsize=7, va="bottom")
    for budget in result.budgets:
        tau = result.tau_for_budget(budget)
        ax.axvline(tau, color="tab:red", linestyle="--", linewidth=1)
        ax.annotate(f"budget {budget:g}", (tau, 0), rotation=90, fontsize=7, va="bottom", color="tab:red")
    ax.set_xlabel("tau (nats)")
    ax.set_ylabel("MACs saved vs full model (%, mean)")
    ax.set_title("saving against tau (strategy none, batch-1 MACs)", fontsize=9)
    ax.grid(alpha=0.3)


def format_table(result: "CalibrationResult") -> str:
    """A one-screen text table: per-layer mean / std / quartiles, E_max, E_min, taus, fit."""
    mean, std = result.layer_entropy, result.layer_std
    q25, q50, q75 = (result.layer_quantile(q) for q in (0.25, 0.5, 0.75))
    lines = [
        f"calibration on {result.dataset}",
        f"{result.entropies.size(0)} utterances, {result.audio_seconds:.1f} s of audio",
        f"{'layer':>5} {'mean':>9} {'std':>8} {'q25':>8} {'median':>8} {'q75':>8}",
    ]
    for k in range(result.num_layers):
        mark = " max" if k + 1 == result.e_max_layer else (" min" if k + 1 == result.e_min_layer else "")
        lines.append(f"{k + 1:>5} {mean[k]:9.4f} {std[k]:8.4f} {q25[k]:8.4f} {q50[k]:8.4f} {q75[k]:8.4f}{mark}")
    slope, intercept, r2 = result.fit
    lines.append(
        f"E_max = {result.e_max:.6f} (layer {result.e_max_layer}), "
        f"E_min = {result.e_min:.6f} (layer {result.e_min_layer})"
    )
    lines.append(f"linear fit: entropy = {slope:.4f} * layer + {intercept:.4f}, R^2 = {r2:.4f}")
    lines.append(premise_line(result.premise))
    for rho in result.rhos:
        lines.append(f"rho = {rho:g}: tau = {result.tau(rho):.6f}")
    for budget in result.budgets:
        lines.append(f"budget = {budget:g}: tau = {result.tau_for_budget(budget):.6f}")
    return "\n".join(lines)
