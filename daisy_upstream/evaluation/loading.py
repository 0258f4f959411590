"""The one way to build a DAISY upstream for our tools: checkpoint + upstream config + the exit
statistics of a trained s3prl runner (bench, demo, noise-report, the mixed set, Table 1's
timing, the leaderboard's profile and export)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch

from daisy_upstream.audio.io import SAMPLE_RATE
from daisy_upstream.core.checkpoint import DaisyCheckpoint, load_daisy_checkpoint
from daisy_upstream.core.expert import DaisyUpstream, early_exit_model, load_config
from daisy_upstream.core.policy import DaisyConfig, describe_span
from daisy_upstream.integration.hubconf import DEFAULT_CHECKPOINT
from daisy_upstream.integration.runner_io import exit_counts
from daisy_upstream.training.calibration import CalibrationResult, utterance_entropies

__all__ = ["LoadedUpstream", "config_values", "load_upstream", "read_exit_counts", "span_note"]

PathLike = Union[str, Path]


@dataclass
class LoadedUpstream:
    """What :func:`load_upstream` built.

    Attributes:
        upstream: the :class:`~daisy_upstream.core.expert.DaisyUpstream`, eval mode.
        checkpoint: the checkpoint file it was built from (None: built from a dict in memory).
        config: the upstream config as a plain dict (what the upstream was given).
        exit_counts: the training exit counts set on it, or None.
        calibration: the calibration record made here on ``calibrate_on`` audio (the
            checkpoint and the config had none), else None.
    """

    upstream: DaisyUpstream
    checkpoint: Optional[Path]
    config: Dict[str, Any]
    exit_counts: Optional[List[int]] = None
    calibration: Optional[Dict[str, Any]] = None


def read_exit_counts(runner_ckpt: PathLike) -> List[int]:
    """The DAISY featurizer's training exit counts (``Featurizer.exit_counts``) of an s3prl runner checkpoint."""
    return exit_counts(runner_ckpt)


def config_values(
    config: Union[None, PathLike, Mapping[str, Any]], overrides: Optional[Mapping[str, Any]] = None
) -> Dict[str, Any]:
    """The upstream config (a YAML path, a mapping, or None for the defaults) with the
    ``overrides`` that are not None, as a plain dict; a bad key or value fails here."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    return load_config(config, **given).to_dict()


def load_upstream(
    ckpt: Union[None, PathLike, Mapping[str, Any]] = None,
    config: Union[None, PathLike, Mapping[str, Any]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
    stats: Union[None, PathLike, Sequence[int]] = None,
    device: Any = "cpu",
    calibrate_on: Optional[Sequence[Any]] = None,
    family: Optional[str] = None,
) -> LoadedUpstream:
    """Build the upstream (once), in eval mode on ``device``.

    Args:
        ckpt: DAISY checkpoint, a file or its dict in memory; None is the embedded model.
        config: upstream config (YAML path, mapping or None), ``overrides`` on top of it.
        stats: the training exit counts, or an s3prl runner checkpoint holding them. A
            statistics strategy (mean/threshold/min-max) without them fails in the first
            forward with the policy's own error (never a silent full run).
        calibrate_on: waveforms ``(n,)`` to calibrate on when neither the checkpoint nor the
            config has a calibration (entropy on what the branches read,
            :func:`daisy_upstream.training.calibration.utterance_entropies`); without them
            that case raises :class:`~daisy_upstream.core.policy.MissingCalibration`.
        family: the model family the checkpoint must be (None: the checkpoint's own).

    Raises:
        FileNotFoundError: no such checkpoint or runner checkpoint.
        MissingCalibration: tau from rho with no calibration anywhere and no ``calibrate_on``.
    """
    path = None if isinstance(ckpt, Mapping) else Path(ckpt) if ckpt else DEFAULT_CHECKPOINT
    if path is not None and not path.exists():  # a file or a transformers folder
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    values = config_values(config, overrides)
    loaded = load_daisy_checkpoint(ckpt if path is None else path, family)
    calibration = None
    if calibrate_on and _lacks_calibration(loaded, load_config(values)):  # else a missing one raises below
        calibration = calibrate_here(loaded, load_config(values), calibrate_on, path)
    upstream = DaisyUpstream(loaded, model_config=values, calibration_record=calibration)
    counts: Optional[List[int]] = None
    if stats is not None:
        counts = read_exit_counts(stats) if isinstance(stats, (str, Path)) else [int(c) for c in stats]
        upstream.set_exit_statistics(counts)
    return LoadedUpstream(upstream.to(device).eval(), path, values, counts, calibration)


def _lacks_calibration(loaded: DaisyCheckpoint, config: DaisyConfig) -> bool:
    """Whether tau is to come from rho for ``loaded``'s branches, with no calibration in the
    checkpoint or the config (:meth:`DaisyConfig.resolve_tau` would raise MissingCalibration)."""
    has_one = config.tau is not None or config.calibration is not None or loaded.calibration is not None
    return loaded.branches is not None and config.needs_tau() and not has_one


def calibrate_here(
    loaded: DaisyCheckpoint, config: DaisyConfig, wavs: Sequence[Any], path: Optional[Path] = None
) -> Dict[str, Any]:
    """A calibration record of ``loaded``'s branches made on the waveforms ``wavs`` (``(n,)`` each)."""
    wavs = [torch.as_tensor(w) for w in wavs]
    net = early_exit_model(loaded, config).to(wavs[0].device).eval()
    with torch.no_grad():
        entropies = utterance_entropies(net, loaded.branches, wavs)
    seconds = sum(len(w) for w in wavs) / SAMPLE_RATE  # every family's models take 16 kHz
    keys = [str(i) for i in range(len(wavs))]
    source = None if path is None else str(path)
    return CalibrationResult(entropies, keys, "the audio at hand", seconds, (float(config.rho),), source).to_dict()


def span_note(upstream: DaisyUpstream, counts: Optional[List[int]]) -> str:
    """One line: which layers may exit, and why (said in every report)."""
    return describe_span(upstream.config, upstream.current_span(), counts, upstream.tau)
