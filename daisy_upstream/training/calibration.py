"""Calibration: per-layer branch entropy on a dataset, E_max / E_min, and tau for given rho.

For every utterance and every layer ``k = 1..L`` the branch mean entropy ``E^k`` (nats, over
the utterance's valid frames, :meth:`ExitBranches.entropy` on what branch ``k`` reads, layer
``k``'s ``branches.branch_input`` tensor of a full forward) is computed by
:func:`utterance_entropies`, the one place that does it. The per-layer mean over utterances gives ``E_max``/``E_min`` and
``tau = (E_max + E_min) / 2 * rho`` (Eq. 3, :func:`daisy_upstream.core.policy.compute_tau`).

:meth:`CalibrationResult.to_dict` is the one calibration record: the checkpoint's
``daisy.calibration`` (stage 1) and the calibration YAML written by
:func:`write_calibration_yaml` (``daisy calibrate``, the bench) both hold it. The YAML is what
the upstream config key ``calibration:`` accepts (it needs ``layer_entropy``; every other key is information)::

    layer_entropy: [L floats]     # per-layer mean entropy over utterances (nats), layer 1 first
    dataset: free text            # where the numbers come from
    num_utterances: int
    audio_seconds: float
    checkpoint: path
    e_max: float                  # max / min of layer_entropy, and their layers (1-based)
    e_max_layer: int
    e_min: float
    e_min_layer: int
    tau_for_rho: [{rho: float, tau: float}, ...]
    layer_std: [L floats]         # spread over utterances
    layer_q25 / layer_median / layer_q75: [L floats]
    linear_fit: {slope: float, intercept: float, r2: float}   # mean entropy vs layer
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import yaml
from torch import Tensor

from daisy_upstream.atomic import atomic_save_figure, atomic_write_text
from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.audio.io import SAMPLE_RATE
from daisy_upstream.core.branches import ExitBranches, check_branches_fit
from daisy_upstream.core.early_exit import EarlyExitModel
from daisy_upstream.core.policy import check_rho, compute_tau, make_plan

from .batch_feed import PaddedBatches, batch_loader, shard_keys, unpad

__all__ = [
    "CalibrationResult",
    "calibrate_checkpoint",
    "format_table",
    "layer_entropies",
    "linear_fit",
    "plot_calibration",
    "summarize",
    "utterance_entropies",
    "write_calibration_yaml",
]


@dataclass
class CalibrationResult:
    """Per-layer entropy statistics over a dataset.

    Attributes:
        entropies: ``(N, L)`` float64, utterance ``n``'s mean branch entropy at layer ``k+1``.
        keys: ``N`` utterance identifiers.
        dataset: free-text description of the data.
        audio_seconds: total audio.
        rhos: the rho values tau was computed for.
        checkpoint: the checkpoint the branches came from (informational).
    """

    entropies: Tensor
    keys: List[str]
    dataset: str
    audio_seconds: float = 0.0
    rhos: Tuple[float, ...] = (0.7, 0.76, 1.0)
    checkpoint: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.entropies.dim() != 2 or self.entropies.size(0) < 1:
            raise ValueError(f"entropies must be (N >= 1, L), got shape {tuple(self.entropies.shape)}")
        self.entropies = self.entropies.double()

    @property
    def num_layers(self) -> int:
        return self.entropies.size(1)

    @property
    def layer_entropy(self) -> List[float]:
        """Per-layer mean entropy over utterances (the calibration)."""
        return [float(v) for v in self.entropies.mean(dim=0)]

    @property
    def layer_std(self) -> List[float]:
        """Per-layer standard deviation over utterances (0 for a single utterance)."""
        if self.entropies.size(0) < 2:
            return [0.0] * self.num_layers
        return [float(v) for v in self.entropies.std(dim=0)]

    def layer_quantile(self, q: float) -> List[float]:
        return [float(v) for v in torch.quantile(self.entropies, q, dim=0)]

    @property
    def e_max(self) -> float:
        return max(self.layer_entropy)

    @property
    def e_min(self) -> float:
        return min(self.layer_entropy)

    @property
    def e_max_layer(self) -> int:
        values = self.layer_entropy
        return values.index(max(values)) + 1

    @property
    def e_min_layer(self) -> int:
        values = self.layer_entropy
        return values.index(min(values)) + 1

    def tau(self, rho: float) -> float:
        """Eq. 3 on :attr:`layer_entropy` (same function as the upstream uses)."""
        return compute_tau(self.layer_entropy, rho)

    @property
    def fit(self) -> Tuple[float, float, float]:
        """``(slope, intercept, r2)`` of mean entropy vs layer number."""
        return linear_fit(self.layer_entropy)

    def to_dict(self) -> Dict[str, Any]:
        """The calibration YAML's content (plain Python types)."""
        slope, intercept, r2 = self.fit
        out: Dict[str, Any] = {
            "layer_entropy": self.layer_entropy,
            "dataset": self.dataset,
            "num_utterances": int(self.entropies.size(0)),
            "audio_seconds": round(float(self.audio_seconds), 3),
        }
        if self.checkpoint is not None:
            out["checkpoint"] = str(self.checkpoint)
        out.update(
            {
                "e_max": self.e_max,
                "e_max_layer": self.e_max_layer,
                "e_min": self.e_min,
                "e_min_layer": self.e_min_layer,
                "tau_for_rho": [{"rho": float(r), "tau": self.tau(r)} for r in self.rhos],
                "layer_std": self.layer_std,
                "layer_q25": self.layer_quantile(0.25),
                "layer_median": self.layer_quantile(0.5),
                "layer_q75": self.layer_quantile(0.75),
                "linear_fit": {"slope": slope, "intercept": intercept, "r2": r2},
            }
        )
        out.update(self.extra)
        return out


