"""Write the bench set (``daisy bench``'s default: 32 clips of 1-6 s, a quarter each clean, 10, 5
and 0 dB) to an ``.npz`` for a machine without sox or pocketsphinx-testdata (the device).

Usage: ``python tests/gpu/make_clips.py OUT.npz [--utterances 32 --min-seconds 1 --max-seconds 6 --seed 0]``
"""

from __future__ import annotations

import argparse

import numpy as np

from daisy_upstream.evaluation.bench import bench_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--utterances", type=int, default=32)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    clips = bench_set(args.utterances, args.min_seconds, args.max_seconds, args.seed)
    arrays = {f"wav{i}": c.wav.astype(np.float32) for i, c in enumerate(clips)}
    snrs = np.array([np.nan if c.snr_db is None else c.snr_db for c in clips])
    sources = np.array([c.source for c in clips])
    np.savez_compressed(args.out, snr_db=snrs, source=sources, **arrays)
    print(f"{args.out}: {len(clips)} clips, {sum(len(c.wav) for c in clips) / 16000:.1f} s")


if __name__ == "__main__":
    main()
