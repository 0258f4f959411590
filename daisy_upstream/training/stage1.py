"""Stage 1: train one early-exit branch per layer on a frozen HuBERT's own cluster targets.

Targets (per frame ``t``) are the frozen model's cluster assignment at its last layer::

    y_t = argmax_{c real} cos(final_proj(h^L_t), label_embs_concat[c]) / logit_temp

over the *real* cluster rows of the first label set (fairseq's four special symbols
``<s> <pad> </s> <unk>``, the first four rows, are never targets), ``h^L = hidden_states[L]``
of a full early-exit forward. Branch ``k`` (1-based) is a linear classifier on
``hidden_states[k]``, trained with the mean cross-entropy over valid frames; the loss is the
sum over layers. The backbone runs once per batch under ``torch.no_grad``.

Resumable: ``<work_dir>/state.pt`` holds branches, optimizer, step, epoch, position in the
epoch's batch order and RNG states; the batch order of epoch ``e`` is a permutation seeded by
``(seed, e)``, so a run stopped at step N and resumed ends with exactly the same weights as an
uninterrupted one. Multi-process (``torchrun``): only the branches are wrapped in
``DistributedDataParallel``; each rank takes every ``world_size``-th batch of the epoch order.
"""
from __future__ import annotations

import logging
import os
import random
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.core.branches import ExitBranches, valid_frame_mask
from daisy_upstream.core.checkpoint import FAIRSEQ_SPECIALS, load_daisy_checkpoint, read_checkpoint
from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.training.checkpoint_write import half_precision, with_branches
from daisy_upstream.audio.noise import NoiseAugment
from daisy_upstream.core.early_exit import EarlyExitHubert
from daisy_upstream.core.policy import make_plan

__all__ = [
    "BranchLoss",
    "ClusterTargets",
    "Stage1Config",
    "Stage1Result",
    "balanced_layer_lrs",
    "evaluate_branches",
    "train_branches",
]

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
STATE_FORMAT = "daisy-stage1-state-v1"
LR_SCHEDULES = ("constant", "linear")
_NO_LABEL_EMBS = (
    "checkpoint has no label_embs_concat: cannot make stage-1 targets; it must be a pretraining "
    "checkpoint, not a fine-tuned one"
)


# -- targets ----------------------------------------------------------------------------------
class ClusterTargets(nn.Module):
    """The frozen HuBERT's cluster logits / assignment over its real cluster classes.

    Args:
        model: s3prl ``HubertModel`` with ``final_proj`` and ``label_embs_concat``.
        symbols: the first label set's symbols (``dictionaries_symbols[0]``); when it starts
            with fairseq's 4 specials those rows are left out.

    Raises:
        ValueError: the model has no ``label_embs_concat``.
    """

    def __init__(self, model: nn.Module, symbols: Optional[List[str]] = None) -> None:
        super().__init__()
        embs = getattr(model, "label_embs_concat", None)
        if embs is None or getattr(model, "final_proj", None) is None:
            raise ValueError(_NO_LABEL_EMBS)
        num_rows = int(model.num_classes[0])
        self.num_special = 4 if symbols is not None and list(symbols[:4]) == FAIRSEQ_SPECIALS else 0
        if num_rows - self.num_special < 2:
            raise ValueError(f"the first label set has {num_rows} rows: fewer than 2 real cluster classes")
        self.final_proj = model.final_proj
        self.untie = bool(getattr(model, "untie_final_proj", False))
        self.num_label_sets = len(model.num_classes)
        self.target_glu = getattr(model, "target_glu", None)
        self.logit_temp = float(model.logit_temp)
        self._model = [model]  # not a submodule: its parameters stay out of this module's

    @property
    def num_classes(self) -> int:
        """Real cluster classes ``C`` (specials excluded)."""
        return int(self._model[0].num_classes[0]) - self.num_special

    def label_embeddings(self) -> Tensor:
        """``(C, final_dim)`` embeddings of the real classes of the first label set."""
        model = self._model[0]
        embs = model.label_embs_concat[: int(model.num_classes[0])]
        if self.target_glu is not None:
            embs = self.target_glu(embs)
        return embs[self.num_special:]

    def logits(self, hidden: Tensor) -> Tensor:
        """``(..., D)`` last-layer states -> ``(..., C)`` cosine logits / ``logit_temp``."""
        proj = self.final_proj(hidden)
        if self.untie:
            proj = proj.chunk(self.num_label_sets, dim=-1)[0]
        proj = F.normalize(proj.float(), dim=-1, eps=1e-8)
        embs = F.normalize(self.label_embeddings().float(), dim=-1, eps=1e-8)
        return proj @ embs.t() / self.logit_temp

    def forward(self, hidden: Tensor) -> Tensor:
        """``(..., D)`` -> ``(...,)`` long target in ``0..C-1`` (class ``c`` = symbol row ``c + 4``)."""
        return self.logits(hidden).argmax(dim=-1)


