"""The exit policy: tau from a calibration, exit spans from exit statistics, and the config.

Layers are numbered as in ``hidden_states``: layer ``k`` (1..L) is the output of the
``k``-th transformer layer. An *exit histogram* ``counts`` has ``L`` entries, ``counts[k-1]``
being how many training utterances exited at layer ``k``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from daisy_upstream.core.precision import PRECISIONS
from daisy_upstream.core.strict_yaml import load_unique

__all__ = [
    "STRATEGIES",
    "STATISTICS_STRATEGIES",
    "LAYERS_PAST_EXIT",
    "DaisyConfig",
    "ExitPlan",
    "MissingCalibration",
    "compute_tau",
    "exit_span",
    "load_calibration",
    "make_plan",
]

#: every exit strategy, see :func:`exit_span` and :func:`make_plan`
STRATEGIES = ("none", "mean", "threshold", "min-max", "fixed", "full")
#: strategies whose span comes from the exit statistics of downstream training
STATISTICS_STRATEGIES = ("mean", "threshold", "min-max")
#: what ``hidden_states`` hold past an utterance's exit layer, see :class:`DaisyConfig`
LAYERS_PAST_EXIT = ("zeros", "copy")


class MissingCalibration(ValueError):
    """tau is to come from rho, but neither the checkpoint nor the config has a calibration."""


def compute_tau(layer_entropy: Sequence[float], rho: float) -> float:
    """Eq. 3 of the paper: ``tau = (E_max + E_min) / 2 * rho`` over per-layer mean entropies."""
    values = [float(v) for v in layer_entropy]
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"layer_entropy must be non-empty finite entropies >= 0, got {values}")
    if not (0.0 <= rho <= 1.0):
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    return (max(values) + min(values)) / 2.0 * rho


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
    if not isinstance(data, dict) or not isinstance(data.get("layer_entropy"), list):
        raise ValueError(f"{path} is not a calibration file: it needs a 'layer_entropy' list")
    return data


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
    """

    rho: float = 0.7
    tau: Optional[float] = None
    strategy: str = "none"
    fixed_layer: Optional[int] = None
    span_threshold: float = 0.15
    calibration: Optional[str] = None
    featurize_layer0: bool = False
    stock_padded_cnn: bool = False
    layers_past_exit: str = "zeros"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(key: str, why: str) -> ValueError:
            return ValueError(f"upstream config: {key}={getattr(self, key)!r} {why}")

        if isinstance(self.rho, bool) or not isinstance(self.rho, (int, float)) or not 0 <= self.rho <= 1:
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
        for key in ("featurize_layer0", "stock_padded_cnn"):
            if not isinstance(getattr(self, key), bool):
                raise bad(key, "must be true or false")
        if self.layers_past_exit not in LAYERS_PAST_EXIT:
            raise bad("layers_past_exit", f"is unknown; choose one of {', '.join(LAYERS_PAST_EXIT)}")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"is unknown; choose one of {', '.join(PRECISIONS)}")

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

    def resolve_tau(self, layer_entropy: Optional[Sequence[float]]) -> Optional[float]:
        """The threshold: explicit ``tau``, else Eq. 3 on ``layer_entropy``; None if unused."""
        if not self.needs_tau():
            return None
        if self.tau is not None:
            return float(self.tau)
        if layer_entropy is None:
            raise MissingCalibration(
                "no calibration to compute tau from rho: the checkpoint carries none and the "
                "config names none; run 'daisy calibrate' and set 'calibration:', or set 'tau:'"
            )
        return compute_tau(layer_entropy, self.rho)
