"""Stage-1 settings (:class:`Stage1Config`) and outcome (:class:`Stage1Result`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["LR_SCHEDULES", "TARGET_KINDS", "Stage1Config", "Stage1Result"]

LR_SCHEDULES = ("constant", "linear")
#: ``--targets``: the model's own pretraining head, k-means on one of its layers, or (wav2vec 2.0)
#: the quantizer's code of the input
TARGET_KINDS = ("model", "kmeans", "quantizer")


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
        workers: DataLoader worker processes that decode, noise and pad the training
            batches, and decode the k-means pass's, the held-out evaluation's and the
            calibration's (0: in the training process, one batch at a time). The order and
            content of batches do not depend on it.
        prefetch: batches each worker loads ahead (with ``workers > 0``).
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
        targets: ``"model"`` (the pretraining head: HuBERT's cluster assignment, wav2vec
            2.0's quantizer codes) or ``"kmeans"`` (k-means on ``hidden_states[kmeans_layer]``
            of the frozen model over the training audio, ``clusters`` centroids); None: the
            model's head, refused for a model without one.
        kmeans_layer / clusters: the layer ``K`` (1..L) and the number of centroids.
        kmeans_batch_frames: frames per ``MiniBatchKMeans.partial_fit`` call.
        kmeans_max_frames: stop feeding k-means after so many frames (None: all of them).
        kmeans_passes: passes of the training audio through k-means (1 is plenty for
            hundreds of hours; small corpora need several for enough mini-batch updates).
        precision: the frozen model's forward: ``"fp32"`` (TF32 matmuls allowed on CUDA),
            ``"bf16"`` or ``"fp16"`` autocast; branches, targets and entropies stay float32
            (:mod:`daisy_upstream.core.precision`). The frames k-means clusters come from that
            forward too (the fit itself runs in float32).
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
    workers: int = 0
    prefetch: int = 2
    noise_prob: float = 0.0
    noise_snr_db: Tuple[float, float] = (0.0, 20.0)
    balance_lr: bool = True
    lr_schedule: str = "constant"
    targets: Optional[str] = None
    kmeans_layer: Optional[int] = None
    clusters: Optional[int] = None
    kmeans_batch_frames: int = 10000
    kmeans_max_frames: Optional[int] = None
    kmeans_passes: int = 1
    precision: str = "fp32"

    def validate(self) -> None:
        if self.targets is not None and self.targets not in TARGET_KINDS:
            raise ValueError(f"unknown targets {self.targets!r}; choose one of {', '.join(TARGET_KINDS)}")
        if self.targets == "kmeans":
            if self.kmeans_layer is None or self.clusters is None:
                raise ValueError("targets 'kmeans' needs kmeans_layer (the layer K) and clusters (N)")
            if self.clusters < 2:
                raise ValueError(f"clusters must be >= 2, got {self.clusters}")
            if self.kmeans_batch_frames < self.clusters:
                raise ValueError(
                    f"kmeans_batch_frames ({self.kmeans_batch_frames}) must be >= clusters "
                    f"({self.clusters}): the first batch seeds the centroids"
                )
            if self.kmeans_passes < 1:
                raise ValueError(f"kmeans_passes must be >= 1, got {self.kmeans_passes}")
            if self.kmeans_max_frames is not None and self.kmeans_max_frames < self.clusters:
                raise ValueError(f"kmeans_max_frames must be >= clusters ({self.clusters})")
        elif self.kmeans_layer is not None or self.clusters is not None:
            raise ValueError("kmeans_layer and clusters go with targets 'kmeans'")
        from daisy_upstream.core.precision import check_precision

        check_precision(self.precision)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.batch_seconds > 0:
            raise ValueError(f"batch_seconds must be > 0, got {self.batch_seconds}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        for name in ("log_every", "eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.noise_prob <= 1.0:
            raise ValueError(f"noise_prob must be in [0, 1], got {self.noise_prob}")
        if self.workers < 0 or self.prefetch < 1:
            raise ValueError(f"workers must be >= 0 and prefetch >= 1, got {self.workers} and {self.prefetch}")
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError(f"stop_after must be >= 1, got {self.stop_after}")

    def as_dict(self) -> Dict[str, Any]:
        """The settings as plain Python values (tuples as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def fingerprint(self) -> Dict[str, Any]:
        """Settings a resumed run must share with the run that saved the state."""
        provenance = {}
        if self.targets == "kmeans":  # (absent for the model's head: older states resume)
            provenance = {
                "targets": self.targets,
                "kmeans_layer": self.kmeans_layer,
                "clusters": self.clusters,
                "kmeans_batch_frames": self.kmeans_batch_frames,
                "kmeans_max_frames": self.kmeans_max_frames,
                "kmeans_passes": self.kmeans_passes,
            }
        if self.precision != "fp32":  # (absent for fp32: older states resume)
            provenance["precision"] = self.precision
        return {
            **provenance,
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
