"""What ``daisy bench`` times: the early-exit model of a checkpoint file (through
:func:`~daisy_upstream.evaluation.loading.load_upstream`) or of a random Base built in memory,
its plan and tau, and s3prl's stock upstream of the same weights."""

from __future__ import annotations

import importlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import torch

from daisy_upstream.audio.io import SAMPLE_RATE
from daisy_upstream.core.checkpoint import checkpoint_record, load_daisy_state
from daisy_upstream.core.expert import early_exit_model
from daisy_upstream.core.policy import DaisyConfig, exit_span, load_calibration, make_plan
from daisy_upstream.core.precision import frozen_forward
from daisy_upstream.evaluation.loading import load_upstream
from daisy_upstream.evaluation.random_models import make_random_family_checkpoint, sharpen_branches
from daisy_upstream.training.calibration import CalibrationResult, utterance_entropies

__all__ = ["Subject", "file_subject", "random_base_subject", "stock_upstream"]


@dataclass
class Subject:
    """What is timed: the early-exit model, its config and plan, where tau came from.

    Attributes:
        net: the :class:`~daisy_upstream.core.early_exit.EarlyExitModel`, eval mode, on the device.
        config: the upstream config (:class:`~daisy_upstream.core.policy.DaisyConfig`).
        plan: DAISY's plan (the config's strategy and tau).
        tau: the threshold, None where the strategy needs none.
        layer_entropy: the calibration tau came from (None: an explicit tau).
        calibration: the calibration record made here on the bench audio, else None.
        record: the checkpoint by name (and content, for a file), as ``bench.json`` names it.
        source: the checkpoint in words (on screen).
        stock: ``stock() -> callable(wavs)``: s3prl's stock upstream of the same weights.
    """

    net: Any
    config: Any
    plan: Any
    tau: Optional[float]
    layer_entropy: Optional[List[float]]
    calibration: Optional[Dict[str, Any]]
    record: Dict[str, Any]
    source: str
    stock: Callable[[], Callable[[List[Any]], Any]]


def random_base_subject(family: str, values: Mapping[str, Any], device: Any, wavs: List[Any], seed: int) -> Subject:
    """A random Base of ``family`` built in memory (no file), tau from ``values`` or the audio."""

    # branch k's logits x (1 + k): entropy falls with depth as in a trained model
    state = sharpen_branches(make_random_family_checkpoint(family, base=True, num_classes=500, seed=seed), 1.0)
    name = f"random {family} Base"
    loaded = load_daisy_state(state, name)
    config = DaisyConfig.from_mapping(values)
    net = early_exit_model(loaded, config)
    net = net.to(device).eval()
    calibration = None
    layer_entropy = load_calibration(config.calibration)["layer_entropy"] if config.calibration else None
    if layer_entropy is None and config.needs_tau() and config.tau is None:
        calibration = _calibrate(net, wavs, config.rho, name)
        layer_entropy = calibration["layer_entropy"]
    tau = config.resolve_tau(layer_entropy)
    span = exit_span(config.strategy, net.num_layers, None, config.span_threshold, config.fixed_layer)
    plan = make_plan(span, tau if len(span) > 1 else None)

    def stock():
        return _stock_of_state(state, loaded.family, device, config.precision)

    record = {"name": name, "seed": seed}
    return Subject(net, config, plan, tau, layer_entropy, calibration, record, f"a {name}", stock)


def _calibrate(net: Any, wavs: List[Any], rho: float, name: str) -> Dict[str, Any]:
    """The calibration record of ``net``'s branches on ``wavs`` (as ``daisy calibrate`` makes it)."""

    with torch.no_grad():
        entropies = utterance_entropies(net, net.branches, wavs)
    seconds = sum(len(w) for w in wavs) / SAMPLE_RATE
    keys = [str(i) for i in range(len(wavs))]
    return CalibrationResult(entropies, keys, "the audio at hand", seconds, (float(rho),), name).to_dict()


def file_subject(
    ckpt: Optional[Union[str, Path]], values: Mapping[str, Any], device: Any, wavs: List[Any], family: Optional[str]
) -> Subject:
    """The upstream of a checkpoint file (None: the embedded model) through ``load_upstream``."""

    loaded = load_upstream(ckpt, values, device=device, calibrate_on=wavs, family=family)
    upstream, record = loaded.upstream, checkpoint_record(loaded.checkpoint)
    calibration = loaded.calibration
    if calibration is not None:  # name the model as meta does, not by a path on this machine
        calibration = {**calibration, "checkpoint": record}
    layer_entropy = (upstream.calibration or {}).get("layer_entropy") if upstream.config.tau is None else None

    def stock():
        model = stock_upstream(upstream.family)(ckpt=str(loaded.checkpoint))
        return _frozen(model.to(device).eval(), device, upstream.config.precision)

    return Subject(
        upstream.net,
        upstream.config,
        upstream.current_plan(),
        upstream.tau,
        layer_entropy,
        calibration,
        record,
        str(loaded.checkpoint),
        stock,
    )


def _stock_of_state(state: Dict[str, Any], family: Any, device: Any, precision: str):
    """s3prl's stock upstream of a checkpoint dict: its loader reads a file, so one is written
    to a temporary folder for it and removed once loaded."""

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pt"
        torch.save(state, path)
        model = stock_upstream(family)(ckpt=str(path))
    return _frozen(model.to(device).eval(), device, precision)


def stock_upstream(family: Any) -> Callable[..., Any]:
    """s3prl's stock upstream entry of ``family`` (``hubert_local``, ...), from the family's own
    hubconf (``s3prl.hub`` would import every upstream s3prl has, and their dependencies)."""

    return getattr(importlib.import_module(f"s3prl.upstream.{family.name}.hubconf"), family.stock_upstream)


def _frozen(model: Any, device: Any, precision: str) -> Callable[[List[Any]], Any]:
    """``model(wavs)`` in the arithmetic of our forward (TF32 or autocast), for a fair time."""

    def run(wavs: List[Any]) -> Any:
        with frozen_forward(precision, device):
            return model(wavs)

    return run