# -- the loss ---------------------------------------------------------------------------------
class BranchLoss(nn.Module):
    """Per-layer cross-entropy and agreement of all branches (the module DDP wraps).

    Forward: ``features (L, N, D)`` valid frames of ``hidden_states[1..L]``, ``targets (N,)`` ->
    ``(ce (L,), correct (L,))``: mean cross-entropy per layer and the count of frames whose
    argmax equals the target. ``N = 0`` gives zero losses that still touch every parameter
    (so that all DDP ranks take part in the step).
    """

    def __init__(self, branches: ExitBranches) -> None:
        super().__init__()
        self.branches = branches

    def forward(self, features: Tensor, targets: Tensor) -> Tuple[Tensor, Tensor]:
        ces, correct = [], []
        for k, branch in enumerate(self.branches):
            logits = branch(features[k])
            if targets.numel() == 0:
                ces.append(logits.sum() * 0.0 + sum(p.sum() for p in branch.parameters()) * 0.0)
                correct.append(torch.zeros((), dtype=torch.long, device=logits.device))
                continue
            ces.append(F.cross_entropy(logits.float(), targets))
            correct.append((logits.argmax(dim=-1) == targets).sum())
        return torch.stack(ces), torch.stack(correct)


# -- configuration and result -----------------------------------------------------------------
@dataclass
class Stage1Config:
    """Training settings (paper defaults where the paper gives them).

    Attributes:
        lr: AdamW learning rate (paper 5e-5).
        weight_decay: AdamW weight decay.
        batch_seconds: audio per batch, summed over utterances (paper: 32 LibriSpeech
            utterances, about 400 s).
        max_steps: total optimizer steps; None: ``epochs`` passes over the training audio.
        epochs: used when ``max_steps`` is None.
        seed: branch initialisation, held-out split and batch order.
        heldout_fraction: share of the audio held out for evaluation and the calibration.
        log_every: steps between TensorBoard points (averages since the last one).
        eval_every: steps between held-out evaluations (0: only at the end).
        save_every: steps between state saves (0: only at the end / on interrupt).
        stop_after: stop this call after so many steps (state saved; run again to go on).
        rhos: rho values whose tau is reported with the calibration.
        prefetch: load the next batch's audio in a background thread while this one trains
            (the order and content of batches do not change).
        noise_prob: share of training utterances mixed with sox noise (white, pink, brown) at
            an SNR drawn from ``noise_snr_db``; the targets come from the noisy audio itself,
            so the branches learn how sure they may be on noisy speech (0: off; the held-out
            evaluation and calibration stay clean).
        noise_snr_db: ``(low, high)`` SNR range in dB.
        balance_lr: give branch ``k`` the learning rate ``lr * max_j n_j / n_k``, where
            ``n_k`` is the mean L2 norm of ``hidden_states[k]`` frames on the first training
            batch. With Adam a step moves a linear branch's logits in proportion to its
            input's norm, so without this a layer whose features are small learns slowly:
            in a pre-LayerNorm model (``layer_norm_first``) the last hidden state is the
            final LayerNorm's output, several times smaller than the residual stream it
            follows, and its branch stays under-confident. For post-LayerNorm models
            (HuBERT Base) the norms are alike and this changes little.
        lr_schedule: ``"constant"`` (the paper's), or ``"linear"``: each branch's rate falls
            linearly from its start value to zero at the last step, so that the branches
            settle instead of ending on the last batches' noise.
    """

    lr: float = 5e-5
    weight_decay: float = 0.01
    batch_seconds: float = 400.0
    max_steps: Optional[int] = None
    epochs: int = 1
    seed: int = 0
    heldout_fraction: float = 0.01
    log_every: int = 10
    eval_every: int = 1000
    save_every: int = 1000
    stop_after: Optional[int] = None
    rhos: Tuple[float, ...] = (0.7, 0.76, 1.0)
    prefetch: bool = True
    noise_prob: float = 0.0
    noise_snr_db: Tuple[float, float] = (0.0, 20.0)
    balance_lr: bool = True
    lr_schedule: str = "constant"

    def validate(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown --lr-schedule {self.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if not self.batch_seconds > 0:
            raise ValueError(f"--batch-seconds must be > 0, got {self.batch_seconds}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"--max-steps must be >= 1, got {self.max_steps}")
        if self.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {self.epochs}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"--heldout-fraction must be in [0, 1), got {self.heldout_fraction}")
        for name in ("log_every", "eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
        if not 0.0 <= self.noise_prob <= 1.0:
            raise ValueError(f"--noise-prob must be in [0, 1], got {self.noise_prob}")
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError(f"--stop-after must be >= 1, got {self.stop_after}")

    def as_dict(self) -> Dict[str, Any]:
        """The settings as plain Python values (tuples as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def fingerprint(self) -> Dict[str, Any]:
        """Settings a resumed run must share with the run that saved the state."""
        return {
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "batch_seconds": self.batch_seconds,
            "seed": self.seed,
            "heldout_fraction": self.heldout_fraction,
            "noise_prob": self.noise_prob,
            "noise_snr_db": list(self.noise_snr_db),
            "balance_lr": self.balance_lr,
            "lr_schedule": self.lr_schedule,
        }


@dataclass
class Stage1Result:
    """What :func:`train_branches` did.

    Attributes:
        finished: the last step was reached and ``out`` was written.
        step / total_steps: where training stands.
        heldout: per-layer held-out ``{"ce": [L], "accuracy": [L], "frames": int}`` (final).
        calibration: the calibration stored in the output (None if not finished).
        audio_seconds / wall_seconds: training audio processed and time spent in this call.
        problems: the skip / resample summary line(s).
    """

    finished: bool
    step: int
    total_steps: int
    out: Optional[Path]
    heldout: Optional[Dict[str, Any]]
    calibration: Optional[Dict[str, Any]]
    audio_seconds: float
    wall_seconds: float
    problems: str
    peak_memory_mb: Optional[float] = None
    history: List[Dict[str, Any]] = field(default_factory=list)
    rank: int = 0

    @property
    def throughput(self) -> float:
        """Training audio seconds per wall-clock second in this call."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("nan")


# -- helpers ----------------------------------------------------------------------------------
def _distributed(device: str) -> Tuple[int, int, int]:
    """``(rank, world_size, local_rank)``; initialises the process group when WORLD_SIZE > 1.

    The backend is NCCL for a CUDA ``device`` and gloo otherwise (``DAISY_DDP_BACKEND``
    overrides it).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = os.environ.get("DAISY_DDP_BACKEND") or ("nccl" if device.startswith("cuda") else "gloo")
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), local_rank


def _resolve_device(device: str, world: int, local_rank: int) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine")
        if world > 1:
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
    return dev


def epoch_order(num_batches: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> List[int]:
    """This rank's batch indices for ``epoch``: a seeded permutation, every ``world``-th entry.

    All ranks get the same number of batches (the tail that does not divide is dropped).
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_batches, generator=generator).tolist()
    per_rank = len(order) // world
    return order[rank::world][:per_rank]


def _load_model(checkpoint: Union[str, Path], teacher: Optional[Union[str, Path]]):
    """The frozen model with ``final_proj``/``label_embs_concat``, and the raw state to extend."""
    state = read_checkpoint(checkpoint)
    weights = state["model_weight"]
    has_proj = "final_proj.weight" in weights
    teacher_weights: Dict[str, Tensor] = {}
    if teacher is not None:
        teacher_state = read_checkpoint(teacher)
        tw = teacher_state["model_weight"]
        needed = ["final_proj.weight", "final_proj.bias", "label_embs_concat"]
        missing = [k for k in needed if k not in tw]
        if "label_embs_concat" in missing:
            raise ValueError(f"teacher {teacher}: {_NO_LABEL_EMBS}")
        if missing:
            raise ValueError(f"teacher {teacher} has no {missing}")
        probe = next((k for k in weights if k.startswith("encoder.layers.") and k in tw), None)
        if probe is None or weights[probe].shape != tw[probe].shape or not torch.equal(
            weights[probe].float(), tw[probe].float()
        ):
            raise ValueError(
                f"teacher {teacher} is not the same backbone as {checkpoint} "
                f"(encoder weights differ at {probe!r}); pass the HuBERT the heads were trained on"
            )
        teacher_weights = {k: tw[k] for k in needed}
    elif "label_embs_concat" not in weights:
        raise ValueError(_NO_LABEL_EMBS)
    elif not has_proj:
        raise ValueError(
            f"{checkpoint} has per-layer heads (the authors' layout) instead of HuBERT's final_proj, "
            "so the last layer's cluster assignment cannot be computed from it; pass --teacher "
            "with the converted HuBERT checkpoint the heads were trained on"
        )
    loaded = load_daisy_checkpoint(checkpoint)
    model = loaded.model
    if teacher_weights:
        with torch.no_grad():
            for key, value in teacher_weights.items():
                target = model.get_parameter(key)
                if target.shape != value.shape:
                    raise ValueError(f"teacher {key} has shape {tuple(value.shape)}, the model {tuple(target.shape)}")
                target.copy_(value.float())
        state = dict(state)
        state["model_weight"] = {**weights, **teacher_weights}
    if getattr(model, "label_embs_concat", None) is None:
        raise ValueError(_NO_LABEL_EMBS)
    for p in model.parameters():
        p.requires_grad_(False)
    return loaded, state


def _batch_features(
    backbone: EarlyExitHubert, targets: ClusterTargets, wavs: List[Tensor]
) -> Tuple[Tensor, Tensor]:
    """Valid frames of ``hidden_states[1..L]`` ``(L, N, D)`` and their targets ``(N,)``."""
    num_layers = backbone.num_layers
    with torch.no_grad():
        out = backbone(wavs, make_plan([num_layers], None))
        mask = valid_frame_mask(out.lengths, out.hidden_states[0].size(1))
        features = torch.stack([out.hidden_states[k][mask] for k in range(1, num_layers + 1)])
        labels = targets(features[-1])
    return features, labels


def balanced_layer_lrs(features: Tensor, lr: float) -> List[float]:
    """Per-branch learning rates ``lr * max_j n_j / n_k`` (see ``Stage1Config.balance_lr``).

    ``features``: ``(L, N, D)`` valid frames of ``hidden_states[1..L]``; ``n_k`` is the mean
    L2 norm of layer ``k``'s frames. The layer with the largest features keeps ``lr``.
    """
    if features.dim() != 3 or features.size(1) == 0:
        raise ValueError(f"need features (L, N>0, D) to balance learning rates, got {tuple(features.shape)}")
    norms = features.float().norm(dim=-1).mean(dim=1)
    if not bool((norms > 0).all()):
        raise ValueError(f"a layer's features are all zero (mean norms {norms.tolist()}); cannot balance learning rates")
    return [lr * float(v) for v in norms.max() / norms]


@torch.no_grad()
def evaluate_branches(
    backbone: EarlyExitHubert,
    targets: ClusterTargets,
    branches: ExitBranches,
    corpus: AudioCorpus,
    batch_seconds: float,
    device: torch.device,
) -> Dict[str, Any]:
    """Per-layer frame-weighted mean CE and agreement with the targets on ``corpus``.

    Returns:
        ``{"ce": [L floats], "accuracy": [L floats], "frames": int, "utterances": int}``.
    """
    loss = BranchLoss(branches)
    num_layers = branches.num_layers
    ce_sum = torch.zeros(num_layers, dtype=torch.float64)
    correct = torch.zeros(num_layers, dtype=torch.float64)
    frames = utterances = 0
    for wavs, _ in corpus.iter_batches(batch_seconds):
        features, labels = _batch_features(backbone, targets, [w.to(device) for w in wavs])
        if labels.numel() == 0:
            continue
        ce, hits = loss(features, labels)
        ce_sum += ce.double().cpu() * labels.numel()
        correct += hits.double().cpu()
        frames += labels.numel()
        utterances += len(wavs)
    if frames == 0:
        raise ValueError(f"no frame could be evaluated in {corpus.name} ({corpus.problems.summary()})")
    return {
        "ce": [float(v) for v in ce_sum / frames],
        "accuracy": [float(v) for v in correct / frames],
        "frames": frames,
        "utterances": utterances,
    }


def _rng_state() -> Dict[str, Any]:
    state: Dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


def _format_losses(values: List[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


# -- training ---------------------------------------------------------------------------------
def train_branches(
    checkpoint: Union[str, Path],
    corpus: AudioCorpus,
    out: Union[str, Path],
    work_dir: Union[str, Path],
    config: Optional[Stage1Config] = None,
    *,
    device: str = "cpu",
    teacher: Optional[Union[str, Path]] = None,
    progress: bool = True,
    tensorboard: bool = True,
    heldout: Optional[AudioCorpus] = None,
    half: bool = False,
    provenance: Optional[Dict[str, Any]] = None,
) -> Stage1Result:
    """Train the ``L`` exit branches of ``checkpoint`` on ``corpus`` and write a DAISY checkpoint.

    Args:
        checkpoint: an s3prl converted HuBERT (plain), a DAISY checkpoint (its branches are
            re-trained from a fresh initialisation) or the authors' layout (needs ``teacher``:
            their heads replace ``final_proj``).
        corpus: unlabeled audio; the held-out part (``config.heldout_fraction``) is used for
            evaluation and the calibration stored in ``out``.
        out: the DAISY checkpoint to write when the last step is reached.
        work_dir: resumable state (``state.pt``) and TensorBoard logs (``tb/``). If a state
            is there, training continues from it.
        teacher: a checkpoint of the same backbone that provides ``final_proj`` and
            ``label_embs_concat`` (for the authors' layout).
        heldout: audio for evaluation and the calibration instead of a share of ``corpus``
            (then all of ``corpus`` trains and ``config.heldout_fraction`` must be 0).
        half: store ``out``'s floating tensors in fp16 (loading restores fp32).
        provenance: stored as ``daisy.provenance`` in ``out`` (with the backbone's own).

    Raises:
        ValueError: no ``label_embs_concat``; a state in ``work_dir`` from different settings
            or data; bad settings.
    """
    config = config or Stage1Config()
    config.validate()
    out, work_dir = Path(out), Path(work_dir)
    rank, world, local_rank = _distributed(device)
    dev = _resolve_device(device, world, local_rank)
    is_main = rank == 0

    loaded, raw_state = _load_model(checkpoint, teacher)
    model = loaded.model.to(dev).eval()
    backbone = EarlyExitHubert(model, None, normalize_waveform=bool(loaded.task_cfg.normalize)).eval()
    targets = ClusterTargets(model, raw_state["dictionaries_symbols"][0])
    num_layers, embed_dim = backbone.num_layers, backbone.embed_dim

    if heldout is None:
        train_set, heldout_set = corpus.split(config.heldout_fraction, config.seed)
    elif config.heldout_fraction:
        raise ValueError("give either held-out audio or a held-out fraction (set it to 0), not both")
    else:
        train_set, heldout_set = corpus, heldout
    batches = train_set.batches(config.batch_seconds)
    if len(batches) < world:
        raise ValueError(f"{len(batches)} training batch(es) for {world} processes: use less --batch-seconds")
    per_epoch = len(epoch_order(len(batches), config.seed, 0, rank, world))
    total_steps = config.max_steps if config.max_steps is not None else config.epochs * per_epoch

    with torch.random.fork_rng(devices=[]):  # seeded init, the caller's RNG left as it was
        torch.manual_seed(config.seed)
        branches = ExitBranches(num_layers, embed_dim, targets.num_classes)
    branches = branches.to(dev)
    loss_module = BranchLoss(branches)
    optimizer = torch.optim.AdamW(  # one group per branch; "base_lr": its rate before the schedule
        [{"params": list(branch.parameters()), "base_lr": config.lr} for branch in branches],
        lr=config.lr, weight_decay=config.weight_decay,
    )
    fingerprint = {
        **config.fingerprint(),
        "checkpoint": str(Path(checkpoint).resolve()),
        "data": train_set.fingerprint(),
        "world_size": world,
        "num_classes": targets.num_classes,
    }
    step = epoch = position = 0
    history: List[Dict[str, Any]] = []
    state_path = work_dir / STATE_FILE
    if state_path.is_file():
        saved = torch.load(state_path, map_location="cpu", weights_only=True)
        if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
            raise ValueError(f"{state_path} is not a train-branches state; use another --work-dir")
        differ = sorted(k for k in fingerprint if saved["fingerprint"].get(k) != fingerprint[k])
        if differ:
            detail = ", ".join(f"{k}: saved {saved['fingerprint'].get(k)!r} now {fingerprint[k]!r}" for k in differ)
            raise ValueError(
                f"{state_path} was saved by a run with other settings or data ({detail}); "
                "use another --work-dir, or the same settings to resume"
            )
        branches.load_state_dict(saved["branches"])
        optimizer.load_state_dict(saved["optimizer"])
        step, epoch, position = int(saved["step"]), int(saved["epoch"]), int(saved["position"])
        history = list(saved.get("history", []))
        _set_rng_state(saved["rng"])
        if is_main:
            log.info("resuming from %s at step %d (epoch %d, batch %d)", state_path, step, epoch, position)
    elif config.balance_lr:  # the same batch on every rank: the first of the unsharded order
        wavs, _ = train_set.load_batch(batches[epoch_order(len(batches), config.seed, 0)[0]])
        if not wavs:
            raise ValueError(f"the first training batch could not be decoded ({train_set.problems.summary()})")
        features, _ = _batch_features(backbone, targets, [w.to(dev) for w in wavs])
        for group, layer_lr in zip(optimizer.param_groups, balanced_layer_lrs(features, config.lr)):
            group["base_lr"] = layer_lr
        del features
    if is_main:
        log.info("learning rate per branch: %s (%s schedule)",
                 " ".join(f"{g['base_lr']:.3g}" for g in optimizer.param_groups), config.lr_schedule)

    train_module: nn.Module = loss_module
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_module = DistributedDataParallel(loss_module, device_ids=[dev.index] if dev.type == "cuda" else None)

    def save_state() -> None:
        if not is_main:
            return
        atomic_torch_save(
            {
                "format": STATE_FORMAT,
                "fingerprint": fingerprint,
                "step": step,
                "epoch": epoch,
                "position": position,
                "branches": {k: v.detach().cpu() for k, v in branches.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "rng": _rng_state(),
                "history": history,
                "config": config.as_dict(),
            },
            state_path,
        )

    writer = None
    if is_main and tensorboard:
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(str(work_dir / "tb"), purge_step=step if step > 0 else None)

    def evaluate() -> Optional[Dict[str, Any]]:
        if not is_main or len(heldout_set) == 0:
            return None
        branches.eval()
        metrics = evaluate_branches(backbone, targets, branches, heldout_set, config.batch_seconds, dev)
        branches.train()
        metrics["step"] = step
        history.append(metrics)
        if writer is not None:
            for k in range(num_layers):
                writer.add_scalar(f"heldout_ce/layer_{k + 1:02d}", metrics["ce"][k], step)
                writer.add_scalar(f"heldout_agreement/layer_{k + 1:02d}", metrics["accuracy"][k], step)
        log.info("step %d held-out CE per layer: %s", step, _format_losses(metrics["ce"]))
        return metrics

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    bar = None
    if progress and is_main:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=step, desc="train-branches", unit="step", dynamic_ncols=True)
    if config.eval_every and step == 0 and total_steps > 0:
        evaluate()  # the untrained baseline
    audio_seconds, started = 0.0, time.perf_counter()
    start_step = step
    acc_ce = torch.zeros(num_layers, dtype=torch.float64)
    acc_hits = torch.zeros(num_layers, dtype=torch.float64)
    acc_frames = acc_steps = 0
    branches.train()
    augment = NoiseAugment(config.noise_prob, config.noise_snr_db, seed=config.seed)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="daisy-audio") if config.prefetch else None
    pending: Dict[Tuple[int, int], Future] = {}
    try:
        while step < total_steps:
            if config.stop_after is not None and step - start_step >= config.stop_after:
                break
            order = epoch_order(len(batches), config.seed, epoch, rank, world)
            if position >= len(order):
                epoch, position = epoch + 1, 0
                continue
            indices = batches[order[position]]
            future = pending.pop((epoch, position), None)
            pending.clear()
            wavs, _ = future.result() if future is not None else train_set.load_batch(indices)
            if pool is not None:  # the next batch of this call, possibly in the next epoch
                nxt_epoch, nxt_pos = (epoch, position + 1) if position + 1 < len(order) else (epoch + 1, 0)
                nxt_order = order if nxt_epoch == epoch else epoch_order(len(batches), config.seed, nxt_epoch, rank, world)
                pending[(nxt_epoch, nxt_pos)] = pool.submit(train_set.load_batch, batches[nxt_order[nxt_pos]])
            if not wavs and world == 1:
                position += 1
                continue  # every file of this batch failed to decode (counted); no step
            if wavs and augment.prob:
                noise_rng = np.random.default_rng([config.seed, epoch, position, rank])
                wavs = [torch.from_numpy(augment(w.numpy(), noise_rng)) for w in wavs]
            if wavs:
                features, labels = _batch_features(backbone, targets, [w.to(dev) for w in wavs])
            else:
                features = torch.zeros(num_layers, 0, embed_dim, device=dev)
                labels = torch.zeros(0, dtype=torch.long, device=dev)
            ce, hits = train_module(features, labels)
            decay = 1.0 - step / total_steps if config.lr_schedule == "linear" else 1.0
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * decay
            optimizer.zero_grad(set_to_none=True)
            ce.sum().backward()
            optimizer.step()
            step += 1
            position += 1  # only now: an interrupt before this point redoes the batch
            audio_seconds += sum(len(w) for w in wavs) / 16000
            n = labels.numel()
            acc_ce += ce.detach().double().cpu() * n
            acc_hits += hits.detach().double().cpu()
            acc_frames += n
            acc_steps += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"ce/layer {_format_losses(ce.detach().cpu().tolist())}")
            if writer is not None and config.log_every and step % config.log_every == 0 and acc_frames:
                for k in range(num_layers):
                    writer.add_scalar(f"train_ce/layer_{k + 1:02d}", float(acc_ce[k] / acc_frames), step)
                    writer.add_scalar(f"train_agreement/layer_{k + 1:02d}", float(acc_hits[k] / acc_frames), step)
                wall = time.perf_counter() - started
                writer.add_scalar("speed/audio_seconds_per_second", audio_seconds / max(wall, 1e-9), step)
                acc_ce.zero_()
                acc_hits.zero_()
                acc_frames = acc_steps = 0
            if config.eval_every and step % config.eval_every == 0 and step < total_steps:
                evaluate()
            if config.save_every and step % config.save_every == 0:
                save_state()
    except KeyboardInterrupt:
        save_state()
        if bar is not None:
            bar.close()
        if is_main:
            log.warning("interrupted at step %d; state saved in %s, run again to continue", step, state_path)
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    save_state()
    finished = step >= total_steps
    heldout = calibration = None
    written: Optional[Path] = None
    if finished and is_main:
        heldout = evaluate()
        from daisy_upstream.training.calibration import CalibrationResult, layer_entropies

        calib_set = heldout_set if len(heldout_set) else train_set
        if not len(heldout_set):
            log.warning("no held-out audio (--heldout-fraction 0): the calibration uses the training audio")
        branches.eval()
        entropies, keys, seconds = layer_entropies(backbone, branches, calib_set, config.batch_seconds, dev)
        result = CalibrationResult(entropies, keys, calib_set.name, seconds, tuple(config.rhos), str(checkpoint))
        calibration = {
            "layer_entropy": result.layer_entropy,
            "dataset": result.dataset,
            "num_utterances": len(keys),
            "audio_seconds": round(seconds, 3),
            "layer_std": result.layer_std,
            "linear_fit_r2": result.fit[2],
            "stage1_steps": step,
        }
        branches_cpu = ExitBranches(num_layers, embed_dim, targets.num_classes)
        branches_cpu.load_state_dict({k: v.detach().cpu() for k, v in branches.state_dict().items()})
        made = {"stage1": {"steps": step, "config": config.as_dict(),
                           "train_audio": train_set.name, "heldout_audio": heldout_set.name},
                **(provenance or {})}
        written_state = with_branches(raw_state, branches_cpu, calibration, made)
        atomic_torch_save(half_precision(written_state) if half else written_state, out)
        written = out
    if writer is not None:
        writer.close()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return Stage1Result(
        finished=finished,
        step=step,
        total_steps=total_steps,
        out=written,
        heldout=heldout,
        calibration=calibration,
        audio_seconds=audio_seconds,
        wall_seconds=wall,
        problems=corpus.problems.summary(),
        peak_memory_mb=peak,
        history=history,
        rank=rank,
    )
