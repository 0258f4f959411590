"""The tiny-HuBERT pretraining loop: two HuBERT iterations, resumable at any step.

Phases: ``iter1`` (targets: k-means of MFCCs) -> ``iter2`` (targets: k-means of the
iteration-1 model's layer ``target_layer`` output) -> ``done``. Iteration 2 continues from the
iteration-1 weights with a new label embedding (HuBERT retrains from scratch; continuing is
cheaper on 2 CPU cores and is recorded in the state's meta).

Determinism: every random choice of training step ``s`` of iteration ``i`` (crop positions,
masks, dropout) is seeded from ``(seed, i, s)``, so a resumed run draws exactly what an
uninterrupted run would; the LR is a pure function of the step. With ``exact_state`` the
optimizer moments are saved in fp32 and resuming reproduces the uninterrupted weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import signal
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from daisy_upstream.audio.noise import NoiseAugment
from daisy_upstream.training.kmeans import DEFAULT_BATCH_FRAMES, assign, fit_kmeans

from .checkpoint import save_converted
from .data import AudioStream, crop_samples, list_split_files, load_stream
from .features import layer_features, mfcc_frames, stream_features
from .model import TINY_MODEL_CFG, TINY_TASK_CFG, build_model
from .state import compact_optimizer, expand_optimizer, load_state, save_state

__all__ = ["PretrainConfig", "pretrain", "masked_prediction_step"]

log = logging.getLogger("daisy.pretrain")


@dataclasses.dataclass
class PretrainConfig:
    """Settings of a pretraining run (saved in the state; the saved ones win on resume,
    except the step counts and the noise settings, which may be changed to extend a run)."""

    steps_iter1: int = 4000
    steps_iter2: int = 6000
    clusters_iter1: int = 50
    clusters_iter2: int = 100
    target_layer: int = 3
    batch_size: int = 8
    crop_frames: int = 200  # 4 s at 50 Hz
    lr: float = 5e-4
    warmup_iter1: int = 500
    warmup_iter2: int = 200
    weight_decay: float = 0.01
    features_pen_weight: float = 10.0
    grad_clip: float = 10.0
    kmeans_frames: int = 100000
    #: passes of the streamed k-means (scikit-learn's MiniBatchKMeans, batches of 10000 frames
    #: fed with partial_fit, as stage 1's --targets kmeans) over the kmeans_frames sample
    kmeans_passes: int = 20
    #: k-means on per-dimension standardised features. Off, as HuBERT clusters the raw features:
    #: standardised MFCC deltas give labels that change between adjacent frames about twice as
    #: often, which masked prediction learns far more slowly.
    standardize_features: bool = False
    #: denoising masked prediction: this share of training crops gets sox noise (white, pink,
    #: brown) at an SNR drawn from noise_snr_db, the targets stay those of the clean audio, so
    #: deep layers learn to see through noise (None: 0 for a new run, unchanged on resume)
    noise_prob: Optional[float] = None
    noise_snr_db: List[float] = dataclasses.field(default_factory=lambda: [0.0, 20.0])
    eval_every: int = 100
    eval_crops: int = 32
    seed: int = 0
    exact_state: bool = False
    model_cfg: Dict[str, Any] = dataclasses.field(default_factory=lambda: dict(TINY_MODEL_CFG))
    task_cfg: Dict[str, Any] = dataclasses.field(default_factory=lambda: dict(TINY_TASK_CFG))


def _seed_of(*parts: Any) -> int:
    h = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(h[:4], "little")


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


def _normalize_batch(x: torch.Tensor, normalize: bool) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:]) if normalize else x


def masked_prediction_step(
    model, wavs: torch.Tensor, labels: torch.Tensor, features_pen_weight: float
) -> Dict[str, torch.Tensor]:
    """HuBERT's masked-prediction loss on one batch (the model masks internally).

    Args:
        model: s3prl ``HubertModel``.
        wavs: ``(B, 320*F + 80)`` float waveforms.
        labels: ``(B, F)`` dictionary indices (cluster + 4).
        features_pen_weight: weight of the CNN feature penalty (HuBERT: 10).

    Returns:
        dict with ``loss`` (for backward), ``ce``, ``acc`` (masked accuracy) and ``n``.
    """
    pm = torch.zeros_like(wavs, dtype=torch.bool)
    out = model(wavs, target_list=[labels], padding_mask=pm, mask=True, features_only=False)
    logits = out["logit_m_list"][0].float()
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    ce = F.cross_entropy(logits, target)
    loss = ce + features_pen_weight * out["features_pen"]
    acc = (logits.argmax(-1) == 0).float().mean()
    return {"loss": loss, "ce": ce.detach(), "acc": acc.detach(), "n": logits.shape[0]}


class _Stop:
    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum, frame) -> None:  # noqa: ARG002
        self.requested = True


def _make_labels(
    features_train: np.ndarray,
    features_valid: np.ndarray,
    k: int,
    seed: int,
    kmeans_frames: int,
    standardize: bool,
    passes: int,
) -> Dict[str, torch.Tensor]:
    dim = features_train.shape[1]
    if standardize:
        mu, sd = features_train.mean(0), features_train.std(0) + 1e-5
    else:
        mu, sd = np.zeros(dim, np.float32), np.ones(dim, np.float32)
    ztr = (features_train - mu) / sd
    rng = np.random.default_rng(seed)
    n = min(kmeans_frames, len(ztr))
    sub = ztr[rng.choice(len(ztr), n, replace=False)]  # random order: every batch spans the corpus
    batch = max(min(DEFAULT_BATCH_FRAMES, n), k)
    batches = [sub[i : i + batch] for _ in range(passes) for i in range(0, n, batch)]
    cent = torch.from_numpy(fit_kmeans(batches, k, seed, batch).centroids)
    ltr = assign(torch.from_numpy(ztr), cent).numpy()
    lva = assign(torch.from_numpy((features_valid - mu) / sd), cent).numpy()
    return {
        "centroids": cent,
        "feat_mean": torch.from_numpy(mu),
        "feat_std": torch.from_numpy(sd),
        "labels_train": torch.from_numpy(ltr.astype(np.uint8 if k <= 256 else np.int16)),
        "labels_valid": torch.from_numpy(lva.astype(np.uint8 if k <= 256 else np.int16)),
    }


def _majority(labels: torch.Tensor) -> float:
    c = torch.bincount(labels.long())
    return float(c.max()) / float(c.sum())


def _new_optimizer(model, cfg: PretrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=cfg.weight_decay)


def _evaluate(
    model, stream: AudioStream, labels: torch.Tensor, cfg: PretrainConfig, device: torch.device
) -> Dict[str, float]:
    rng = np.random.default_rng(_seed_of(cfg.seed, "eval-crops"))
    starts = rng.integers(0, stream.num_frames - cfg.crop_frames, size=cfg.eval_crops)
    model.eval()
    tot_ce = tot_acc = tot_n = 0.0
    with torch.no_grad():
        for i in range(0, len(starts), cfg.batch_size):
            st = starts[i : i + cfg.batch_size]
            np.random.seed(_seed_of(cfg.seed, "eval-mask", i))
            wav = torch.from_numpy(crop_samples(stream, st, cfg.crop_frames)).to(device)
            wav = _normalize_batch(wav, cfg.task_cfg["normalize"])
            lab = torch.stack([labels[s : s + cfg.crop_frames].long() + 4 for s in st]).to(device)
            r = masked_prediction_step(model, wav, lab, 0.0)
            tot_ce += float(r["ce"]) * r["n"]
            tot_acc += float(r["acc"]) * r["n"]
            tot_n += r["n"]
    model.train()
    return {"valid_loss": tot_ce / tot_n, "valid_acc": tot_acc / tot_n}


def pretrain(
    corpus: Path,
    state_dir: Path,
    out: Path,
    cfg: Optional[PretrainConfig] = None,
    device: str = "cpu",
    threads: int = 0,
    ckpt_minutes: float = 5.0,
    max_steps: Optional[int] = None,
    on_log: Optional[Callable[[Dict[str, Any]], None]] = None,
    command: Optional[str] = None,
) -> Dict[str, Any]:
    """Run (or resume) tiny-HuBERT pretraining until both iterations are done.

    Args:
        corpus: corpus folder (see :func:`data.list_split_files`).
        state_dir: where the resumable state (``state.pt``, ``log.json``) lives.
        out: path of the s3prl converted checkpoint written at every checkpoint (the final
            one, after iteration 2, encodes clusters of the model's own features).
        cfg: settings for a new run; ignored (except step counts) when a state exists.
        device: torch device string.
        threads: torch CPU threads (0: leave torch's default).
        ckpt_minutes: save the state at least this often.
        max_steps: stop (after saving) once this many steps ran in this call (for tests).
        on_log: called with every log entry.
        command: the command line, stored in the checkpoint's ``provenance``.

    Returns:
        The final state's ``meta`` dict (phase, step, majority shares, settings).
    """
    if threads:
        torch.set_num_threads(threads)
    state_dir, out = Path(state_dir), Path(out)
    stream_tr, stream_va = _load_streams(corpus)
    fingerprint = [stream_tr.fingerprint(), stream_va.fingerprint()]
    state = load_state(state_dir)
    if state is None:
        cfg = cfg or PretrainConfig()
        state = _new_state(cfg, stream_tr, stream_va, corpus, fingerprint)
        save_state(state, state_dir)
    else:
        cfg = _resumed_config(state, cfg, state_dir)
        if state["meta"]["fingerprint"] != fingerprint:
            raise ValueError(
                f"the corpus at {corpus} differs from the one this state in "
                f"{state_dir} was trained on; use the same corpus (same "
                "make-corpus arguments) or a new --state-dir"
            )
        log.info("resuming %s at step %d", state["phase"], state["step"])
    stop = _Stop()
    old_handlers = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        run = _Pretraining(state, cfg, stream_tr, stream_va, state_dir, out, torch.device(device), stop)
        run.ckpt_minutes, run.max_steps, run.on_log, run.command = ckpt_minutes, max_steps, on_log, command
        return run.run()
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)


def _load_streams(corpus: Path) -> Tuple[AudioStream, AudioStream]:
    """The corpus's train and valid splits, each as one stream."""
    files_tr = list_split_files(corpus, "train")
    files_va = list_split_files(corpus, "valid")
    t_load = time.time()
    stream_tr, stream_va = load_stream(files_tr), load_stream(files_va)
    log.info(
        "loaded %d train / %d valid files (%.1f h / %.1f h) in %.1f s",
        len(files_tr),
        len(files_va),
        stream_tr.num_frames / 50 / 3600,
        stream_va.num_frames / 50 / 3600,
        time.time() - t_load,
    )
    return stream_tr, stream_va


def _new_state(
    cfg: PretrainConfig, stream_tr: AudioStream, stream_va: AudioStream, corpus: Path, fingerprint: List[Any]
) -> Dict[str, Any]:
    """The state of a new run: iteration 1's MFCC k-means targets and a fresh model at step 0."""
    log.info("new run; iteration 1: MFCC features and k-means (%d clusters)", cfg.clusters_iter1)
    lab = _make_labels(
        stream_features(stream_tr, mfcc_frames),
        stream_features(stream_va, mfcc_frames),
        cfg.clusters_iter1,
        _seed_of(cfg.seed, "kmeans1"),
        cfg.kmeans_frames,
        cfg.standardize_features,
        cfg.kmeans_passes,
    )
    torch.manual_seed(_seed_of(cfg.seed, "init1"))
    model = build_model(cfg.clusters_iter1, cfg.model_cfg, cfg.task_cfg)
    return {
        "phase": "iter1",
        "step": 0,
        "config": dataclasses.asdict(cfg),
        "model": model.state_dict(),
        "optimizer": None,
        "targets": lab,
        "log": [],
        "meta": {
            "fingerprint": fingerprint,
            "corpus": str(corpus),
            "iteration2_init": "continued from iteration-1 weights, new label embedding",
            "majority_valid_iter1": _majority(lab["labels_valid"]),
            "train_hours": stream_tr.num_frames / 50 / 3600,
            "valid_hours": stream_va.num_frames / 50 / 3600,
        },
    }


#: the settings a resumed run takes from the caller (extending a run); the others are the state's
_CHANGEABLE = ("steps_iter1", "steps_iter2", "noise_prob", "noise_snr_db")


def _resumed_config(state: Dict[str, Any], cfg: Optional[PretrainConfig], state_dir: Path) -> PretrainConfig:
    """The saved settings, with the caller's step counts and noise settings (said in the log); a
    finished run asked for more iteration-2 steps goes back to iteration 2."""
    saved = PretrainConfig(**state["config"])
    for f in dataclasses.fields(PretrainConfig) if cfg is not None else ():
        new, old = getattr(cfg, f.name), getattr(saved, f.name)
        if new == old or (f.name == "noise_prob" and new is None):
            continue
        if f.name in _CHANGEABLE:
            log.warning("%s changed from %s to %s", f.name, old, new)
            setattr(saved, f.name, new)
        else:
            log.warning("ignoring %s=%r: the run in %s was started with %r", f.name, new, state_dir, old)
    state["config"] = dataclasses.asdict(saved)
    if state["phase"] == "done" and state["step"] < saved.steps_iter2:
        log.warning(
            "continuing the finished iteration 2 from step %d to %d (new optimizer)", state["step"], saved.steps_iter2
        )
        state["phase"] = "iter2"
    return saved


def _num_clusters(state) -> int:
    return int(state["targets"]["centroids"].shape[0])


def provenance(state: Dict[str, Any], command: Optional[str] = None) -> Dict[str, Any]:
    """How the model in ``state`` was made: recipe settings, corpus, progress, last scores."""
    last = state["log"][-1] if state["log"] else {}
    return {
        "recipe": "daisy pretrain-tiny (daisy_upstream.factory.pretrain.train)",
        "command": command,
        "config": state["config"],
        "corpus": state["meta"],
        "phase": state["phase"],
        "step": state["step"],
        "last_log": last,
    }


class _Pretraining:
    """One call's training: the iterations left in ``state``, saved as it goes."""

    def __init__(
        self,
        state: Dict[str, Any],
        cfg: PretrainConfig,
        stream_tr: AudioStream,
        stream_va: AudioStream,
        state_dir: Path,
        out: Path,
        dev: torch.device,
        stop: _Stop,
    ) -> None:
        self.state, self.cfg, self.stream_tr, self.stream_va = state, cfg, stream_tr, stream_va
        self.state_dir, self.out, self.dev, self.stop = state_dir, out, dev, stop
        self.ckpt_minutes: float = 5.0
        self.max_steps: Optional[int] = None
        self.on_log: Optional[Callable[[Dict[str, Any]], None]] = None
        self.command: Optional[str] = None
        self.steps_run = 0
        self.augment = NoiseAugment(cfg.noise_prob or 0.0, cfg.noise_snr_db, seed=cfg.seed)

    def run(self) -> Dict[str, Any]:
        """Train to the end of iteration 2 (or until stopped); the state's ``meta``."""
        state, cfg = self.state, self.cfg
        while state["phase"] != "done":
            it = 1 if state["phase"] == "iter1" else 2
            model = build_model(_num_clusters(state), cfg.model_cfg, cfg.task_cfg)
            model.load_state_dict(state["model"])
            model.to(self.dev).train()
            opt = _new_optimizer(model, cfg)
            if state["optimizer"] is not None:
                opt.load_state_dict(expand_optimizer(state["optimizer"]))
            if not self._train_iteration(it, model, opt):
                log.info("stopping at %s step %d; state saved in %s", state["phase"], state["step"], self.state_dir)
                return state["meta"]
            model.cpu().eval()
            if it == 1:
                self._start_iteration2(model)
            else:  # finished: the optimizer is no longer needed (the state stays small enough to commit)
                state.update({"phase": "done", "optimizer": None})
            save_state(state, self.state_dir)
        # (re)write the final checkpoint from the state, so a finished run re-creates it
        model = build_model(_num_clusters(state), cfg.model_cfg, cfg.task_cfg)
        model.load_state_dict(state["model"])
        self._save_model(model, self.out)
        log.info("pretraining done; final checkpoint %s", self.out)
        return state["meta"]

    def _save_model(self, model, path: Path) -> None:
        cfg = self.cfg
        save_converted(
            model, cfg.model_cfg, cfg.task_cfg, _num_clusters(self.state), path, provenance(self.state, self.command)
        )

    def _checkpoint(self, model, opt: torch.optim.Optimizer) -> None:
        self.state["model"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        osd = opt.state_dict()
        self.state["optimizer"] = osd if self.cfg.exact_state else compact_optimizer(osd)
        save_state(self.state, self.state_dir)
        self._save_model(model, self.out)

    def _train_iteration(self, it: int, model, opt: torch.optim.Optimizer) -> bool:
        """Train iteration ``it`` to its last step (True), or until stopped (False); saved either way."""
        state, cfg = self.state, self.cfg
        total = cfg.steps_iter1 if it == 1 else cfg.steps_iter2
        last_save = time.time()
        window = _Window()
        while state["step"] < total:
            lr, r, gnorm = self._step(it, model, opt, total)
            window.add(r)
            done_iter = state["step"] >= total
            if state["step"] % cfg.eval_every == 0 or done_iter:
                self._log_progress(it, total, lr, gnorm, window, model)
                window = _Window()
            limit_hit = self.max_steps is not None and self.steps_run >= self.max_steps
            if done_iter or self.stop.requested or limit_hit or time.time() - last_save > self.ckpt_minutes * 60:
                self._checkpoint(model, opt)
                last_save = time.time()
            if self.stop.requested or limit_hit:
                return False
        return True

    def _step(
        self, it: int, model, opt: torch.optim.Optimizer, total: int
    ) -> Tuple[float, Dict[str, Any], torch.Tensor]:
        """Training step ``state["step"]`` of iteration ``it``, every random choice seeded from
        ``(seed, it, step)``; returns the learning rate, the step's losses and the gradient norm."""
        state, cfg = self.state, self.cfg
        s = state["step"]
        seed = _seed_of(cfg.seed, it, s)
        rng = np.random.default_rng(seed)
        np.random.seed(seed)  # s3prl's compute_mask_indices draws from numpy's global RNG
        torch.manual_seed(seed)  # dropout
        starts = rng.integers(0, self.stream_tr.num_frames - cfg.crop_frames, size=cfg.batch_size)
        crops = crop_samples(self.stream_tr, starts, cfg.crop_frames)
        if self.augment.prob:
            noise_rng = np.random.default_rng(_seed_of(cfg.seed, it, s, "noise"))
            crops = np.stack([self.augment(c, noise_rng) for c in crops])
        wav = _normalize_batch(torch.from_numpy(crops).to(self.dev), cfg.task_cfg["normalize"])
        lab_tr = state["targets"]["labels_train"]
        lab = torch.stack([lab_tr[st : st + cfg.crop_frames].long() + 4 for st in starts]).to(self.dev)
        lr = lr_at(s, total, cfg.warmup_iter1 if it == 1 else cfg.warmup_iter2, cfg.lr)
        for g in opt.param_groups:
            g["lr"] = lr
        r = masked_prediction_step(model, wav, lab, cfg.features_pen_weight)
        opt.zero_grad(set_to_none=True)
        r["loss"].backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        state["step"] = s + 1
        self.steps_run += 1
        return lr, r, gnorm

    def _log_progress(self, it: int, total: int, lr: float, gnorm: torch.Tensor, window: "_Window", model) -> None:
        """A log entry: the training losses since the last one and the valid set's."""
        state = self.state
        entry = {
            "iteration": it,
            "step": state["step"],
            "lr": lr,
            "train_loss": float(np.mean(window.ce)),
            "train_acc": float(np.mean(window.acc)),
            "grad_norm": float(gnorm),
            "sec_per_step": (time.time() - window.start) / len(window.ce),
            "time": time.time(),
        }
        entry.update(_evaluate(model, self.stream_va, state["targets"]["labels_valid"], self.cfg, self.dev))
        state["log"].append(entry)
        log.info(
            "iter %d step %d/%d lr %.2e train loss %.3f acc %.3f | valid loss %.3f acc %.3f | %.2f s/step",
            it,
            state["step"],
            total,
            lr,
            entry["train_loss"],
            entry["train_acc"],
            entry["valid_loss"],
            entry["valid_acc"],
            entry["sec_per_step"],
        )
        if self.on_log:
            self.on_log(entry)

    def _start_iteration2(self, model) -> None:
        """Iteration 1 is done: save its model, make iteration 2's targets (k-means of layer
        ``target_layer``), and continue from its weights with a new label embedding."""
        state, cfg = self.state, self.cfg
        self._save_model(model, self.out.with_name(self.out.stem + ".iter1" + self.out.suffix))
        log.info("iteration 1 done; layer-%d features and k-means (%d clusters)", cfg.target_layer, cfg.clusters_iter2)
        fn = layer_features(model, cfg.target_layer, cfg.task_cfg["normalize"])
        lab = _make_labels(
            stream_features(self.stream_tr, fn),
            stream_features(self.stream_va, fn),
            cfg.clusters_iter2,
            _seed_of(cfg.seed, "kmeans2"),
            cfg.kmeans_frames,
            cfg.standardize_features,
            cfg.kmeans_passes,
        )
        new = build_model(cfg.clusters_iter2, cfg.model_cfg, cfg.task_cfg)
        torch.manual_seed(_seed_of(cfg.seed, "init2"))
        torch.nn.init.uniform_(new.label_embs_concat)
        sd = {k: v for k, v in model.state_dict().items() if k != "label_embs_concat"}
        sd["label_embs_concat"] = new.label_embs_concat.detach().clone()
        state.update({"phase": "iter2", "step": 0, "model": sd, "optimizer": None, "targets": lab})
        state["meta"]["majority_valid_iter2"] = _majority(lab["labels_valid"])


class _Window:
    """The training steps since the last log entry: their losses, accuracies and start time."""

    def __init__(self) -> None:
        self.ce: List[float] = []
        self.acc: List[float] = []
        self.start = time.time()

    def add(self, result: Dict[str, Any]) -> None:
        self.acc.append(float(result["acc"]))
        self.ce.append(float(result["ce"]))
