"""``daisy train-branches``: stage 1, one early-exit branch per layer of a frozen HuBERT.

Re-running the same command with the same ``--work-dir`` continues where the last run
stopped. Under ``torchrun`` (WORLD_SIZE > 1) the branches train with DDP.
"""

from __future__ import annotations

import argparse
import logging
import resource
import shlex
from pathlib import Path
from typing import Any

from daisy_upstream.cli import args as types


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``daisy train-branches``."""
    _add_files(parser)
    _add_targets(parser)
    _add_training(parser)
    _add_reporting(parser)


def _add_files(parser: argparse.ArgumentParser) -> None:
    """Options: the checkpoint, the audio, the outputs."""
    parser.add_argument(
        "-k",
        "--ckpt",
        "--checkpoint",
        dest="ckpt",
        type=Path,
        required=True,
        help="HuBERT, wav2vec 2.0, data2vec or WavLM checkpoint as s3prl's stock upstream "
        "loads it (plain), a fairseq original .pt, a transformers folder, DAISY (branches "
        "re-trained) or the authors' HuBERT layout (with --teacher); docs/checkpoints.md",
    )
    parser.add_argument(
        "--audio",
        type=Path,
        required=True,
        help="unlabeled audio: a directory tree of wav/flac, a list file (one path a line, "
        "relative to the list's folder) or a LibriSpeech-layout root",
    )
    parser.add_argument("--out", type=Path, required=True, help="DAISY checkpoint to write")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="resumable state and TensorBoard logs (default: OUT's name + '.work')",
    )
    parser.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="converted HuBERT giving final_proj/label_embs_concat (for the authors' layout)",
    )


def _add_targets(parser: argparse.ArgumentParser) -> None:
    """Options: what the branches learn."""
    parser.add_argument(
        "--targets",
        choices=("model", "kmeans", "quantizer"),
        default=None,
        help="what the branches learn: 'model' = the model's own prediction at its last layer (HuBERT's "
        "cluster assignment, wav2vec 2.0's contrastive codeword, one code per codebook group; the default "
        "where there is one), 'kmeans' = k-means on layer --kmeans-layer over the training "
        "audio (any family; needed for WavLM and data2vec), 'quantizer' = wav2vec 2.0's quantizer code of "
        "the input (earliest layers predict it best: exits at layer 1; for comparison only)",
    )
    parser.add_argument(
        "--strict-premise",
        action="store_true",
        help="exit 2 (after writing the checkpoint) when the held-out branch entropy does not fall with depth, "
        "instead of a one-line warning",
    )
    parser.add_argument(
        "--kmeans-layer",
        type=types.positive_int,
        default=None,
        help="with --targets kmeans: the hidden state K (1..L) to cluster",
    )
    parser.add_argument(
        "--clusters", type=types.at_least_2, default=None, help="with --targets kmeans: the number of centroids"
    )
    parser.add_argument(
        "--kmeans-batch-frames",
        type=types.positive_int,
        default=10000,
        help="frames per MiniBatchKMeans.partial_fit call (default 10000)",
    )
    parser.add_argument(
        "--kmeans-max-frames",
        type=types.positive_int,
        default=None,
        help="feed k-means at most this many frames (default: all of them)",
    )
    parser.add_argument(
        "--kmeans-passes",
        type=types.positive_int,
        default=1,
        help="passes of the training audio through k-means (default 1; small corpora need more)",
    )


def _add_training(parser: argparse.ArgumentParser) -> None:
    """Options: the optimisation: steps, device, batches, learning rate."""
    parser.add_argument(
        "--max-steps",
        type=types.positive_int,
        default=None,
        help="total optimizer steps (paper: 88000); default: --epochs passes",
    )
    parser.add_argument(
        "--epochs", type=types.positive_int, default=1, help="passes over the audio without --max-steps"
    )
    parser.add_argument(
        "--stop-after",
        type=types.positive_int,
        default=None,
        help="stop this call after N steps (state saved; run again to continue)",
    )
    parser.add_argument(
        "--device",
        type=types.device,
        default=None,
        help="torch device: cpu, cuda, cuda:1 (default: cuda when a GPU is visible, else cpu)",
    )
    types.add_precision(parser)
    types.add_loader(parser, "decoding, noising and padding the training batches (and the k-means pass's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, split and batch order")
    parser.add_argument(
        "--batch-seconds",
        type=types.positive_float,
        default=400.0,
        help="audio seconds per batch, summed (paper: 32 LibriSpeech utterances ~ 400 s)",
    )
    parser.add_argument("--lr", type=types.positive_float, default=5e-5, help="AdamW learning rate (paper 5e-5)")
    parser.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    parser.add_argument(
        "--heldout-fraction",
        type=float,
        default=None,
        help="share of the audio held out for evaluation and calibration (default 0.01; 0 with --heldout-audio)",
    )
    parser.add_argument(
        "--heldout-audio",
        type=Path,
        default=None,
        help="separate held-out audio for evaluation and calibration (same forms as --audio)",
    )
    parser.add_argument(
        "--noise-prob",
        type=types.unit_interval,
        default=0.0,
        help="share of training utterances mixed with sox noise at 0-20 dB SNR (targets "
        "from the noisy audio itself; default 0)",
    )
    parser.add_argument(
        "--lr-schedule",
        choices=("constant", "linear"),
        default="constant",
        help="constant (the paper's; default) or linear decay to zero at the last step",
    )
    parser.add_argument(
        "--no-balance-lr",
        dest="balance_lr",
        action="store_false",
        help="one learning rate for every branch (default: branch k gets lr x the largest "
        "mean feature norm / layer k's, measured on the first batch)",
    )
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="store the checkpoint's tensors in fp16 (half the size; loading restores fp32)",
    )


def _add_reporting(parser: argparse.ArgumentParser) -> None:
    """Options: what is reported and saved, and how the run behaves."""
    parser.add_argument(
        "--rho",
        type=types.rho,
        nargs="+",
        default=[0.7, 0.76, 1.0],
        help="rho values whose tau is reported (the calibration is stored either way)",
    )
    parser.add_argument("--log-every", type=types.non_negative_int, default=10, help="steps between TensorBoard points")
    parser.add_argument(
        "--eval-every", type=types.non_negative_int, default=1000, help="steps between held-out evaluations"
    )
    parser.add_argument("--save-every", type=types.non_negative_int, default=1000, help="steps between state saves")
    parser.add_argument(
        "--reject-resample",
        action="store_true",
        help="reject audio not at 16 kHz instead of resampling it with a warning",
    )
    parser.add_argument(
        "--threads", type=types.threads, default=None, help="torch CPU threads (0 or none: torch's default)"
    )
    parser.add_argument("--force", action="store_true", help="replace an --out that train-branches wrote before")
    parser.add_argument(
        "--resume-anyway",
        action="store_true",
        help="continue a --work-dir state saved with other --max-steps, --epochs, --eval-every or "
        "--rho with these (without it such a resume is refused, naming what differs)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _table(values_by_name: dict, num_layers: int) -> str:
    names = list(values_by_name)
    lines = [f"{'layer':>5} " + " ".join(f"{n:>12}" for n in names)]
    for k in range(num_layers):
        lines.append(f"{k + 1:>5} " + " ".join(f"{values_by_name[n][k]:12.4f}" for n in names))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``daisy train-branches``; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from daisy_upstream.audio.corpus import AudioCorpus
    from daisy_upstream.training.calibration import check_premise
    from daisy_upstream.training.stage1 import train_branches

    types.set_threads(args.threads)
    from daisy_upstream.outputs import check_output_files, check_working_folder
    from daisy_upstream.training.stage1_state import holds_a_state

    check_output_files([args.out], "train-branches", args.force, (args.ckpt, args.teacher))  # before any work
    work_dir = args.work_dir or args.out.with_name(args.out.stem + ".work")
    check_working_folder(work_dir, "train-branches", (args.ckpt, args.teacher, args.audio, args.heldout_audio),
                         made_before=holds_a_state, flag="--work-dir")  # fmt: skip
    if args.heldout_fraction is None:
        args.heldout_fraction = 0.0 if args.heldout_audio is not None else 0.01
    elif args.heldout_audio is not None and args.heldout_fraction:
        raise ValueError("give --heldout-audio or --heldout-fraction, not both")
    config = _stage1_config(args)
    config.validate()
    corpus = AudioCorpus.from_source(args.audio, resample=not args.reject_resample)
    logging.info("audio: %d files, %.1f s from %s", len(corpus), corpus.seconds, corpus.name)
    heldout = None
    if args.heldout_audio is not None:
        heldout = AudioCorpus.from_source(args.heldout_audio, resample=not args.reject_resample)
        logging.info("held-out audio: %d files, %.1f s from %s", len(heldout), heldout.seconds, heldout.name)
    command = getattr(args, "command_line", None)
    result = train_branches(
        args.ckpt,
        corpus,
        args.out,
        work_dir,
        config,
        device=args.device,
        teacher=args.teacher,
        progress=not args.no_progress,
        heldout=heldout,
        half=args.fp16,
        provenance={"command": shlex.join(command)} if command else None,
        force=args.force,
        resume_anyway=args.resume_anyway,
    )
    if result.rank != 0:
        return 0  # under torchrun only rank 0 reports and writes
    if not _report(args, result, corpus, work_dir):
        return 0
    check_premise(result.calibration, strict=args.strict_premise, prog="daisy train-branches")
    return 0


def _stage1_config(args: argparse.Namespace) -> Any:
    """Stage 1's settings from the command line (validated by the caller)."""
    from daisy_upstream.training.stage1 import Stage1Config

    return Stage1Config(
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_seconds=args.batch_seconds,
        max_steps=args.max_steps,
        epochs=args.epochs,
        seed=args.seed,
        heldout_fraction=args.heldout_fraction,
        log_every=args.log_every,
        eval_every=args.eval_every,
        save_every=args.save_every,
        stop_after=args.stop_after,
        rhos=tuple(args.rho),
        noise_prob=args.noise_prob,
        balance_lr=args.balance_lr,
        lr_schedule=args.lr_schedule,
        targets=args.targets,
        kmeans_layer=args.kmeans_layer,
        clusters=args.clusters,
        kmeans_batch_frames=args.kmeans_batch_frames,
        kmeans_max_frames=args.kmeans_max_frames,
        kmeans_passes=args.kmeans_passes,
        precision=args.precision,
        workers=args.workers,
        prefetch=args.prefetch,
    )


