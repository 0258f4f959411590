"""DAISY's premise, checked on a calibration: branch entropy falls with depth (the paper's Fig. 2).

Judged on the per-layer means ``m_1..m_L`` of the utterances' mean branch entropies against
their spread over utterances ``s_1..s_L`` (standard deviations). With ``slope`` and ``r2`` of the
least-squares line through ``(k, m_k)``, ``fall = -slope * (L - 1)`` (the line's drop from layer
1 to layer L, nats) and ``spread = mean_k s_k``, the premise **holds** when all of:

* ``slope < 0``: entropy falls with depth;
* ``r2 >= MIN_R2`` (0.5): the fall is a trend over the layers, not one odd layer;
* ``fall >= MIN_FALL_OVER_SPREAD * spread`` (0.5): depth moves the entropy by at least half of
  what the utterances differ by, so a threshold between ``E_max`` and ``E_min`` sorts utterances
  by depth rather than by their overall level. (One utterance: ``spread`` is 0.)

A model with fewer than 2 layers has no exit to make: the premise does not hold.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, TextIO, Tuple

__all__ = [
    "MIN_FALL_OVER_SPREAD",
    "MIN_R2",
    "PremiseError",
    "check_premise",
    "judge_premise",
    "linear_fit",
    "premise_line",
]

MIN_R2 = 0.5
MIN_FALL_OVER_SPREAD = 0.5

#: what the warning suggests
ADVICE = (
    "try k-means targets on a deeper layer (--targets kmeans --kmeans-layer K), more stage-1 steps "
    "(--max-steps), or other audio"
)


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


class PremiseError(ValueError):
    """``--strict-premise``: the premise does not hold (a user error: exit 2)."""


def judge_premise(layer_mean: Sequence[float], layer_std: Sequence[float], slope: float, r2: float) -> Dict[str, Any]:
    """The calibration record's ``premise``: ``{holds, slope, r2, fall, spread, failed, rule}``.

    ``failed``: the names of the conditions that do not hold (``falls``, ``trend``, ``size``, ``layers``).
    """
    num_layers = len(layer_mean)
    fall = -float(slope) * (num_layers - 1)
    spread = sum(float(s) for s in layer_std) / max(1, len(layer_std))
    failed: List[str] = []
    if num_layers < 2:
        failed.append("layers")
    else:
        if not slope < 0:
            failed.append("falls")
        if not r2 >= MIN_R2:  # NaN fails
            failed.append("trend")
        if not fall >= MIN_FALL_OVER_SPREAD * spread:
            failed.append("size")
    return {
        "holds": not failed,
        "slope": float(slope),
        "r2": float(r2),
        "fall": fall,
        "spread": spread,
        "failed": failed,
        "rule": f"slope < 0, R^2 >= {MIN_R2}, fall = -slope*(L-1) >= {MIN_FALL_OVER_SPREAD} * mean per-layer std",
    }


def premise_line(premise: Mapping[str, Any]) -> str:
    """One line: whether the premise holds, with the figures."""
    figures = (
        f"slope {premise['slope']:+.4f} nats/layer, R^2 {premise['r2']:.3f}, "
        f"fall {premise['fall']:.4f} vs spread {premise['spread']:.4f} nats"
    )
    if premise["holds"]:
        return f"premise holds: branch entropy falls with depth ({figures})"
    return (
        f"the premise does not hold: branch entropy does not fall with depth ({figures}; failed: "
        f"{', '.join(premise['failed'])}), so exits would not follow depth; {ADVICE}"
    )


def check_premise(
    calibration: Mapping[str, Any], strict: bool = False, stream: Optional[TextIO] = None, prog: str = "daisy"
) -> bool:
    """Warn on ``stream`` (default stderr) in one line when the record's premise does not hold.

    Returns whether it holds. A record without ``premise`` (older files) is judged on its
    ``layer_entropy`` and ``layer_std``.

    Raises:
        PremiseError: it does not hold and ``strict``.
    """
    premise = calibration.get("premise")
    if premise is None:
        mean = calibration["layer_entropy"]
        slope, _, r2 = linear_fit(mean)
        premise = judge_premise(mean, calibration.get("layer_std") or [0.0] * len(mean), slope, r2)
    if premise["holds"]:
        return True
    if strict:
        raise PremiseError(f"{premise_line(premise)} (--strict-premise)")
    print(f"{prog}: warning: {premise_line(premise)}", file=stream or sys.stderr)
    return False
