"""``daisy noise-report``: where utterances exit as the SNR falls (the paper's Fig. 4), and,
given a trained ASR downstream, DAISY against a fixed exit of equal average compute on the
mixed-noise set (the paper's Fig. 5).

Arguments in, calls out: the work is in :mod:`daisy_upstream.evaluation.noise_report` (the
sweep) and :mod:`daisy_upstream.evaluation.mixed_set` (Fig. 5).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from daisy_upstream.cli import args as types

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from daisy_upstream.evaluation.noise_report import DEFAULT_SNRS

    parser.add_argument("-k", "--ckpt", help="DAISY checkpoint (default: the embedded tiny model)")
    parser.add_argument("-g", "--config", help="upstream config YAML (rho, tau, strategy, ...)")
    parser.add_argument("--rho", type=types.rho)
    parser.add_argument("--tau", type=float)
    parser.add_argument(
        "--clean",
        help="clean speech: a directory of wav/flac or a list file "
        "(default: pocketsphinx-testdata's real recordings cut into 2-6 s clips)",
    )
    parser.add_argument("--noise", nargs="*", help="noise files (default: sox white/pink/brown noise)")
    parser.add_argument("--snrs", nargs="+", default=list(DEFAULT_SNRS), help="'clean' or dB values")
    parser.add_argument("--max-clips", type=types.positive_int, default=200)
    parser.add_argument("--batch-size", type=types.positive_int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", type=types.device, default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument(
        "--threads",
        type=types.threads,
        default=1,
        help="torch / OpenMP threads here and in s3prl's runner (default 1; 0 = torch's default)",
    )
    parser.add_argument(
        "--out",
        default="runs/noise_report",
        help="folder for the report (written aside, renamed into place when everything is done)",
    )
    parser.add_argument("--force", action="store_true", help="replace an --out that noise-report wrote before")
    mixed = parser.add_argument_group(
        "DAISY vs a fixed exit on the mixed-noise set (Fig. 5; ASR only)",
        "The mixed set (40%% clean, 30%% 10 dB, 20%% 5 dB, 10%% 0 dB) is the ASR test split of a "
        "'daisy make-corpus' corpus (task 'noisy'); it has transcripts, so the comparison is an ASR "
        "WER. The fixed layer is round(mean DAISY exit layer on the mixed set): equal average compute. "
        "Both evaluations run s3prl's runner (-m evaluate -e CKPT) on the same downstream checkpoint "
        "with the upstream config replaced (-o args.upstream_model_config=...); the fixed exit thus "
        "reuses the DAISY-trained head unless --fixed-downstream-ckpt gives one trained with that "
        "fixed exit.",
    )
    mixed.add_argument(
        "--downstream-ckpt",
        help="s3prl runner checkpoint of an ASR downstream trained "
        "with -u daisy_hubert* (e.g. from 'daisy table1': runs/asr/train_rho1.0/states-N.ckpt)",
    )
    mixed.add_argument("--corpus", help="a 'daisy make-corpus' directory with the 'noisy' layout")
    mixed.add_argument(
        "--daisy-config",
        help="upstream config of the DAISY evaluation (default: the one the "
        "downstream was trained with, from its checkpoint)",
    )
    mixed.add_argument("--fixed-downstream-ckpt", help="a downstream trained with the fixed exit (optional)")
    mixed.add_argument("--no-sweep", action="store_true", help="skip the per-SNR exit sweep (Fig. 4)")


def run(args: argparse.Namespace) -> int:
    if args.downstream_ckpt is None and (args.corpus or args.fixed_downstream_ckpt or args.daisy_config):
        raise ValueError("--corpus / --daisy-config / --fixed-downstream-ckpt only apply with --downstream-ckpt")
    if args.downstream_ckpt is not None and not args.corpus:
        raise ValueError("--downstream-ckpt needs --corpus (a 'daisy make-corpus' directory with the mixed set)")
    from daisy_upstream.outputs import check_output_folder, output_folder

    inputs = (
        args.ckpt,
        args.config,
        args.clean,
        *(args.noise or ()),
        args.downstream_ckpt,
        args.corpus,
        args.daisy_config,
        args.fixed_downstream_ckpt,
    )
    out = check_output_folder(args.out, "noise-report", args.force, inputs)  # before any work
    types.set_threads(args.threads)
    with output_folder(out, "noise-report", args.force, inputs) as tmp:
        if not args.no_sweep:
            _snr_sweep(args, tmp)
        if args.downstream_ckpt is not None:
            from daisy_upstream.evaluation.mixed_set import mixed_set_comparison

            result = mixed_set_comparison(
                tmp,
                args.corpus,
                args.downstream_ckpt,
                daisy_config=args.daisy_config,
                fixed_downstream_ckpt=args.fixed_downstream_ckpt,
                device=args.device,
                threads=args.threads or None,
            )
            print(result["table"])
    if not args.no_sweep:
        print(
            f"[noise-report] wrote {out}/noise_report.json, noise_report.txt, exit_layers_by_snr.png", file=sys.stderr
        )
    if args.downstream_ckpt is not None:
        print(f"[noise-report] wrote {out}/mixed_set/mixed_set.json, mixed_set.txt, wer_by_snr.png", file=sys.stderr)
    return 0


def _snr_sweep(args: argparse.Namespace, out: Path) -> None:
    from daisy_upstream.audio.io import SAMPLE_RATE
    from daisy_upstream.evaluation.loading import config_values, load_upstream
    from daisy_upstream.evaluation.noise_report import clean_clips, noise_signals, parse_snrs, snr_sweep

    snrs = parse_snrs(args.snrs)
    overrides = {"rho": args.rho, "tau": args.tau}
    config_values(args.config, overrides)  # a bad key fails here, before any work
    if args.ckpt and not Path(args.ckpt).exists():  # a file or a transformers folder
        raise FileNotFoundError(f"checkpoint {args.ckpt} does not exist (-k/--ckpt)")
    clean = clean_clips(args.clean, args.max_clips, args.seed)
    loaded = load_upstream(args.ckpt, args.config, overrides, device=args.device)
    upstream, ckpt = loaded.upstream, str(loaded.checkpoint)
    noises = noise_signals(args.noise, seconds=max(len(w) for w in clean) / SAMPLE_RATE + 1, seed=args.seed)
    result = snr_sweep(upstream, ckpt, clean, noises, snrs, out, args.batch_size, args.seed, args.device)
    print(result["table"])
