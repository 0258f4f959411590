"""What the unprocessed input scores on a task's test split: the floor each downstream must beat.

Scored with the function s3prl's SE / SS experts call, ``asteroid.metrics.get_metrics``:

* SE (``enhancement_stft``): the noisy input against the clean speech: PESQ, STOI (%), SI-SDR;
* SS (``separation_stft``): the unseparated mixture against each source: its SI-SDR (the
  reference of s3prl's SI-SDRi, which is therefore 0 for the mixture by definition).

ASR and SID have no unprocessed score (their chance levels are in the report's notes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import numpy as np

from daisy_upstream.audio.io import SAMPLE_RATE, read_audio, read_scp

__all__ = ["UNPROCESSED_TASKS", "unprocessed_metric"]

UNPROCESSED_TASKS = ("enhancement_stft", "separation_stft")


def unprocessed_metric(task: str, config: Mapping[str, Any]) -> Optional[Dict[str, float]]:
    """Mean metric of the unprocessed test input (None for ASR and SID).

    Returns:
        SE ``{"pesq", "stoi" (%), "si_sdr", "utterances"}``; SS ``{"si_sdri": 0.0,
        "mixture_si_sdr", "utterances"}`` (as :func:`~daisy_upstream.integration.runner_io.parse_metric`
        names them).
    """
    if task not in UNPROCESSED_TASKS:
        return None
    from asteroid.metrics import get_metrics

    test_dir = Path(config["downstream_expert"]["loaderrc"]["test_dir"])
    if task == "enhancement_stft":
        noisy, clean = read_scp(test_dir / "noisy" / "wav.scp"), read_scp(test_dir / "clean" / "wav.scp")
        scores = []
        for utt in sorted(noisy):
            x, y = read_audio(noisy[utt]), read_audio(clean[utt])
            m = get_metrics(
                x,
                y[None],
                x[None],
                sample_rate=SAMPLE_RATE,
                metrics_list=["pesq", "stoi", "si_sdr"],
                compute_permutation=False,
            )
            scores.append((m["input_pesq"], m["input_stoi"], m["input_si_sdr"]))
        pesq, stoi, si_sdr = np.mean(scores, axis=0)
        return {"pesq": float(pesq), "stoi": 100.0 * float(stoi), "si_sdr": float(si_sdr), "utterances": len(scores)}
    mixes = read_scp(test_dir / "mix_clean" / "wav.scp")
    sources = [read_scp(test_dir / name / "wav.scp") for name in ("s1", "s2")]
    scores = []
    for utt in sorted(mixes):
        mix = read_audio(mixes[utt])
        refs = np.stack([read_audio(s[utt]) for s in sources])
        m = get_metrics(
            mix,
            refs,
            np.stack([mix] * len(sources)),
            sample_rate=SAMPLE_RATE,
            metrics_list=["si_sdr"],
            compute_permutation=False,
        )
        scores.append(m["input_si_sdr"])
    return {"si_sdri": 0.0, "mixture_si_sdr": float(np.mean(scores)), "utterances": len(scores)}
