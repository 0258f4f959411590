"""The one way to build a DAISY upstream for our tools: checkpoint + upstream config + the exit
statistics of a trained s3prl runner (bench, demo, noise-report, the mixed set, Table 1's
timing, the leaderboard's profile and export)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

__all__ = ["LoadedUpstream", "config_values", "evaluation_span", "load_upstream", "read_exit_counts", "span_note"]

PathLike = Union[str, Path]


@dataclass
class LoadedUpstream:
    """What :func:`load_upstream` built.

    Attributes:
        upstream: the :class:`~daisy_upstream.core.expert.DaisyUpstream`, eval mode.
        checkpoint: the checkpoint file it was built from.
        config: the upstream config as a plain dict (what the upstream was given).
        exit_counts: the training exit counts set on it, or None.
        calibration: the calibration record made here on ``calibrate_on`` audio (the
            checkpoint and the config had none), else None.
    """

    upstream: Any
    checkpoint: Path
    config: Dict[str, Any]
    exit_counts: Optional[List[int]] = None
    calibration: Optional[Dict[str, Any]] = None


def read_exit_counts(runner_ckpt: PathLike) -> List[int]:
    """The DAISY featurizer's training exit counts (``Featurizer.exit_counts``) of an s3prl runner checkpoint."""
    from daisy_upstream.integration.runner_io import exit_counts

    return exit_counts(runner_ckpt)


def config_values(
    config: Union[None, PathLike, Mapping[str, Any]], overrides: Optional[Mapping[str, Any]] = None
) -> Dict[str, Any]:
    """The upstream config (a YAML path, a mapping, or None for the defaults) with the
    ``overrides`` that are not None, as a plain dict; a bad key or value fails here."""
    from daisy_upstream.core.expert import load_config

    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    return load_config(config, **given).to_dict()


def evaluation_span(config: Union[None, PathLike, Mapping[str, Any]], counts: Sequence[int]) -> List[int]:
    """The exit span of an upstream with ``config`` evaluating after a downstream training that
    counted ``counts`` (``L`` entries, ``Featurizer.exit_counts``): what it logs as ``DAISY exit
    span`` for people, computed here from the same data (never read back from a log)."""
    from daisy_upstream.core.expert import load_config
    from daisy_upstream.core.policy import exit_span

    values = load_config(config)
    counts = [int(c) for c in counts]
    return exit_span(
        values.strategy,
        len(counts),
        counts if values.needs_statistics() else None,
        values.span_threshold,
        values.fixed_layer,
    )


def load_upstream(
    ckpt: Optional[PathLike] = None,
    config: Union[None, PathLike, Mapping[str, Any]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
    stats: Union[None, PathLike, Sequence[int]] = None,
    device: Any = "cpu",
    calibrate_on: Optional[Sequence[Any]] = None,
    family: Optional[str] = None,
) -> LoadedUpstream:
    """Build the upstream, in eval mode on ``device``.

    Args:
        ckpt: DAISY checkpoint; None is the embedded model.
        config: upstream config (YAML path, mapping or None), ``overrides`` on top of it.
        stats: the training exit counts, or an s3prl runner checkpoint holding them. A
            statistics strategy (mean/threshold/min-max) without them fails in the first
            forward with the policy's own error (never a silent full run).
        calibrate_on: waveforms ``(n,)`` to calibrate on when neither the checkpoint nor the
            config has a calibration (entropy on what the branches read,
            :func:`daisy_upstream.training.calibration.utterance_entropies`); without them
            that case raises :class:`~daisy_upstream.core.policy.MissingCalibration`.
        family: the model family the checkpoint must be (None: the file's own).

    Raises:
        FileNotFoundError: no such checkpoint or runner checkpoint.
        MissingCalibration: tau from rho with no calibration anywhere and no ``calibrate_on``.
    """
    from daisy_upstream.core.policy import MissingCalibration
    from daisy_upstream.integration.hubconf import DEFAULT_CHECKPOINT, daisy_local

    path = Path(ckpt) if ckpt else DEFAULT_CHECKPOINT
    if not path.exists():  # a file or a transformers folder
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    values = config_values(config, overrides)
    calibration = None
    try:
        upstream = daisy_local(str(path), model_config=values, family=family)
    except MissingCalibration:
        if not calibrate_on:
            raise
        upstream, calibration = _calibrated_here(path, values, calibrate_on, family)
    counts: Optional[List[int]] = None
    if stats is not None:
        counts = read_exit_counts(stats) if isinstance(stats, (str, Path)) else [int(c) for c in stats]
        upstream.set_exit_statistics(counts)
    return LoadedUpstream(upstream.to(device).eval(), path, values, counts, calibration)


def _calibrated_here(path: Path, values: Dict[str, Any], wavs: Sequence[Any], family: Optional[str]):
    """The upstream with a calibration made on ``wavs``, and that calibration's record."""
    import tempfile

    import torch

    from daisy_upstream.audio.io import SAMPLE_RATE
    from daisy_upstream.integration.hubconf import daisy_local
    from daisy_upstream.training.calibration import CalibrationResult, utterance_entropies, write_calibration_yaml

    wavs = [torch.as_tensor(w) for w in wavs]
    probe = daisy_local(str(path), model_config={**values, "tau": 0.0}, family=family).to(wavs[0].device).eval()
    with torch.no_grad():
        entropies = utterance_entropies(probe.net, probe.net.branches, wavs)
    seconds = sum(len(w) for w in wavs) / SAMPLE_RATE  # every family's models take 16 kHz
    result = CalibrationResult(
        entropies, [str(i) for i in range(len(wavs))], "the audio at hand", seconds, (float(values["rho"]),), str(path)
    )
    with tempfile.TemporaryDirectory() as tmp:  # the upstream reads it once, when built
        yaml_path = write_calibration_yaml(result, Path(tmp) / "calibration.yaml")
        upstream = daisy_local(str(path), model_config={**values, "calibration": str(yaml_path)}, family=family)
    return upstream, result.to_dict()


def span_note(upstream: Any, counts: Optional[List[int]]) -> str:
    """One line: which layers may exit, and why (said in every report)."""
    config = upstream.config
    span = upstream.current_span()
    if config.strategy == "none":
        why = "strategy 'none' (plain threshold: every layer may exit)"
        if counts is None:
            why += "; no exit statistics given, the default"
        else:
            why += "; the given exit statistics are not used by this strategy"
    elif config.needs_statistics():
        why = f"strategy {config.strategy!r} from the exit statistics {counts}"
    else:
        why = f"strategy {config.strategy!r}"
    tau = "-" if upstream.tau is None else f"{upstream.tau:.4g}"
    return f"exit span {span}: {why}; tau {tau}"