def linear_fit(values: Sequence[float]) -> Tuple[float, float, float]:
    """Least-squares line through ``(k, values[k-1])``, k = 1..L: ``(slope, intercept, r2)``.

    ``r2`` is ``1 - SS_res / SS_tot``; it is 1.0 when the values are constant (a flat line
    fits exactly) and NaN for fewer than two points.
    """
    n = len(values)
    if n < 2:
        return 0.0, float(values[0]) if n else float("nan"), float("nan")
    xs = [float(k) for k in range(1, n + 1)]
    ys = [float(v) for v in values]
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys))
    r2 = 1.0 if ss_tot == 0 else 1.0 - ss_res / ss_tot
    return slope, intercept, r2


@torch.no_grad()
def utterance_entropies(backbone: EarlyExitModel, branches: ExitBranches, wavs: Sequence[Tensor]) -> Tensor:
    """``(B, L)`` float64 on CPU: each waveform's mean branch entropy at every layer.

    A full forward of ``backbone`` (its own branches are not used); branch ``k`` reads layer
    ``k``'s ``branches.branch_input`` tensor (``hidden_states[k]`` for ours, the FFN output or the
    layer output for the authors' heads), as it does when the upstream decides exits.
    """
    num_layers = backbone.num_layers
    check_branches_fit(branches, num_layers)
    out = backbone(list(wavs), make_plan([num_layers], None), branch_input=branches.branch_input)
    per_layer = [branches.entropy(k, out.branch_inputs[k - 1], out.lengths).double() for k in range(1, num_layers + 1)]
    return torch.stack(per_layer, dim=1).cpu()


@torch.no_grad()
def layer_entropies(
    backbone: EarlyExitModel,
    branches: ExitBranches,
    corpus: AudioCorpus,
    batch_seconds: float = 60.0,
    device: Union[str, torch.device] = "cpu",
    progress: bool = False,
    rank: int = 0,
    world: int = 1,
    workers: int = 0,
    prefetch: int = 2,
) -> Tuple[Tensor, List[str], float]:
    """Every utterance's mean branch entropy at every layer.

    Args:
        backbone: the frozen model (its own branches are not used).
        branches: ``L`` branches; branch ``k`` reads layer ``k``'s ``branches.branch_input`` tensor.
        corpus: the audio; files that fail to decode are skipped and counted in
            ``corpus.problems`` (of the rank that read them).
        batch_seconds: audio per forward (sum over the batch).
        rank / world: under ``world`` processes (every rank calls this) rank ``r`` runs
            batches ``r, r + world, ...`` and the rows are gathered in batch order, so every
            rank returns what one process would.
        workers / prefetch: DataLoader processes that decode and pad the batches, and the
            batches each loads ahead (:mod:`~daisy_upstream.training.batch_feed`; pinned
            memory on CUDA); ``0``: decoded in this process, one batch at a time. The result
            does not depend on them.

    Returns:
        ``(entropies (N, L) float64 on CPU, keys (N), audio seconds)``.

    Raises:
        ValueError: no utterance could be loaded.
    """
    from daisy_upstream.training.distributed import all_gather_objects

    device = torch.device(device)
    check_branches_fit(branches, backbone.num_layers)
    done: List[Tuple[int, Tensor, List[str], float]] = []  # (batch index, (B, L) rows, keys, seconds)
    batches = corpus.batches(batch_seconds)
    mine = shard_keys(len(batches), rank, world)
    loader = batch_loader(PaddedBatches(corpus, batches), mine, workers, prefetch, pin_memory=device.type == "cuda")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(mine), desc="calibrate", unit="batch", dynamic_ncols=True)
    for item in loader:
        wavs = unpad(item, corpus, device)
        if bar is not None:
            bar.update(1)
        if not wavs:
            continue
        done.append(
            (
                item["index"],
                utterance_entropies(backbone, branches, wavs),
                [corpus.items[i].key for i in item["kept"]],
                int(item["lengths"].sum()) / SAMPLE_RATE,
            )
        )
    if bar is not None:
        bar.close()
    done = sorted((d for part in all_gather_objects(done, world) for d in part), key=lambda d: d[0])
    if not done:
        raise ValueError(f"no utterance of {corpus.name} could be loaded ({corpus.problems.summary()})")
    return (torch.cat([d[1] for d in done], dim=0), [key for d in done for key in d[2]], sum(d[3] for d in done))


