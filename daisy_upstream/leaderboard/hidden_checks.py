"""The SUPERB hidden-set template's checks, run on a submission folder in a fresh interpreter.

``python -m daisy_upstream.leaderboard.hidden_checks`` with the folder as working directory:
imports ``expert.py`` from it, builds ``UpstreamExpert(ckpt="model.pt")``, runs random 2, 1.8
and 3.7 s waveforms (16 kHz) as one batch and checks that ``hidden_states`` (and any task key:
PR, SID, ER, ASR, ASV, SD, QbE, ST, SS, SE, secret) is a list of ``(B, T, D)`` tensors of one
shape, that ``get_downsample_rates(key)`` is an int and ``|round(max_len / rate) - T| < 5``.
Prints one JSON line ``{"ok", "problems", "shapes", "rates"}``; exit status 1 on a problem.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List

from daisy_upstream.audio.io import SAMPLE_RATE

__all__ = ["SECONDS", "TASK_KEYS", "check_upstream", "main"]

TASK_KEYS = ("PR", "SID", "ER", "ASR", "ASV", "SD", "QbE", "ST", "SS", "SE", "secret")
SECONDS = (2.0, 1.8, 3.7)
TOLERANCE = 5  # frames


def check_upstream(model: Any, seed: int = 0) -> Dict[str, Any]:
    """Run the template's checks on ``model``; ``{"ok", "problems", "shapes", "rates"}``."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    wavs = [torch.randn(round(s * SAMPLE_RATE), generator=generator) for s in SECONDS]
    max_len = max(len(w) for w in wavs)
    model.eval()
    with torch.no_grad():
        results = model(wavs)
    problems: List[str] = []
    shapes, rates = {}, {}
    if not isinstance(results, dict) or "hidden_states" not in results:
        return {"ok": False, "problems": ["forward must return a dict with 'hidden_states'"], "shapes": {}, "rates": {}}
    for key in ["hidden_states", *[k for k in TASK_KEYS if k in results]]:
        states = results[key]
        if not isinstance(states, (list, tuple)) or not states or not all(isinstance(h, torch.Tensor) for h in states):
            problems.append(f"{key}: expected a non-empty list of tensors, got {type(states).__name__}")
            continue
        found = {tuple(h.shape) for h in states}
        shapes[key] = [list(s) for s in sorted(found)]
        if len(found) != 1:
            problems.append(f"{key}: tensors of different shapes {sorted(found)}")
            continue
        shape = found.pop()
        if len(shape) != 3 or shape[0] != len(wavs):
            problems.append(f"{key}: shape {shape}, expected (B={len(wavs)}, T, D)")
            continue
        if not all(bool(torch.isfinite(h).all()) for h in states):
            problems.append(f"{key}: NaN or infinite values")
        rate = model.get_downsample_rates(key)
        rates[key] = rate
        if not isinstance(rate, int) or isinstance(rate, bool):
            problems.append(f"{key}: get_downsample_rates returned {rate!r}, expected an int")
            continue
        if abs(round(max_len / rate) - shape[1]) >= TOLERANCE:
            problems.append(
                f"{key}: {shape[1]} frames for {max_len} samples at rate {rate} "
                f"(expected about {round(max_len / rate)})"
            )
    return {"ok": not problems, "problems": problems, "shapes": shapes, "rates": rates}


def main() -> int:
    sys.path.insert(0, os.getcwd())
    import torch

    torch.set_num_threads(1)
    from expert import UpstreamExpert  # the submission's expert.py

    report = check_upstream(UpstreamExpert(ckpt="model.pt"))
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