def _report(args: argparse.Namespace, result: Any, corpus: Any, work_dir: Path) -> bool:
    """What a finished (or paused) call prints; False when the run is not finished yet."""
    from daisy_upstream.core.policy import compute_tau

    print(f"audio: {corpus.problems.summary()}")
    print(
        f"trained {result.step}/{result.total_steps} steps; this call: {result.audio_seconds:.1f} s of audio "
        f"in {result.wall_seconds:.1f} s ({result.throughput:.2f} audio s per wall s)"
    )
    print(
        f"peak memory: process RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
        + (f", GPU allocated {result.peak_memory_mb:.0f} MiB" if result.peak_memory_mb is not None else "")
    )
    if not result.finished:
        print(f"not finished: state saved in {work_dir}; run the same command again to continue")
        return False
    if result.heldout is not None:
        print(f"held-out ({result.heldout['utterances']} utterances, {result.heldout['frames']} frames):")
        print(
            _table(
                {
                    "CE": result.heldout["ce"],
                    "agreement": result.heldout["accuracy"],
                    "entropy": result.calibration["layer_entropy"],
                },
                len(result.heldout["ce"]),
            )
        )
    entropy = result.calibration["layer_entropy"]
    print(
        f"calibration ({result.calibration['dataset']}): E_max {max(entropy):.4f}, E_min {min(entropy):.4f}, "
        + ", ".join(f"tau(rho={r:g}) {compute_tau(entropy, r):.6f}" for r in args.rho)
    )
    print(f"wrote {result.out}  (TensorBoard: {work_dir / 'tb'})")
    return True
