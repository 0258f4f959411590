"""The DAISY upstream for the leaderboard tools: checkpoint + upstream config + exit statistics."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

__all__ = ["config_values", "load_upstream", "read_exit_counts", "span_note"]


def read_exit_counts(runner_ckpt: Union[str, Path]) -> List[int]:
    """The DAISY featurizer's training exit counts (``Featurizer.exit_counts``) of an s3prl runner checkpoint."""
    path = Path(runner_ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"runner checkpoint {path} does not exist (--stats)")
    from daisy_upstream.integration.runner_io import exit_counts

    return exit_counts(path)


def config_values(config_path: Optional[Union[str, Path]], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """The upstream config (``-g`` YAML, or the defaults) with ``overrides``, as a plain dict."""
    from daisy_upstream.core.expert import load_config

    config = load_config(config_path, **{k: v for k, v in overrides.items() if v is not None})
    return config.to_dict()


def load_upstream(
    ckpt: Optional[Union[str, Path]],
    config_path: Optional[Union[str, Path]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
    stats: Optional[Union[str, Path]] = None,
    device: str = "cpu",
) -> Tuple[Any, Path, Dict[str, Any], Optional[List[int]]]:
    """``(upstream, checkpoint path, config dict, exit counts)``, upstream in eval mode on ``device``.

    ``ckpt`` None is the embedded model. A statistics strategy (mean/threshold/min-max) without
    ``stats`` fails in the first forward with the policy's own error (never a silent full run).
    """
    from daisy_upstream.integration.hubconf import DEFAULT_CHECKPOINT, daisy_local

    path = Path(ckpt) if ckpt else DEFAULT_CHECKPOINT
    values = config_values(config_path, overrides or {})
    upstream = daisy_local(str(path), model_config=values)  # the file's own family
    counts = read_exit_counts(stats) if stats else None
    if counts is not None:
        upstream.set_exit_statistics(counts)
    return upstream.to(device).eval(), path, values, counts


def span_note(upstream: Any, counts: Optional[List[int]]) -> str:
    """One line: which layers may exit, and why (said in every report)."""
    config = upstream.config
    span = upstream.current_span()
    if config.strategy == "none":
        why = "strategy 'none' (plain threshold: every layer may exit)"
        if counts is None:
            why += "; no exit statistics given (--stats), the default"
        else:
            why += "; the given exit statistics are not used by this strategy"
    elif config.needs_statistics():
        why = f"strategy {config.strategy!r} from the exit statistics {counts}"
    else:
        why = f"strategy {config.strategy!r}"
    tau = "-" if upstream.tau is None else f"{upstream.tau:.4g}"
    return f"exit span {span}: {why}; tau {tau}"