def calibrate_checkpoint(
    checkpoint: Union[str, Path],
    corpus: AudioCorpus,
    rhos: Sequence[float] = (0.7, 0.76, 1.0),
    batch_seconds: float = 60.0,
    device: Union[str, torch.device] = "cpu",
    progress: bool = False,
    precision: str = "fp32",
    workers: int = 0,
    prefetch: int = 2,
) -> CalibrationResult:
    """Load a DAISY checkpoint and calibrate its branches on ``corpus``.

    ``precision``: the frozen model's forward, ``fp32`` (TF32 on CUDA), ``bf16`` or ``fp16``
    autocast (:mod:`daisy_upstream.core.precision`); the entropies are float32 either way.
    ``workers`` / ``prefetch``: the DataLoader that reads ``corpus`` (:func:`layer_entropies`).

    Raises:
        ValueError: the checkpoint has no exit branches, or a rho outside [0, 1].
    """
    from daisy_upstream.core.checkpoint import load_daisy_checkpoint

    for rho in rhos:
        check_rho(rho)
    loaded = load_daisy_checkpoint(checkpoint)
    if loaded.branches is None:
        raise ValueError(
            f"{checkpoint} is a plain {loaded.family.name} checkpoint without exit branches: nothing to calibrate; "
            "train them first with 'daisy train-branches'"
        )
    backbone = EarlyExitModel(
        loaded.model, None, normalize_waveform=bool(loaded.task_cfg.normalize), precision=precision
    )
    backbone.to(device).eval()
    branches = loaded.branches.to(device).eval()
    entropies, keys, seconds = layer_entropies(
        backbone, branches, corpus, batch_seconds, device, progress, workers=workers, prefetch=prefetch
    )
    return CalibrationResult(entropies, keys, corpus.name, seconds, tuple(float(r) for r in rhos), str(checkpoint))


def summarize(
    entropies: Tensor, dataset: str, rhos: Sequence[float] = (0.7, 0.76, 1.0), keys: Optional[List[str]] = None
) -> CalibrationResult:
    """A :class:`CalibrationResult` from a ready ``(N, L)`` entropy matrix."""
    keys = keys if keys is not None else [str(i) for i in range(entropies.size(0))]
    return CalibrationResult(entropies, keys, dataset, rhos=tuple(float(r) for r in rhos))


def write_calibration_yaml(result: CalibrationResult, path: Union[str, Path], force: bool = False) -> Path:
    """Write the calibration YAML atomically (temporary file + rename).

    Raises:
        FileExistsError: ``path`` exists and ``force`` is false.
    """
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    text = "# a DAISY calibration; the upstream config key 'calibration:' reads layer_entropy\n"
    text += yaml.safe_dump(result.to_dict(), sort_keys=False, default_flow_style=None, width=100)
    atomic_write_text(path, text)
    return path


def plot_calibration(result: CalibrationResult, path: Union[str, Path], force: bool = False) -> Path:
    """PNG of mean entropy vs layer: mean, +-1 std band, quartile bars, the linear fit and R^2.

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
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
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
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=120)
    return path


def format_table(result: CalibrationResult) -> str:
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
    for rho in result.rhos:
        lines.append(f"rho = {rho:g}: tau = {result.tau(rho):.6f}")
    return "\n".join(lines)
