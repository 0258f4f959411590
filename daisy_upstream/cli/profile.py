"""``daisy profile``: MACs per utterance (batch 1), DAISY vs the full model, in the SUPERB form's buckets."""

from __future__ import annotations

import argparse
from pathlib import Path

from daisy_upstream.cli import args as types

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-k", "--ckpt", help="DAISY checkpoint (default: the embedded tiny model)")
    parser.add_argument("-g", "--config", help="upstream config YAML (rho, tau, strategy, ...)")
    parser.add_argument("--rho", type=types.rho, help="override the config's rho")
    parser.add_argument("--tau", type=float, help="override the config's tau")
    parser.add_argument(
        "--stats",
        help="s3prl runner checkpoint whose Featurizer.exit_counts drive the "
        "statistics strategies (mean/threshold/min-max); without it use strategy 'none'",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--audio", help="audio file, folder, list file or LibriSpeech root (buckets: length quartiles)")
    source.add_argument(
        "--librispeech",
        metavar="ROOT",
        help="LibriSpeech test-clean: the SUPERB challenge's 32 utterances and its four buckets",
    )
    parser.add_argument(
        "-l",
        "--layer",
        type=types.positive_int,
        default=None,
        metavar="K",
        help="profile DAISY as a consumer of hidden_states[K] alone runs it (s3prl's -l K, layer_selections=[K], "
        "ESPnet's layer: K): its forward stops at layer K",
    )
    parser.add_argument("--snr", type=float, metavar="DB", help="mix sox noise into the same clips at this SNR")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    parser.add_argument("--device", type=types.device, default="cpu")
    parser.add_argument(
        "--threads", type=types.threads, default=1, help="torch CPU threads (counts do not depend on it)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs/profile"), help="folder for profile.json, profile.txt, profile.png"
    )
    parser.add_argument("--force", action="store_true", help="replace an --out that profile wrote before")


def run(args: argparse.Namespace) -> int:
    from daisy_upstream.leaderboard.profile import run_profile

    types.set_threads(args.threads)
    profile = run_profile(
        args.out,
        ckpt=args.ckpt,
        config=args.config,
        overrides={"rho": args.rho, "tau": args.tau},
        stats=args.stats,
        audio=args.audio,
        librispeech=args.librispeech,
        snr=args.snr,
        seed=args.seed,
        device=args.device,
        force=args.force,
        layer=args.layer,
    )
    print(profile["table"])
    print(f"wrote {args.out / 'profile.json'}, profile.txt, profile.png")
    return 0
