"""The device check's benches: ``daisy bench --random-base --device cuda --stock`` for each
(family, precision, cuda_graphs) of :data:`RUNS`, in one process, on the bench set made before
(``tests/gpu/make_clips.py``: the device has neither sox nor pocketsphinx-testdata).

Each run is :func:`daisy_upstream.evaluation.bench.bench` with the CLI's defaults (32 clips,
repeats 5, warm-up 1, seed 0) and ``--batch-sizes`` as given; after each, ``OUT/benches.json``
(every finished run's ``bench.json``: meta, results, targets) and ``OUT/benches.txt`` (their
tables) are rewritten, so a run cut off by the time limit leaves the ones before it. A run that
would not end before ``--deadline`` seconds (its estimate: the slowest run so far) is listed as
skipped, not started.

Usage: ``python tests/gpu/run_benches.py --clips .gpu/bench_clips.npz --out $OUT --deadline 420``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

#: (family, precision, cuda_graphs), most wanted first: HuBERT fp32 with graphs and without,
#: bf16 with weights cast once and autocast, WavLM and wav2vec 2.0, then the rest without graphs
RUNS = [
    ("hubert", "fp32", "auto"),
    ("hubert", "fp32", "off"),
    ("hubert", "bf16-weights", "auto"),
    ("hubert", "bf16", "auto"),
    ("wavlm", "fp32", "auto"),
    ("wav2vec2", "fp32", "auto"),
    ("hubert", "bf16-weights", "off"),
    ("hubert", "bf16", "off"),
    ("wavlm", "fp32", "off"),
    ("wav2vec2", "fp32", "off"),
]


def load_clips(path: str) -> List[Any]:
    from daisy_upstream.evaluation.speech_sets import NoisyClip

    data = np.load(path)
    count = len(data["snr_db"])
    return [
        NoisyClip(
            data[f"wav{i}"], None if np.isnan(data["snr_db"][i]) else float(data["snr_db"][i]), str(data["source"][i])
        )
        for i in range(count)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--deadline", type=float, default=420.0, help="seconds from start for the last run to end")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the plumbing (with --runs 1, few clips)")
    parser.add_argument("--runs", type=int, default=len(RUNS), help="the first N of RUNS")
    parser.add_argument("--max-clips", type=int, default=None)
    args = parser.parse_args()

    import torch

    from daisy_upstream.evaluation.bench import bench

    clips = load_clips(args.clips)[: args.max_clips]
    out = Path(args.out)
    start, slowest = time.monotonic(), 0.0
    done: List[Dict[str, Any]] = []
    tables: List[str] = []
    skipped: List[Dict[str, Any]] = []
    for family, precision, graphs in RUNS[: args.runs]:
        name = f"{family} {precision} cuda_graphs={graphs}"
        if time.monotonic() - start + slowest > args.deadline:
            skipped.append({"family": family, "precision": precision, "cuda_graphs": graphs, "why": "time"})
            print(f"[benches] {name}: skipped (time)", flush=True)
            continue
        began = time.monotonic()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                result = bench(
                    Path(tmp) / "bench",
                    random_base=True,
                    family=family,
                    overrides={"precision": precision, "cuda_graphs": graphs},
                    batch_sizes=args.batch_sizes,
                    repeats=args.repeats,
                    device=args.device,
                    stock=True,
                    clips=clips,
                    say=lambda message, name=name: print(f"[{name}] {message}", flush=True),
                )
        except Exception:  # one failed run must not lose the others: its traceback is the record
            skipped.append(
                {"family": family, "precision": precision, "cuda_graphs": graphs, "why": traceback.format_exc()}
            )
            print(f"[benches] {name}: failed\n{skipped[-1]['why']}", flush=True)
            torch.cuda.empty_cache()
            continue
        elapsed = time.monotonic() - began
        slowest = max(slowest, elapsed)
        result["meta"]["wall_seconds"] = elapsed
        done.append({k: v for k, v in result.items() if k != "table"})
        tables.append(f"## {name} ({elapsed:.0f} s)\n\n{result['table']}\n")
        (out / "benches.json").write_text(json.dumps({"runs": done, "skipped": skipped}, indent=1) + "\n")
        (out / "benches.txt").write_text("\n".join(tables))
        print(f"[benches] {name}: done in {elapsed:.0f} s", flush=True)
    (out / "benches.json").write_text(json.dumps({"runs": done, "skipped": skipped}, indent=1) + "\n")
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
