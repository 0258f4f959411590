"""The DAISY upstream: an s3prl ``UpstreamBase`` around :class:`EarlyExitModel` (every family)."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import weakref
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import torch
from s3prl.upstream.interfaces import UpstreamBase
from torch import Tensor

from daisy_upstream.core.checkpoint import DaisyCheckpoint, load_daisy_checkpoint
from daisy_upstream.core.checkpoint_checks import checked_to
from daisy_upstream.core.early_exit import EarlyExitModel, EarlyExitOutput
from daisy_upstream.core.policy import (
    STATISTICS_STRATEGIES,
    DaisyConfig,
    ExitPlan,
    check_calibration,
    describe_span,
    evaluation_span,
    exit_span,
    load_calibration,
    make_plan,
)

__all__ = ["CheckpointSource", "DaisyUpstream", "early_exit_model", "fill_past_exit", "load_config", "read_exit_layers"]

#: what an upstream is built from: a checkpoint file, the dict ``torch.load`` gives for one, or
#: a checkpoint already loaded (:func:`~daisy_upstream.core.checkpoint.load_daisy_checkpoint`)
CheckpointSource = Union[str, Path, Mapping[str, Any], DaisyCheckpoint]

logger = logging.getLogger(__name__)

#: keyword arguments of s3prl's ``UpstreamBase.__init__`` (it accepts and ignores any other)
_UPSTREAM_BASE_KEYS = ("hooks", "hook_postprocess")

#: set by :meth:`DaisyUpstream.probing`: forwards that only read shapes run at full depth
_PROBING: contextvars.ContextVar[bool] = contextvars.ContextVar("daisy_probing", default=False)


def load_config(model_config: Union[None, str, Path, Mapping[str, Any]], **overrides: Any) -> DaisyConfig:
    """The upstream config from a YAML path, a mapping or nothing, plus keyword overrides."""
    if model_config is None or model_config == "":
        config = DaisyConfig.from_mapping(overrides, source="upstream config")
    elif isinstance(model_config, Mapping):
        config = DaisyConfig.from_mapping({**model_config, **overrides}, source="upstream config")
    else:
        config = DaisyConfig.from_yaml(model_config)
        if overrides:
            config = config.replace(**overrides)
    return config


def early_exit_model(loaded: DaisyCheckpoint, config: DaisyConfig) -> EarlyExitModel:
    """The early-exit forward of a loaded checkpoint, as an upstream with ``config`` runs it."""
    return EarlyExitModel(
        loaded.model,
        loaded.branches,
        normalize_waveform=bool(loaded.task_cfg.normalize),
        stock_padded_cnn=config.stock_padded_cnn,
        family=loaded.family,
        precision=config.precision,
        cuda_graphs=config.cuda_graphs,
    )


def _load(ckpt: CheckpointSource, family: Optional[str]) -> DaisyCheckpoint:
    if not isinstance(ckpt, DaisyCheckpoint):
        return load_daisy_checkpoint(ckpt, family)
    if family is not None and ckpt.family.name != family:
        raise ValueError(f"the checkpoint given is a {ckpt.family.name} checkpoint, not {family}")
    return ckpt


def fill_past_exit(hidden_states: Sequence[Tensor], exit_layers: Tensor, exit_states: Tensor) -> List[Tensor]:
    """``layers_past_exit: copy``: layer ``k > k_hat`` of each row becomes its exit state.

    Args:
        hidden_states: ``L + 1`` tensors ``(B, T, D)``.
        exit_layers: ``(B,)`` each row's exit layer ``k_hat``.
        exit_states: ``(B, T, D)`` each row's ``hidden_states[k_hat]``.
    """
    past = exit_layers.to(exit_states.device).view(-1, 1, 1)
    return [h if k == 0 else torch.where(past < k, exit_states, h) for k, h in enumerate(hidden_states)]


def read_exit_layers(hidden_states: Sequence[Tensor]) -> Tensor:
    """``(B,)`` each row's exit layer, read back from ``hidden_states`` alone.

    The inverse of the fill: layer ``k >= 2`` of a row did not run when it is all zeros
    (``layers_past_exit: zeros``) or equal to layer ``k - 1`` (``copy``), bit for bit, on
    every frame; the exit layer is the deepest layer that ran (layer 1 always runs). A
    layer that ran is never an exact copy of its input nor exactly zero on every frame of
    an utterance (it has a residual path and, in HuBERT, a LayerNorm), so this is exact
    for every rows-together transform of the tensors: trimming, padding by repeating the
    last frame, a per-frame ``layer_norm``, DataParallel's scatter and gather.

    Args:
        hidden_states: ``L + 1`` tensors ``(B, T, D)`` as a DAISY upstream returned them.
    """
    exit_layers = torch.ones(hidden_states[0].size(0), dtype=torch.long, device=hidden_states[0].device)
    for k in range(2, len(hidden_states)):
        h, below = hidden_states[k], hidden_states[k - 1]
        skipped = (h == below).flatten(1).all(dim=1) | (h == 0).flatten(1).all(dim=1)
        exit_layers = torch.where(skipped, exit_layers, k)
    return exit_layers


class DaisyUpstream(UpstreamBase):
    """DAISY early-exit SSL model for s3prl (``-u daisy_hubert``, ``daisy_wav2vec2_local``, ...).

    Args:
        ckpt: a DAISY checkpoint (see :mod:`daisy_upstream.core.checkpoint`), an authors'-layout
            checkpoint, or a plain checkpoint in the format of the family's stock upstream
            (strategies ``full``/``fixed`` only): a file, its dict as ``torch.load`` gives it, or
            a :class:`~daisy_upstream.core.checkpoint.DaisyCheckpoint` (nothing is written to a file).
        model_config: the upstream config, a YAML path or a mapping (:class:`DaisyConfig`).
        family: the family the upstream name promises (``hubert``, ``wav2vec2``, ``data2vec``,
            ``wavlm``); a checkpoint of another family is refused. None: the checkpoint's own.
        calibration_record: a calibration (``{"layer_entropy": [L floats], ...}``, what
            :func:`~daisy_upstream.core.policy.load_calibration` returns) made in memory; it
            replaces the checkpoint's own. Not together with the config key ``calibration``.
        **kwargs: config keys (override ``model_config``; hub keyword arguments and
            ``S3PRLUpstream``'s ``extra_conf`` arrive here) and s3prl's ``hooks`` /
            ``hook_postprocess``; any other key is a ``ValueError``.

    Forward returns ``hidden_states`` (``L + 1`` tensors ``(B, T, D)``, the meaning of the
    family's stock upstream; past each utterance's exit zeros, or with ``layers_past_exit: copy`` its
    exit-layer state, see :func:`fill_past_exit`), ``last_hidden_state`` (each utterance's
    state at its exit layer), ``exit_layers`` ``(B,)``, ``feature_lengths`` ``(B,)`` and
    ``entropies`` ``(B, L)``.

    Where exits may happen: an attached featurizer (:class:`DaisyFeaturizer`) supplies the
    exit statistics and whether the downstream is training; otherwise statistics given by
    :meth:`set_exit_statistics` are used.
    """

    to = checked_to  # device='cuda' without CUDA: our one line, not torch's error

    def __init__(
        self,
        ckpt: CheckpointSource,
        model_config: Union[None, str, Path, Mapping[str, Any]] = None,
        family: Optional[str] = None,
        calibration_record: Optional[Mapping[str, Any]] = None,
        **kwargs,
    ):
        config_keys = {k: kwargs.pop(k) for k in list(kwargs) if k in DaisyConfig.keys()}
        unknown = sorted(set(kwargs) - set(_UPSTREAM_BASE_KEYS))
        if unknown:  # UpstreamBase would swallow them: a misspelled key must not pass silently
            raise ValueError(
                f"unknown upstream keyword(s) {unknown} (hub keyword arguments, S3PRLUpstream "
                f"extra_conf); known: the upstream config's keys {DaisyConfig.keys()}, "
                f"model_config, and s3prl's {list(_UPSTREAM_BASE_KEYS)}"
            )
        super().__init__(**kwargs)
        self.config = load_config(model_config, **config_keys)
        loaded = _load(ckpt, family)
        self.family = loaded.family
        self.checkpoint_layout = loaded.layout
        self.task_cfg = loaded.task_cfg
        self._check_strategy(loaded, "the checkpoint" if isinstance(ckpt, (Mapping, DaisyCheckpoint)) else str(ckpt))
        self.calibration = self._calibration(loaded, calibration_record)
        layer_entropy = self.calibration["layer_entropy"] if self.calibration else None
        self.tau: Optional[float] = self.config.resolve_tau(layer_entropy, (self.calibration or {}).get("budget_curve"))
        self.net = early_exit_model(loaded, self.config)
        self._statistics_owner: Optional[weakref.ref] = None
        self._exit_counts: Optional[List[int]] = None
        self._span_override: Optional[Sequence[int]] = None
        self._reported_span: Optional[List[int]] = None
        self._deepest_read: Optional[int] = None

    def _check_strategy(self, loaded: DaisyCheckpoint, name: str) -> None:
        if loaded.branches is None and self.config.strategy not in ("full", "fixed"):
            raise ValueError(
                f"{name} is a plain {loaded.family.name} checkpoint without exit branches; strategy "
                f"{self.config.strategy!r} needs them. Train them first with 'daisy train-branches' "
                "(or use strategy 'full' / 'fixed')"
            )
        if self.config.strategy == "fixed" and self.config.fixed_layer > loaded.num_layers:
            raise ValueError(f"fixed_layer={self.config.fixed_layer} but the model has {loaded.num_layers} layers")

    def _calibration(self, loaded: DaisyCheckpoint, record: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
        """The calibration tau comes from: the record given, the config's file, else the checkpoint's."""
        if record is not None and self.config.calibration is not None:
            raise ValueError("both a calibration record and the config key 'calibration' were given; give one of them")
        if record is not None:
            calibration = check_calibration(record)
        elif self.config.calibration is not None:
            calibration = load_calibration(self.config.calibration)
        else:
            calibration = loaded.calibration
        layer_entropy = calibration["layer_entropy"] if calibration else None
        if layer_entropy is not None and len(layer_entropy) != loaded.num_layers:
            raise ValueError(
                f"the calibration lists {len(layer_entropy)} layers but the model has {loaded.num_layers}; "
                "it was made for another model"
            )
        return calibration

    # -- where exits may happen -------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return self.net.num_layers

    def attach_statistics(self, owner: Any) -> None:
        """Let ``owner`` (a featurizer with ``training`` and ``exit_counts``) drive the span."""
        self._statistics_owner = weakref.ref(owner)

    def set_exit_statistics(self, counts: Optional[Sequence[int]]) -> None:
        """Exit histogram (``L`` counts) for a standalone upstream's ``mean``/``threshold``/``min-max``."""
        if counts is not None and len(counts) != self.num_layers:
            raise ValueError(f"exit statistics must have {self.num_layers} entries, got {len(counts)}")
        self._exit_counts = None if counts is None else [int(c) for c in counts]

    @contextlib.contextmanager
    def span_override(self, span: Optional[Sequence[int]]) -> Iterator[None]:
        """Within the block, exits may happen exactly at ``span`` (None: every layer)."""
        previous = self._span_override
        self._span_override = list(range(1, self.num_layers + 1)) if span is None else list(span)
        try:
            yield
        finally:
            self._span_override = previous

    @staticmethod
    @contextlib.contextmanager
    def probing() -> Iterator[None]:
        """Within the block (this thread only), DAISY upstreams run at full depth.

        For a consumer's shape probe that runs before any exit statistics can be there,
        such as ``s3prl.nn.S3PRLUpstream``'s constructor.
        """
        token = _PROBING.set(True)
        try:
            yield
        finally:
            _PROBING.reset(token)

    def current_span(self) -> List[int]:
        """The layers at which an utterance may exit in the next forward."""
        if self._span_override is not None:
            return list(self._span_override)
        if _PROBING.get():
            return [self.num_layers]
        config = self.config
        owner = self._statistics_owner() if self._statistics_owner is not None else None
        if owner is not None:
            if owner.training and config.strategy in STATISTICS_STRATEGIES:
                return exit_span("none", self.num_layers)  # stage 2: plain threshold while training
            counts = owner.exit_counts.tolist() if config.needs_statistics() else None
        else:
            counts = self._exit_counts
        span = evaluation_span(config, self.num_layers, counts)
        if span != self._reported_span:  # say once which layers may exit, and why
            self._reported_span = span
            logger.info("DAISY %s", describe_span(config, span, counts, self.tau))
        return span

    def read_up_to(self, layer: Optional[int]) -> None:
        """Consumers read no hidden state past ``layer`` (``-l k``, ``layer_selections=[k]``):
        forwards stop there, exits below it unchanged (None: every layer may run)."""
        if layer is not None and not 1 <= layer <= self.num_layers:
            raise ValueError(f"layer {layer} outside 1..{self.num_layers}")
        self._deepest_read = None if layer is None or layer == self.num_layers else int(layer)

    def current_plan(self) -> ExitPlan:
        span = self.current_span()
        if self._deepest_read is not None:  # nobody reads past it: stop there
            span = sorted({k for k in span if k < self._deepest_read} | {min(max(span), self._deepest_read)})
        return make_plan(span, self.tau if len(span) > 1 else None)

    # -- s3prl interface ----------------------------------------------------------------
    def get_downsample_rates(self, key: str) -> int:
        return self.net.downsample_rate

    def run(self, wavs: List[Tensor], plan: Optional[ExitPlan] = None) -> EarlyExitOutput:
        """The early-exit forward as an :class:`EarlyExitOutput` (``plan`` defaults to the current one)."""
        return self.net(wavs, self.current_plan() if plan is None else plan)

    def forward(self, wavs: List[Tensor]) -> Dict[str, Any]:
        out = self.run(wavs)
        exit_states = out.exit_states()
        hidden_states = out.hidden_states
        if self.config.layers_past_exit == "copy":
            hidden_states = fill_past_exit(hidden_states, out.exit_layers, exit_states)
        return {
            "hidden_states": hidden_states,
            "last_hidden_state": exit_states,
            "exit_layers": out.exit_layers,
            "feature_lengths": out.lengths,
            "entropies": out.entropies,
        }
