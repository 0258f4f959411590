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
    premise: {holds: bool, slope, r2, fall, spread, failed: [...], rule}   # training/premise.py
    # only when the utterances' lengths and the model's cost model are known (daisy calibrate):
    budget_curve: {tau: [ascending], spent: [...], mean_exit_layer: [...]}  # training/budget.py
    tau_for_budget: [{budget: float, tau: float}, ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import yaml
from torch import Tensor

from daisy_upstream.atomic import atomic_write_text
from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.audio.io import SAMPLE_RATE
from daisy_upstream.core.branches import ExitBranches, check_branches_fit
from daisy_upstream.core.early_exit import EarlyExitModel
from daisy_upstream.core.policy import check_rho, compute_tau, make_plan, tau_for_budget
from daisy_upstream.leaderboard.cost_model import CostModel, measure_cost_model

from .batch_feed import PaddedBatches, batch_loader, shard_keys, unpad
from .budget import budget_curve
from .calibration_report import format_table, plot_calibration
from .premise import check_premise, judge_premise, linear_fit

__all__ = [
    "CalibrationResult",
    "calibrate_checkpoint",
    "check_premise",
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
        samples: ``N`` utterance lengths (samples at 16 kHz) and ``cost`` the model's cost
            model: with both the record holds the ``budget_curve`` (and tau for ``budgets``).
    """

    entropies: Tensor
    keys: List[str]
    dataset: str
    audio_seconds: float = 0.0
    rhos: Tuple[float, ...] = (0.7, 0.76, 1.0)
    checkpoint: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    samples: Optional[List[int]] = None
    cost: Optional[CostModel] = None
    budgets: Tuple[float, ...] = ()
    _curve: Optional[Dict[str, List[float]]] = field(default=None, init=False, repr=False, compare=False)

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

    @property
    def premise(self) -> Dict[str, Any]:
        """Whether entropy falls with depth (:func:`~daisy_upstream.training.premise.judge_premise`)."""
        slope, _, r2 = self.fit
        return judge_premise(self.layer_entropy, self.layer_std, slope, r2)

    @property
    def curve(self) -> Optional[Dict[str, List[float]]]:
        """The tau-to-spend curve (:func:`~daisy_upstream.training.budget.budget_curve`), if lengths
        and cost are known."""
        if self.samples is None or self.cost is None:
            return None
        if self._curve is None:
            self._curve = budget_curve(self.entropies, self.samples, self.cost)
        return self._curve

    def tau_for_budget(self, budget: float) -> float:
        """The tau that spends at most ``budget`` of the full model's MACs on these utterances."""
        if self.curve is None:
            raise ValueError("no budget curve: the utterances' lengths or the cost model are unknown")
        return tau_for_budget(self.curve, budget)

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
                "premise": self.premise,
            }
        )
        if self.curve is not None:
            out["budget_curve"] = self.curve
            out["tau_for_budget"] = [{"budget": float(b), "tau": self.tau_for_budget(b)} for b in self.budgets]
        out.update(self.extra)
        return out


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


def _check_fractions(rhos: Sequence[float], budgets: Sequence[float]) -> None:
    for rho in rhos:
        check_rho(rho)
    for budget in budgets:
        if not 0.0 < float(budget) <= 1.0:
            raise ValueError(f"a budget is a fraction in (0, 1] of the full model's MACs, got {budget}")


def calibrate_checkpoint(
    checkpoint: Union[str, Path],
    corpus: AudioCorpus,
    rhos: Sequence[float] = (0.7, 0.76, 1.0),
    batch_seconds: float = 60.0,
    device: Union[str, torch.device] = "cpu",
    progress: bool = False,
    precision: str = "fp32",
    budgets: Sequence[float] = (),
    workers: int = 0,
    prefetch: int = 2,
) -> CalibrationResult:
    """Load a DAISY checkpoint and calibrate its branches on ``corpus``.

    ``precision``: the frozen model's forward, ``fp32`` (TF32 on CUDA), ``bf16`` or ``fp16``
    autocast (:mod:`daisy_upstream.core.precision`); the entropies are float32 either way.
    ``workers`` / ``prefetch``: the DataLoader that reads ``corpus`` (:func:`layer_entropies`).
    The result knows each utterance's length and the model's cost model
    (:func:`~daisy_upstream.leaderboard.cost_model.measure_cost_model`), so its record holds the
    ``budget_curve`` and the tau of each of ``budgets``.

    Raises:
        ValueError: the checkpoint has no exit branches, a rho outside [0, 1], a budget outside
            (0, 1] or below what the branches can spend.
    """
    from daisy_upstream.core.checkpoint import load_daisy_checkpoint

    _check_fractions(rhos, budgets)
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
    cost = measure_cost_model(EarlyExitModel(loaded.model, branches, family=loaded.family).to(device).eval())
    lengths = dict(zip(corpus.keys, corpus.lengths))
    result = CalibrationResult(
        entropies,
        keys,
        corpus.name,
        seconds,
        tuple(float(r) for r in rhos),
        str(checkpoint),
        samples=[lengths[k] for k in keys],
        cost=cost,
        budgets=tuple(float(b) for b in budgets),
    )
    for budget in result.budgets:
        result.tau_for_budget(budget)  # a budget below what the branches can spend fails here, before any output
    return result


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
