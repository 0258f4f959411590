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
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.audio.io import SAMPLE_RATE
from daisy_upstream.audio.noise import NoiseAugment
from daisy_upstream.core.branches import ExitBranches
from daisy_upstream.core.checkpoint import DaisyCheckpoint, half_precision, with_branches
from daisy_upstream.core.early_exit import EarlyExitModel

from .batch_feed import EpochSampler, PaddedBatches, batch_loader, unpad
from .distributed import barrier, default_device, init_distributed, resolve_device
from .monitor import TrainingMonitor
from .stage1_config import Stage1Config, Stage1Result
from .stage1_state import STATE_FILE, Progress, epoch_order, load_state, save_state
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
    backbone: EarlyExitModel,
    branches: ExitBranches,
    train_set: AudioCorpus,
    heldout_set: AudioCorpus,
    config: Stage1Config,
    step: int,
    dev: torch.device,
    half: bool,
    provenance: Optional[Dict[str, Any]],
    targets_record: Optional[Dict[str, Any]] = None,
    rank: int = 0,
    world: int = 1,
    force: bool = False,
) -> Dict[str, Any]:
    """Calibrate on the held-out audio (every rank a share) and write the DAISY checkpoint (rank
    0); returns the calibration."""
    from daisy_upstream.training.calibration import CalibrationResult, layer_entropies

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
    written_state = with_branches(raw_state, branches_cpu, calibration, record, targets_record)
    from daisy_upstream.outputs import output_files

    with output_files([out], "train-branches", force, inputs=(checkpoint,)) as (tmp,):
        atomic_torch_save(half_precision(written_state) if half else written_state, tmp)
    return calibration


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
        work_dir: resumable state (``state.pt``) and TensorBoard logs (``tb/``). If a state
            is there, training continues from it.
        device: cpu, cuda, cuda:1; None: cuda when a GPU is visible (under torchrun each
            process takes its ``LOCAL_RANK``'s GPU).
        teacher: a checkpoint of the same backbone that provides ``final_proj`` and
            ``label_embs_concat`` (for the authors' layout).
        heldout: audio for evaluation and the calibration instead of a share of ``corpus``
            (then all of ``corpus`` trains and ``config.heldout_fraction`` must be 0).
        half: store ``out``'s floating tensors in fp16 (loading restores fp32).
        provenance: stored as ``daisy.provenance`` in ``out`` (with the backbone's own).
        force: replace an ``out`` that train-branches wrote before (:mod:`daisy_upstream.outputs`).

    Raises:
        ValueError: no ``label_embs_concat`` (model targets); a state in ``work_dir`` from
            different settings or data; bad settings.

    With ``config.targets == "kmeans"`` the targets are k-means centroids of
    ``hidden_states[config.kmeans_layer]`` over the training audio, fitted before the first
    step (rank 0, written to ``work_dir/kmeans.pt`` and reused on resume).
    """
    config = config or Stage1Config()
    config.validate()
    out, work_dir = Path(out), Path(work_dir)
    device = device or default_device()
    rank, world, local_rank = init_distributed(device)
    dev = resolve_device(device, world, local_rank)
    is_main = rank == 0
    if world > 1 and dev.type == "cpu" and is_main:
        log.warning(
            "%d processes train on the CPU (gloo)%s",
            world,
            ": pass --device cuda for the GPUs" if torch.cuda.is_available() else "",
        )

    kind = config.targets or "model"
    loaded, raw_state = load_frozen_model(checkpoint, teacher, need_head=kind == "model")
    model = loaded.model.to(dev).eval()
    backbone = EarlyExitModel(
        model, None, normalize_waveform=bool(loaded.task_cfg.normalize), precision=config.precision
    ).eval()
    num_layers, embed_dim = backbone.num_layers, backbone.embed_dim

    train_set, heldout_set = _split(corpus, heldout, config)
    targets = _targets(kind, loaded, raw_state, checkpoint, backbone, train_set, config, work_dir, dev, is_main, world)
    batches = train_set.batches(config.batch_seconds)
    if len(batches) < world:
        raise ValueError(f"{len(batches)} training batch(es) for {world} processes: use fewer batch seconds")
    per_epoch = len(epoch_order(len(batches), config.seed, 0, rank, world))
    total_steps = config.max_steps if config.max_steps is not None else config.epochs * per_epoch

    with torch.random.fork_rng(devices=[]):  # seeded init, the caller's RNG left as it was
        torch.manual_seed(config.seed)
        branches = ExitBranches(num_layers, embed_dim, targets.num_classes, groups=targets.groups)
    branches = branches.to(dev)
    loss_module = BranchLoss(branches)
    optimizer = torch.optim.AdamW(  # one group per branch; "base_lr": its rate before the schedule
        [{"params": list(branch.parameters()), "base_lr": config.lr} for branch in branches],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    fingerprint = {
        **config.fingerprint(),
        "checkpoint": str(Path(checkpoint).resolve()),
        "data": train_set.fingerprint(),
        "world_size": world,
        "num_classes": targets.num_classes,
        **({"groups": targets.groups} if targets.groups > 1 else {}),
    }
    state_path = work_dir / STATE_FILE
    done = load_state(state_path, fingerprint, branches, optimizer)
    if done is not None:
        if is_main:
            log.info(
                "resuming from %s at step %d (epoch %d, batch %d)", state_path, done.step, done.epoch, done.position
            )
    elif config.balance_lr:  # the same batch on every rank: the first of the unsharded order
        wavs, _ = train_set.load_batch(batches[epoch_order(len(batches), config.seed, 0)[0]])
        if not wavs:
            raise ValueError(f"the first training batch could not be decoded ({train_set.problems.summary()})")
        features, _ = batch_features(backbone, targets, [w.to(dev) for w in wavs])
        for group, layer_lr in zip(optimizer.param_groups, balanced_layer_lrs(features, config.lr)):
            group["base_lr"] = layer_lr
        del features
    done = done or Progress()
    if is_main:
        log.info(
            "learning rate per branch: %s (%s schedule)",
            " ".join(f"{g['base_lr']:.3g}" for g in optimizer.param_groups),
            config.lr_schedule,
        )

    train_module: nn.Module = loss_module
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_module = DistributedDataParallel(loss_module, device_ids=[dev.index] if dev.type == "cuda" else None)

    def save() -> None:
        if is_main:
            save_state(state_path, fingerprint, done, branches, optimizer, config)

    monitor = TrainingMonitor(
        work_dir,
        num_layers,
        done.step,
        total_steps,
        tensorboard=is_main and tensorboard,
        progress=is_main and progress,
        log_every=config.log_every,
    )

    def evaluate() -> Optional[Dict[str, Any]]:
        if len(heldout_set) == 0:
            return None
        branches.eval()  # every rank evaluates its share of the batches
        metrics = evaluate_branches(
            backbone,
            targets,
            branches,
            heldout_set,
            config.batch_seconds,
            dev,
            rank,
            world,
            config.workers,
            config.prefetch,
        )
        branches.train()
        metrics["step"] = done.step
        done.history.append(metrics)
        if is_main:
            monitor.heldout(metrics, done.step)
        return metrics

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    if config.eval_every and done.step == 0 and total_steps > 0:
        evaluate()  # the untrained baseline
    audio_seconds, started, start_step = 0.0, time.perf_counter(), done.step
    branches.train()
    augment = NoiseAugment(config.noise_prob, config.noise_snr_db, seed=config.seed)
    sampler = EpochSampler(len(batches), config.seed, rank, world, done.epoch, done.position)
    loader = batch_loader(
        PaddedBatches(train_set, batches, config.seed, rank, augment),
        sampler,
        config.workers,
        config.prefetch,
        pin_memory=dev.type == "cuda",
    )
    feed = iter(loader)
    try:
        while done.step < total_steps:
            if config.stop_after is not None and done.step - start_step >= config.stop_after:
                break
            item = next(feed)  # the sampler moves on to the next epoch by itself
            done.epoch, done.position = item["epoch"], item["position"]
            wavs = unpad(item, train_set, dev)
            if not wavs and world == 1:
                done.position += 1
                continue  # every file of this batch failed to decode (counted); no step
            if wavs:
                features, labels = batch_features(backbone, targets, wavs)
            else:  # this rank has nothing, but must take part in the DDP step
                features = torch.zeros(num_layers, 0, embed_dim, device=dev)
                labels = torch.zeros(0, dtype=torch.long, device=dev)
            ce, hits = train_module(features, labels)
            decay = 1.0 - done.step / total_steps if config.lr_schedule == "linear" else 1.0
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * decay
            optimizer.zero_grad(set_to_none=True)
            ce.sum().backward()
            optimizer.step()
            done.step += 1
            done.position += 1  # only now: an interrupt before this point redoes the batch
            audio_seconds += sum(len(w) for w in wavs) / SAMPLE_RATE
            monitor.train(done.step, ce, hits, labels.numel(), audio_seconds / max(time.perf_counter() - started, 1e-9))
            if config.eval_every and done.step % config.eval_every == 0 and done.step < total_steps:
                evaluate()
            if config.save_every and done.step % config.save_every == 0:
                save()
    except KeyboardInterrupt:
        save()
        monitor.close_bar()
        if is_main:
            log.warning("interrupted at step %d; state saved in %s, run again to continue", done.step, state_path)
        raise
    finally:
        del feed  # stops the workers
    monitor.close_bar()
    wall = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    save()
    finished = done.step >= total_steps
    final_heldout = calibration = None
    written: Optional[Path] = None
    if finished:
        final_heldout = evaluate()
        calibration = _write_output(
            out,
            checkpoint,
            raw_state,
            backbone,
            branches,
            train_set,
            heldout_set,
            config,
            done.step,
            dev,
            half,
            provenance,
            targets.record(),
            rank,
            world,
            force,
        )
        written = out if is_main else None
    monitor.close()
    barrier(world)
    return Stage1Result(
        finished=finished,
        step=done.step,
        total_steps=total_steps,
        out=written,
        heldout=final_heldout,
        calibration=calibration,
        audio_seconds=audio_seconds,
        wall_seconds=wall,
        problems=corpus.problems.summary(),
        peak_memory_mb=peak,
        history=done.history,
        rank=rank,
    )
