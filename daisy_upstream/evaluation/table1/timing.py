"""Table 1's time column: every row's upstream forward beside the full model's, one benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import torch

from daisy_upstream.audio.io import SAMPLE_RATE, load_audio
from daisy_upstream.core.policy import make_plan
from daisy_upstream.evaluation.benchmark import Mode, run_benchmark
from daisy_upstream.evaluation.loading import load_upstream

from .plan import Row

__all__ = ["time_rows"]


def time_rows(
    ckpt: Path,
    rows: Sequence[Row],
    counts: Mapping[str, Sequence[int]],
    files: Sequence[Path],
    repeats: int = 3,
    threads: Optional[int] = 1,
    device: str = "cpu",
) -> Dict[str, Any]:
    """Every row's upstream forward on ``files`` beside the full model (one benchmark run).

    ``threads``: torch intra-op threads while timing (None: torch's default). One thread is
    the honest choice on a loaded machine: with more threads than free cores, OpenMP's
    waiting dominates and the timings say more about the other load than about the model.
    ``device``: where the model and the audio are while timing.
    """

    if not files:
        raise ValueError("no test audio to time")
    torch.manual_seed(0)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    modes, spans, net = [], {}, None
    for row in rows:
        upstream = load_upstream(ckpt, dict(row.upstream), stats=counts[row.run], device=device).upstream
        if net is None:
            net = upstream.net
            modes.append(Mode("__full__", make_plan([upstream.num_layers], None)))
        span = upstream.current_span()
        spans[row.key] = span
        modes.append(Mode(row.key, upstream.current_plan()))
    wavs = [load_audio(p).to(device) for p in files]
    try:
        results = run_benchmark(net, wavs, modes, batch_sizes=(1,), repeats=repeats, warmup=1)
    finally:
        torch.set_num_threads(previous_threads)
    out = {
        "utterances": len(wavs),
        "audio_seconds": round(sum(len(w) for w in wavs) / SAMPLE_RATE, 2),
        "repeats": repeats,
        "batch_size": 1,
        "threads": threads,
        "modes": {},
    }
    for result in results:
        record = result.to_dict()
        record["span"] = spans.get(result.mode)
        out["modes"][result.mode] = record
    return out
