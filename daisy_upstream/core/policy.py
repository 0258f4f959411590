"""The exit policy: tau from a calibration, exit spans from exit statistics, and the config.

Layers are numbered as in ``hidden_states``: layer ``k`` (1..L) is the output of the
``k``-th transformer layer. An *exit histogram* ``counts`` has ``L`` entries, ``counts[k-1]``
being how many training utterances exited at layer ``k``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml
from torch import Tensor

from daisy_upstream.core.graphs import GRAPH_MODES
from daisy_upstream.core.precision import PRECISIONS
from daisy_upstream.core.strict_yaml import load_unique

__all__ = [
    "STRATEGIES",
    "STATISTICS_STRATEGIES",
    "LAYERS_PAST_EXIT",
    "DaisyConfig",
    "ExitPlan",
    "RHO_RANGE",
    "MissingCalibration",
    "check_calibration",
    "check_rho",
    "compute_tau",
    "describe_span",
    "evaluation_span",
    "exit_span",
    "exits",
    "load_calibration",
    "make_plan",
    "valid_rho",
    "tau_for_budget",
]

#: every exit strategy, see :func:`exit_span` and :func:`make_plan`
STRATEGIES = ("none", "mean", "threshold", "min-max", "fixed", "full")
#: strategies whose span comes from the exit statistics of downstream training
STATISTICS_STRATEGIES = ("mean", "threshold", "min-max")
#: what ``hidden_states`` hold past an utterance's exit layer, see :class:`DaisyConfig`
LAYERS_PAST_EXIT = ("zeros", "copy")
#: the range of rho in Eq. 3 (both ends included)
RHO_RANGE = (0.0, 1.0)


class MissingCalibration(ValueError):
    """tau is to come from rho, but neither the checkpoint nor the config has a calibration."""


def valid_rho(rho: Any) -> bool:
    """Whether ``rho`` is a number in :data:`RHO_RANGE` (true and false are not numbers here)."""
    return isinstance(rho, numbers.Real) and not isinstance(rho, bool) and RHO_RANGE[0] <= rho <= RHO_RANGE[1]


def check_rho(rho: Any) -> float:
    """``rho`` as a float; a ValueError naming the range when it is not in :data:`RHO_RANGE`."""
    if not valid_rho(rho):
        raise ValueError(f"rho must be a number in [{RHO_RANGE[0]:g}, {RHO_RANGE[1]:g}], got {rho!r}")
    return float(rho)


def compute_tau(layer_entropy: Sequence[float], rho: float) -> float:
    """Eq. 3 of the paper: ``tau = (E_max + E_min) / 2 * rho`` over per-layer mean entropies."""
    values = [float(v) for v in layer_entropy]
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"layer_entropy must be non-empty finite entropies >= 0, got {values}")
    return (max(values) + min(values)) / 2.0 * check_rho(rho)


def exits(entropy: Tensor, tau: float) -> Tensor:
    """The exit rule: a row stops at a checked layer where its mean branch entropy is below ``tau``.

    ``entropy``: any shape (``(B,)`` one layer's rows, ``(N, L)`` every layer's); the result is
    a bool tensor of that shape. Online (the early-exit loop) and offline (reports on stored
    entropies) decide with this one comparison.
    """
    return entropy < tau


def tau_for_budget(curve: Mapping[str, Sequence[float]], budget: float) -> float:
    """The threshold that spends at most ``budget`` of the full model's MACs, from a calibration's curve.

    ``curve`` is a calibration record's ``budget_curve``: ``tau`` (ascending) and ``spent``
    (the mean over the calibration utterances of each one's MACs as a fraction of the full
    model's, with every layer allowed to exit; non-increasing in tau). The answer is the
    smallest listed tau whose ``spent`` is at most ``budget``: the most compute within it.

    Raises:
        ValueError: a malformed curve, or a budget below the least the branches can spend.
    """
    taus, spent = curve.get("tau"), curve.get("spent")
    if not isinstance(taus, list) or not isinstance(spent, list) or not taus or len(taus) != len(spent):
        raise ValueError("a calibration's budget_curve needs lists 'tau' and 'spent' of one length")
    for tau, cost in zip(taus, spent):
        if float(cost) <= budget:
            return float(tau)
    raise ValueError(
        f"budget {budget:g} is below the least these branches can spend ({min(float(c) for c in spent):.3f} of "
        "the full model's MACs, every utterance leaving at layer 1): raise the budget"
    )


def exit_span(
    strategy: str,
    num_layers: int,
    counts: Optional[Sequence[int]] = None,
    span_threshold: float = 0.15,
    fixed_layer: Optional[int] = None,
) -> List[int]:
    """Layers (1-based, ascending) at which an utterance may exit.

    If no branch fires inside the span, the utterance exits at its deepest layer.

    * ``none``: every layer 1..L (plain threshold).
    * ``mean``: ``floor(mu) <= k <= ceil(mu)``, ``mu`` the mean training exit layer.
    * ``threshold``: layers whose share of training exits is ``> span_threshold``.
    * ``min-max``: from the shallowest to the deepest training exit layer.
    * ``fixed``: only ``fixed_layer``. ``full``: only ``L``.

    Raises:
        ValueError: for an unknown strategy, or a statistics strategy without counts
            (never a silent full-depth run).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown exit strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy == "none":
        return list(range(1, num_layers + 1))
    if strategy == "full":
        return [num_layers]
    if strategy == "fixed":
        if fixed_layer is None or not (1 <= fixed_layer <= num_layers):
            raise ValueError(f"strategy 'fixed' needs fixed_layer in 1..{num_layers}, got {fixed_layer}")
        return [fixed_layer]
    counts = [int(c) for c in counts] if counts is not None else []
    if sum(counts) <= 0:
        raise ValueError(
            f"strategy {strategy!r} needs exit statistics from downstream training, but none "
            "were recorded; train the downstream with this upstream first (the statistics are "
            "saved in its checkpoint, restore it with -e), or use strategy 'none', 'fixed' or 'full'"
        )
    if len(counts) != num_layers:
        raise ValueError(f"exit statistics have {len(counts)} layers, the model has {num_layers}")
    total = sum(counts)
    if strategy == "mean":
        mu = sum((k + 1) * c for k, c in enumerate(counts)) / total
        return list(range(math.floor(mu), math.ceil(mu) + 1))
    if strategy == "threshold":
        span = [k + 1 for k, c in enumerate(counts) if c / total > span_threshold]
        if not span:
            shares = ", ".join(f"{k + 1}:{c / total:.3f}" for k, c in enumerate(counts))
            raise ValueError(
                f"no layer took more than span_threshold={span_threshold} of the training exits "
                f"(shares {shares}); lower span_threshold or use strategy 'min-max'"
            )
        return span
    used = [k + 1 for k, c in enumerate(counts) if c > 0]
    return list(range(used[0], used[-1] + 1))


def evaluation_span(config: "DaisyConfig", num_layers: int, counts: Optional[Sequence[int]]) -> List[int]:
    """The layers an upstream with ``config`` may exit at when evaluating, after a downstream
    training that counted ``counts`` (``L`` entries, or None): the one place that decides it."""
    used = [int(c) for c in counts] if counts is not None and config.needs_statistics() else None
    return exit_span(config.strategy, num_layers, used, config.span_threshold, config.fixed_layer)


#: what the strategies that need no exit statistics do, in words
_PLAIN_SPANS = {"none": "plain threshold: every layer may exit", "fixed": "one fixed exit", "full": "every layer runs"}


def describe_span(
    config: "DaisyConfig", span: Sequence[int], counts: Optional[Sequence[int]], tau: Optional[float]
) -> str:
    """One line, for logs and reports: which layers may exit, and why."""
    why = f"strategy {config.strategy}"
    if config.needs_statistics():
        why += f" from training exit counts {[int(c) for c in counts or []]}"
    else:
        why += f" ({_PLAIN_SPANS[config.strategy]}; "
        why += "no exit statistics used)" if counts is None else "the exit statistics given are not used)"
    return f"exit span {list(span)} ({why}, tau {'-' if tau is None else f'{tau:.4g}'})"


@dataclass(frozen=True)
class ExitPlan:
    """What one forward does: where branches are checked, where rows are forced to stop.

    Attributes:
        check_layers: layers (ascending) whose branch is evaluated; a row stops at the first
            one whose mean entropy is ``< tau``. The deepest layer is never checked: a row
            that reaches it stops there anyway.
        deepest: the layer at which every remaining row stops.
        tau: the entropy threshold (``None`` when no branch is checked).
    """

    check_layers: Tuple[int, ...]
    deepest: int
    tau: Optional[float]


def make_plan(span: Sequence[int], tau: Optional[float]) -> ExitPlan:
    """Turn an exit span and a threshold into an :class:`ExitPlan`."""
    span = sorted(set(int(k) for k in span))
    if not span:
        raise ValueError("an exit span must hold at least one layer")
    if len(span) > 1 and tau is None:
        raise ValueError("an exit span with more than one layer needs a threshold tau")
    checks = tuple(span[:-1])
    return ExitPlan(check_layers=checks, deepest=span[-1], tau=float(tau) if checks else None)


def load_calibration(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a calibration YAML (as written by ``daisy calibrate``).

    It must hold ``layer_entropy``: a list of per-layer mean entropies; other keys
    (``dataset``, ``tau``, ...) are kept as they are.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file {path} does not exist; make one with 'daisy calibrate'")
    with open(path) as f:
        data = yaml.safe_load(f)
    return check_calibration(data, f"{path} is not a calibration file")


def check_calibration(record: Any, what: str = "the calibration record") -> Dict[str, Any]:
    """A calibration record (a YAML's contents, or one made in memory) as a dict; a ValueError
    saying ``what`` when it has no ``layer_entropy`` list."""
    if not isinstance(record, Mapping) or not isinstance(record.get("layer_entropy"), (list, tuple)):
        raise ValueError(f"{what}: it needs a 'layer_entropy' list")
    return dict(record)


@dataclass
class DaisyConfig:
    """The upstream config (``-g/--upstream_model_config``), every key validated.

    Attributes:
        rho: ratio in [0, 1] for Eq. 3; ignored when ``tau`` is given.
        tau: explicit entropy threshold (nats), overrides ``rho``.
        strategy: one of :data:`STRATEGIES`; applies at evaluation. During downstream
            training the statistics strategies run as ``none`` (the paper's stage 2).
        fixed_layer: exit layer for strategy ``fixed``.
        span_threshold: share of training exits a layer needs for strategy ``threshold``.
        calibration: path to a calibration YAML; else the checkpoint's own calibration.
        budget: the fraction in (0, 1] of the full model's upstream MACs to spend, averaged over
            utterances: tau is the calibration's (its ``budget_curve``, written by ``daisy
            calibrate``) that spends at most that on the calibration audio
            (:func:`tau_for_budget`); overrides ``rho``, excludes ``tau``, strategy ``none`` only.
        featurize_layer0: let the DAISY featurizer weight ``hidden_states[0]`` too
            (the paper uses layers 1..k_hat only).
        stock_padded_cnn: run the CNN on the zero-padded batch as s3prl's stock upstream
            does (exact parity with published numbers; an utterance's features then depend
            on its batch-mates' lengths for extractor mode ``default``).
        layers_past_exit: what ``hidden_states[k]`` holds for an utterance that exited at
            ``k_hat < k``: ``"zeros"`` (default; DAISY's featurizers mask those layers out)
            or ``"copy"``: its exit-layer state ``h^k_hat``, for stock consumers that cannot
            be patched, whose plain weighted sum then gives the exit layer the weights of the
            layers that did not run (``layer_norm`` per layer, as s3prl's ``normalize``,
            commutes with the copy).
        precision: the frozen model's forward, ``fp32`` (TF32 matmuls on CUDA), ``bf16`` or
            ``fp16`` autocast; hidden states, branches and entropies stay float32
            (:mod:`daisy_upstream.core.precision`).
        cuda_graphs: ``auto`` (on CUDA, without gradients, the per-layer steps run as CUDA
            graphs on bucketed shapes, :mod:`daisy_upstream.core.static_loop`; the same outputs)
            or ``off`` (the plain loop, to compare). Nothing changes on the CPU.
    """

    rho: float = 0.7
    tau: Optional[float] = None
    strategy: str = "none"
    fixed_layer: Optional[int] = None
    span_threshold: float = 0.15
    calibration: Optional[str] = None
    budget: Optional[float] = None
    featurize_layer0: bool = False
    stock_padded_cnn: bool = False
    layers_past_exit: str = "zeros"
    precision: str = "fp32"
    cuda_graphs: str = "auto"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(key: str, why: str) -> ValueError:
            return ValueError(f"upstream config: {key}={getattr(self, key)!r} {why}")

        if not valid_rho(self.rho):
            raise bad("rho", "must be a number in [0, 1]")
        if self.tau is not None and (
            isinstance(self.tau, bool) or not isinstance(self.tau, (int, float)) or not 0 <= self.tau < math.inf
        ):
            raise bad("tau", "must be a finite number >= 0 (nats) or null")
        if self.strategy not in STRATEGIES:
            raise bad("strategy", f"is unknown; choose one of {', '.join(STRATEGIES)}")
        if (self.strategy == "fixed" or self.fixed_layer is not None) and (
            isinstance(self.fixed_layer, bool) or not isinstance(self.fixed_layer, int) or self.fixed_layer < 1
        ):
            raise bad("fixed_layer", "must be a layer number >= 1 (for strategy 'fixed'), or null")
        if (
            isinstance(self.span_threshold, bool)
            or not isinstance(self.span_threshold, (int, float))
            or not 0 <= self.span_threshold < 1
        ):
            raise bad("span_threshold", "must be a number in [0, 1)")
        if self.calibration is not None and not isinstance(self.calibration, str):
            raise bad("calibration", "must be a path to a calibration YAML")
        if self.budget is not None:
            if isinstance(self.budget, bool) or not isinstance(self.budget, (int, float)) or not 0 < self.budget <= 1:
                raise bad("budget", "must be a fraction in (0, 1] of the full model's MACs, or null")
            if self.tau is not None:
                raise bad("budget", "and tau both set the threshold: give one of them")
            if self.strategy != "none":
                raise bad("budget", f"is met for strategy 'none' (every layer may exit), not {self.strategy!r}")
        for key in ("featurize_layer0", "stock_padded_cnn"):
            if not isinstance(getattr(self, key), bool):
                raise bad(key, "must be true or false")
        if self.layers_past_exit not in LAYERS_PAST_EXIT:
            raise bad("layers_past_exit", f"is unknown; choose one of {', '.join(LAYERS_PAST_EXIT)}")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"is unknown; choose one of {', '.join(PRECISIONS)}")
        if self.cuda_graphs not in GRAPH_MODES:
            raise bad("cuda_graphs", f"is unknown; choose one of {', '.join(GRAPH_MODES)}")

    @classmethod
    def keys(cls) -> List[str]:
        """Every config key, in declaration order."""
        return [f.name for f in fields(cls)]

    def to_dict(self) -> Dict[str, Any]:
        """Every key with its value (a fresh dict; ``from_mapping`` reads it back)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "DaisyConfig":
        """A validated copy with ``changes`` applied (unknown keys are a ValueError)."""
        unknown = sorted(set(changes) - set(self.keys()))
        if unknown:
            raise ValueError(f"upstream config: unknown key(s) {unknown}; known keys: {self.keys()}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: Optional[Mapping[str, Any]], source: str = "config") -> "DaisyConfig":
        """Build from a dict, rejecting unknown keys with the list of known ones."""
        values = dict(values or {})
        known = cls.keys()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; known keys: {known}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "DaisyConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"upstream config {path} does not exist (-g/--upstream_model_config): give the path "
                "of an existing YAML (examples in s3prl_configs/upstream/), or leave -g out for the defaults"
            )
        with open(path) as f:
            values = load_unique(f)  # a key given twice is refused, not the last one kept
        if values is not None and not isinstance(values, dict):
            raise ValueError(f"{path}: an upstream config must be a YAML mapping")
        config = cls.from_mapping(values, source=str(path))
        if config.calibration is not None and not Path(config.calibration).is_absolute():
            # a relative calibration path is relative to the config file that names it
            config.calibration = str((path.parent / config.calibration).resolve())
        return config

    def needs_statistics(self) -> bool:
        return self.strategy in STATISTICS_STRATEGIES

    def needs_tau(self) -> bool:
        return self.strategy not in ("fixed", "full")

    def resolve_tau(
        self, layer_entropy: Optional[Sequence[float]], budget_curve: Optional[Mapping[str, Any]] = None
    ) -> Optional[float]:
        """The threshold: explicit ``tau``, else from ``budget`` on the calibration's
        ``budget_curve``, else Eq. 3 on ``layer_entropy``; None if unused."""
        if not self.needs_tau():
            return None
        if self.tau is not None:
            return float(self.tau)
        if self.budget is not None:
            if budget_curve is None:
                raise MissingCalibration(
                    "budget: the calibration has no budget_curve (a checkpoint's own calibration has none): "
                    "run 'daisy calibrate' and set 'calibration:' to the YAML it writes"
                )
            return tau_for_budget(budget_curve, float(self.budget))
        if layer_entropy is None:
            raise MissingCalibration(
                "no calibration to compute tau from rho: the checkpoint carries none and the "
                "config names none; run 'daisy calibrate' and set 'calibration:', or set 'tau:'"
            )
        return compute_tau(layer_entropy, self.rho)
