"""``daisy pretrain-tiny``: pretrain the embedded tiny HuBERT (resumable).

Re-running the same command continues where the last run stopped (iteration, step,
optimizer, LR schedule, data order and masks), from ``--state-dir``.
"""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

from daisy_upstream.cli import args as types


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``daisy pretrain-tiny``."""
    parser.add_argument(
        "--corpus",
        type=Path,
        default=Path("runs/corpus_pretrain"),
        help="corpus folder; made with make-corpus settings below if missing",
    )
    parser.add_argument(
        "--corpus-hours",
        type=types.positive_float,
        default=3.0,
        help="hours of speech when the corpus has to be made (default 3)",
    )
    parser.add_argument("--corpus-seed", type=int, default=0, help="seed of a corpus to make")
    parser.add_argument(
        "--steps-iter1", type=types.non_negative_int, default=4000, help="training steps of iteration 1 (MFCC targets)"
    )
    parser.add_argument(
        "--steps-iter2",
        type=types.non_negative_int,
        default=6000,
        help="training steps of iteration 2 (the model's own features)",
    )
    parser.add_argument(
        "--noise-prob",
        type=float,
        default=None,
        help="share of training crops mixed with sox noise at 0-20 dB SNR, clean "
        "targets kept (denoising masked prediction; default 0)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/pretrain_tiny/hubert_tiny.pt"),
        help="s3prl converted checkpoint to write (updated at every save)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path("runs/pretrain_tiny/state"),
        help="resumable state folder (default runs/pretrain_tiny/state; the shipped "
        "model's finished state is train_state/pretrain_tiny, which 'make embedded' "
        "passes explicitly)",
    )
    parser.add_argument("--threads", type=types.threads, default=2, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--device", type=types.device, default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--ckpt-minutes", type=float, default=5.0, help="save the state at least this often (minutes)")
    parser.add_argument(
        "--exact-state", action="store_true", help="save Adam moments in fp32 (bit-exact resume, 2x state size)"
    )
    parser.add_argument(
        "--max-steps", type=int, default=None, help="stop after this many steps in this call (state saved)"
    )
    parser.add_argument(
        "--plot", type=Path, default=None, help="only plot the curves of --state-dir's log to this PNG and exit"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``daisy pretrain-tiny``; returns the exit status."""
    import warnings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from daisy_upstream.factory.pretrain.plot import plot_curves
    from daisy_upstream.factory.pretrain.state import LOG_FILE

    if args.plot is not None:
        print(plot_curves(args.state_dir / LOG_FILE, args.plot))
        return 0
    from daisy_upstream.factory.pretrain.train import PretrainConfig, pretrain

    # after s3prl is imported: HubertModel logs its whole config at INFO for every build
    logging.getLogger("s3prl").setLevel(logging.WARNING)
    logging.getLogger("s3prl.upstream.hubert.hubert_model").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)

    if not (args.corpus / "corpus.json").exists() and not (args.corpus / "train").is_dir():
        from daisy_upstream.factory.corpus.build import make_corpus

        logging.info(
            "making the pretraining corpus in %s (%.1f h, seed %d)", args.corpus, args.corpus_hours, args.corpus_seed
        )
        make_corpus(args.corpus, hours=args.corpus_hours, seed=args.corpus_seed, tasks=["asr"])
    cfg = PretrainConfig(
        steps_iter1=args.steps_iter1, steps_iter2=args.steps_iter2, seed=args.seed, exact_state=args.exact_state
    )
    if args.noise_prob is not None:
        cfg.noise_prob = args.noise_prob
    pretrain(
        args.corpus,
        args.state_dir,
        args.out,
        cfg,
        device=args.device,
        threads=args.threads,
        ckpt_minutes=args.ckpt_minutes,
        max_steps=args.max_steps,
        command=shlex.join(args.command_line) if hasattr(args, "command_line") else None,
    )
    try:
        plot_curves(args.state_dir / LOG_FILE, args.state_dir / "curves.png")
    except ValueError as err:  # nothing logged yet
        logging.warning("no curves: %s", err)
    logging.info("state in %s, checkpoint %s, curves %s", args.state_dir, args.out, args.state_dir / "curves.png")
    return 0
