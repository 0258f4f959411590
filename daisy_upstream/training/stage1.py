"""Stage 1: train one early-exit branch per layer on a frozen model's own targets (any family).

The targets and the loss are in :mod:`~daisy_upstream.training.targets`, the settings in
:mod:`~daisy_upstream.training.stage1_config`, the resumable state (``<work_dir>/state.pt``,
batch order, RNG) in :mod:`~daisy_upstream.training.stage1_state`; this module is the loop.
The backbone runs once per batch under ``torch.no_grad``; only the branches learn.
Multi-process (``torchrun``): only the branches are wrapped in ``DistributedDataParallel``;
each rank takes every ``world_size``-th batch of the epoch order; the held-out evaluation and
the final calibration are split over the ranks the same way (sums all-reduced, entropies
gathered), and rank 0 logs and writes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.core.branches import ExitBranches
from daisy_upstream.core.checkpoint import DaisyCheckpoint, half_precision, with_branches
from daisy_upstream.core.checkpoint_checks import check_device
from daisy_upstream.core.early_exit import EarlyExitModel
from daisy_upstream.outputs import check_working_folder, output_files

from .distributed import barrier, default_device, init_distributed, resolve_device
from .kmeans_targets import KMEANS_FILE
from .monitor import TrainingMonitor
from .stage1_config import Stage1Config, Stage1Result
from .stage1_loop import Run, evaluate, train
from .stage1_state import STATE_FILE, claim_work_dir, epoch_order, holds_a_state, load_state
from .targets import (
    BranchLoss,
    ClusterTargets,
    balanced_layer_lrs,
    batch_features,
    evaluate_branches,
    load_frozen_model,
    model_targets,
)

__all__ = [
    "BranchLoss",
    "ClusterTargets",
    "Stage1Config",
    "Stage1Result",
    "balanced_layer_lrs",
    "epoch_order",
    "evaluate_branches",
    "train_branches",
]

log = logging.getLogger(__name__)
TOOL = "train-branches"


def _split(
    corpus: AudioCorpus, heldout: Optional[AudioCorpus], config: Stage1Config
) -> Tuple[AudioCorpus, AudioCorpus]:
    if heldout is None:
        return corpus.split(config.heldout_fraction, config.seed)
    if config.heldout_fraction:
        raise ValueError("give either held-out audio or a held-out fraction (set it to 0), not both")
    return corpus, heldout


def _targets(
    kind: str,
    loaded: DaisyCheckpoint,
    raw_state: Dict[str, Any],
    checkpoint: Union[str, Path],
    backbone: EarlyExitModel,
    train_set: AudioCorpus,
    config: Stage1Config,
    work_dir: Path,
    dev: torch.device,
    is_main: bool,
    world: int,
) -> nn.Module:
    """The target source for ``--targets`` (see :mod:`~daisy_upstream.training.targets`)."""
    if kind in ("model", "quantizer"):
        return model_targets(loaded, raw_state, str(checkpoint), kind)
    from .kmeans_targets import load_or_fit_kmeans

    settings = dict(
        layer=config.kmeans_layer,
        clusters=config.clusters,
        seed=config.seed,
        batch_seconds=config.batch_seconds,
        device=dev,
        batch_frames=config.kmeans_batch_frames,
        max_frames=config.kmeans_max_frames,
        passes=config.kmeans_passes,
    )
    if is_main:  # rank 0 clusters and writes work_dir/kmeans.pt; the other ranks read it
        targets = load_or_fit_kmeans(
            work_dir, backbone, train_set, workers=config.workers, prefetch=config.prefetch, **settings
        )
    barrier(world)
    if not is_main:
        targets = load_or_fit_kmeans(work_dir, backbone, train_set, fit=False, **settings)
    return targets.to(dev)


def _write_output(
    out: Path,
    checkpoint: Union[str, Path],
    raw_state: Dict[str, Any],
    run: Run,
    half: bool,
    provenance: Optional[Dict[str, Any]],
    force: bool = False,
) -> Dict[str, Any]:
    """Calibrate on the held-out audio (every rank a share) and write the DAISY checkpoint (rank
    0); returns the calibration."""
    from daisy_upstream.training.calibration import CalibrationResult, layer_entropies

    backbone, branches, train_set, heldout_set, config = (
        run.backbone,
        run.branches,
        run.train_set,
        run.heldout_set,
        run.config,
    )
    step, dev, rank, world = run.done.step, run.dev, run.rank, run.world
    calib_set = heldout_set if len(heldout_set) else train_set
    if not len(heldout_set) and rank == 0:
        log.warning("no held-out audio (held-out fraction 0): the calibration uses the training audio")
    branches.eval()
    entropies, keys, seconds = layer_entropies(
        backbone,
        branches,
        calib_set,
        config.batch_seconds,
        dev,
        rank=rank,
        world=world,
        workers=config.workers,
        prefetch=config.prefetch,
    )
    calibration = CalibrationResult(
        entropies, keys, calib_set.name, seconds, tuple(config.rhos), str(checkpoint), extra={"stage1_steps": step}
    ).to_dict()
    if rank != 0:
        return calibration
    branches_cpu = ExitBranches(branches.num_layers, branches.embed_dim, branches.num_classes, groups=branches.groups)
    branches_cpu.load_state_dict({k: v.detach().cpu() for k, v in branches.state_dict().items()})
    record = {
        "stage1": {
            "steps": step,
            "config": config.as_dict(),
            "train_audio": train_set.name,
            "heldout_audio": heldout_set.name,
        },
        **(provenance or {}),
    }
    written_state = with_branches(raw_state, branches_cpu, calibration, record, run.targets.record())
    with output_files([out], "train-branches", force, inputs=(checkpoint,)) as (tmp,):
        atomic_torch_save(half_precision(written_state) if half else written_state, tmp)
    return calibration


def _devices(device: Optional[str]) -> Tuple[int, int, torch.device]:
    """``(rank, world, device)`` of this process (torchrun's ranks; a missing GPU in one line)."""
    device = device or default_device()
    check_device(device)
    rank, world, local_rank = init_distributed(device)
    dev = resolve_device(device, world, local_rank)
    if world > 1 and dev.type == "cpu" and rank == 0:
        log.warning(
            "%d processes train on the CPU (gloo)%s",
            world,
            ": pass --device cuda for the GPUs" if torch.cuda.is_available() else "",
        )
    return rank, world, dev


def _prepare(
    checkpoint: Union[str, Path],
    loaded: DaisyCheckpoint,
    raw_state: Dict[str, Any],
    corpus: AudioCorpus,
    heldout: Optional[AudioCorpus],
    config: Stage1Config,
    work_dir: Path,
    rank: int,
    world: int,
    dev: torch.device,
) -> Run:
    """The targets, the branches and their optimizer for the loaded frozen model."""
    kind = config.targets or "model"
    model = loaded.model.to(dev).eval()
    backbone = EarlyExitModel(
        model, None, normalize_waveform=bool(loaded.task_cfg.normalize), precision=config.precision
    ).eval()
    train_set, heldout_set = _split(corpus, heldout, config)
    targets = _targets(
        kind, loaded, raw_state, checkpoint, backbone, train_set, config, work_dir, dev, rank == 0, world
    )
    batches = train_set.batches(config.batch_seconds)
    if len(batches) < world:
        raise ValueError(f"{len(batches)} training batch(es) for {world} processes: use fewer batch seconds")
    per_epoch = len(epoch_order(len(batches), config.seed, 0, rank, world))
    with torch.random.fork_rng(devices=[]):  # seeded init, the caller's RNG left as it was
        torch.manual_seed(config.seed)
        branches = ExitBranches(backbone.num_layers, backbone.embed_dim, targets.num_classes, groups=targets.groups)
    branches = branches.to(dev)
    loss_module = BranchLoss(branches)
    optimizer = torch.optim.AdamW(  # one group per branch; "base_lr": its rate before the schedule
        [{"params": list(branch.parameters()), "base_lr": config.lr} for branch in branches],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    train_module: nn.Module = loss_module
    if world > 1:
        train_module = DistributedDataParallel(loss_module, device_ids=[dev.index] if dev.type == "cuda" else None)
    fingerprint = {
        **config.fingerprint(),
        "checkpoint": str(Path(checkpoint).resolve()),
        "data": train_set.fingerprint(),
        "world_size": world,
        "num_classes": targets.num_classes,
        **({"groups": targets.groups} if targets.groups > 1 else {}),
    }
    total = config.max_steps if config.max_steps is not None else config.epochs * per_epoch
    run = Run(
        config, dev, rank, world, backbone, targets, train_set, heldout_set, batches, branches, optimizer,
        train_module, fingerprint, work_dir / STATE_FILE, total,
    )  # fmt: skip
    return run


def _resume_or_start(run: Run, resume_anyway: bool) -> None:
    """Continue from the work dir's state, or set each branch's start rate (``balance_lr``)."""
    done = load_state(run.state_path, run.fingerprint, run.branches, run.optimizer, run.config, resume_anyway)
    config = run.config
    if done is not None:
        if done.step > run.total_steps:
            raise ValueError(
                f"{run.state_path} is at step {done.step}, past the {run.total_steps} steps asked for; "
                "ask for more steps, or use another --work-dir"
            )
        run.done = done
        if run.is_main:
            log.info(
                "resuming from %s at step %d (epoch %d, batch %d)", run.state_path, done.step, done.epoch, done.position
            )
    elif config.balance_lr:  # the same batch on every rank: the first of the unsharded order
        wavs, _ = run.train_set.load_batch(run.batches[epoch_order(len(run.batches), config.seed, 0)[0]])
        if not wavs:
            raise ValueError(f"the first training batch could not be decoded ({run.train_set.problems.summary()})")
        features, _ = batch_features(run.backbone, run.targets, [w.to(run.dev) for w in wavs])
        for group, layer_lr in zip(run.optimizer.param_groups, balanced_layer_lrs(features, config.lr)):
            group["base_lr"] = layer_lr
        del features
    if run.is_main:
        log.info(
            "learning rate per branch: %s (%s schedule)",
            " ".join(f"{g['base_lr']:.3g}" for g in run.optimizer.param_groups),
            config.lr_schedule,
        )


def _train_watched(run: Run, work_dir: Path, tensorboard: bool, progress: bool) -> Tuple[float, float, Optional[float]]:
    """:func:`~daisy_upstream.training.stage1_loop.train` with the progress bar and TensorBoard;
    ``(audio seconds, wall seconds, peak GPU MiB or None)``."""
    run.monitor = TrainingMonitor(
        work_dir,
        run.backbone.num_layers,
        run.done.step,
        run.total_steps,
        tensorboard=run.is_main and tensorboard,
        progress=run.is_main and progress,
        log_every=run.config.log_every,
    )
    if run.dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.dev)
    audio_seconds, wall = train(run)
    run.monitor.close_bar()
    peak = torch.cuda.max_memory_allocated(run.dev) / 2**20 if run.dev.type == "cuda" else None
    return audio_seconds, wall, peak


def train_branches(
    checkpoint: Union[str, Path],
    corpus: AudioCorpus,
    out: Union[str, Path],
    work_dir: Union[str, Path],
    config: Optional[Stage1Config] = None,
    *,
    device: Optional[str] = None,
    teacher: Optional[Union[str, Path]] = None,
    progress: bool = True,
    tensorboard: bool = True,
    heldout: Optional[AudioCorpus] = None,
    half: bool = False,
    provenance: Optional[Dict[str, Any]] = None,
    force: bool = False,
    resume_anyway: bool = False,
) -> Stage1Result:
    """Train the ``L`` exit branches of ``checkpoint`` on ``corpus`` and write a DAISY checkpoint.

    Args:
        checkpoint: a file of any family as its stock s3prl upstream loads it (plain), a
            DAISY checkpoint (its branches are re-trained from a fresh initialisation) or the
            authors' HuBERT layout (needs ``teacher`` for model targets: their heads replace
            ``final_proj``).
        corpus: unlabeled audio; the held-out part (``config.heldout_fraction``) is used for
            evaluation and the calibration stored in ``out``.
        out: the DAISY checkpoint to write when the last step is reached.
        work_dir: resumable state (``state.pt``) and TensorBoard logs (``tb/``): new, empty or
            made by train-branches before (:func:`daisy_upstream.outputs.claim_working_folder`),
            locked while training; a state there is continued.
        device: cpu, cuda, cuda:1; None: cuda when a GPU is visible (under torchrun each
            process takes its ``LOCAL_RANK``'s GPU).
        teacher: a checkpoint of the same backbone that provides ``final_proj`` and
            ``label_embs_concat`` (for the authors' layout).
        heldout: audio for evaluation and the calibration instead of a share of ``corpus``
            (then all of ``corpus`` trains and ``config.heldout_fraction`` must be 0).
        half: store ``out``'s floating tensors in fp16 (loading restores fp32).
        provenance: stored as ``daisy.provenance`` in ``out`` (with the backbone's own).
        force: replace an ``out`` that train-branches wrote before (:mod:`daisy_upstream.outputs`).
        resume_anyway: continue a state saved with other steps, evaluation interval or rho values
            (:data:`~daisy_upstream.training.stage1_state.RESUME_SETTINGS`) with the new ones.

    Raises:
        ValueError: no ``label_embs_concat`` (model targets); a state in ``work_dir`` from
            different settings or data; bad settings; a work dir of other files or in use.

    With ``config.targets == "kmeans"`` the targets are k-means centroids of
    ``hidden_states[config.kmeans_layer]`` over the training audio, fitted before the first
    step (rank 0, written to ``work_dir/kmeans.pt`` and reused on resume).
    """
    config = config or Stage1Config()
    config.validate()
    out, work_dir = Path(out), Path(work_dir)
    rank, world, dev = _devices(device)
    inputs = (checkpoint, teacher, corpus.source, heldout.source if heldout is not None else None)
    if rank == 0:  # refused before any work, nothing written
        check_working_folder(work_dir, TOOL, inputs, made_before=holds_a_state, flag="--work-dir")
    loaded, raw_state = load_frozen_model(checkpoint, teacher, need_head=(config.targets or "model") == "model")
    with claim_work_dir(work_dir, inputs, rank == 0, world, (STATE_FILE, KMEANS_FILE)):
        run = _prepare(checkpoint, loaded, raw_state, corpus, heldout, config, work_dir, rank, world, dev)
        _resume_or_start(run, resume_anyway)
        audio_seconds, wall, peak = _train_watched(run, work_dir, tensorboard, progress)
        run.save()
        finished = run.done.step >= run.total_steps
        final_heldout = calibration = None
        if finished:
            final_heldout = evaluate(run)
            calibration = _write_output(out, checkpoint, raw_state, run, half, provenance, force)
        run.monitor.close()
        barrier(world)
    return Stage1Result(
        finished=finished,
        step=run.done.step,
        total_steps=run.total_steps,
        out=out if finished and run.is_main else None,
        heldout=final_heldout,
        calibration=calibration,
        audio_seconds=audio_seconds,
        wall_seconds=wall,
        problems=corpus.problems.summary(),
        peak_memory_mb=peak,
        history=run.done.history,
        rank=rank,
    )
