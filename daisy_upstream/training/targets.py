"""Stage-1 targets and loss: the frozen model's own targets, and the branches' CE.

A *target source* gives every valid frame ``G`` class indices (``G`` output blocks of
``num_classes`` classes; ``G = 1`` except for wav2vec 2.0's codebook groups). Its interface:
attributes ``kind`` ("model" / "kmeans"), ``num_classes``, ``groups``; ``labels(features,
wavs, lengths) -> (N, G)`` long, ``features`` being the batch's valid frames of
``hidden_states[1..L]`` ``(L, N, D)``; ``record()`` -> the ``daisy.targets`` entry. Sources:

* HuBERT, ``--targets model`` (:class:`ClusterTargets`): the cluster assignment at its last
  layer, ``y_t = argmax_{c real} cos(final_proj(h^L_t), label_embs_concat[c]) / logit_temp``
  over the *real* cluster rows of the first label set (fairseq's four special symbols
  ``<s> <pad> </s> <unk>``, the first four rows, are never targets), ``h^L = hidden_states[L]``.
* wav2vec 2.0, ``--targets model``: its contrastive prediction at the last layer, one code per
  codebook group; ``--targets quantizer``: the quantizer's codes of the input (``quantizer_targets``).
* any family, ``--targets kmeans``: nearest k-means centroid of layer ``K`` (``kmeans_targets``).

Branch ``k`` (1-based) is a linear classifier on ``hidden_states[k]``, trained with the mean
cross-entropy over valid frames (and over the ``G`` blocks); the loss is the sum over layers.
The backbone runs under ``torch.no_grad``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.core.branches import BRANCH_INPUTS, ExitBranches, valid_frame_mask
from daisy_upstream.core.checkpoint import (
    FAIRSEQ_SPECIALS,
    DaisyCheckpoint,
    load_daisy_state,
    read_checkpoint,
    split_authors_heads,
    with_teacher,
)
from daisy_upstream.core.early_exit import EarlyExitModel
from daisy_upstream.core.families import family_of_state
from daisy_upstream.core.policy import make_plan

from .batch_feed import PaddedBatches, batch_loader, shard_keys, unpad
from .distributed import all_reduce_sum
from .quantizer_targets import ContrastiveTargets, QuantizerTargets

__all__ = [
    "BranchLoss",
    "ClusterTargets",
    "balanced_layer_lrs",
    "batch_features",
    "evaluate_branches",
    "load_frozen_model",
]

log = logging.getLogger(__name__)

_NO_LABEL_EMBS = (
    "checkpoint has no label_embs_concat: cannot make stage-1 targets; it must be a pretraining "
    "checkpoint, not a fine-tuned one, or a model without a head (a transformers HubertModel): "
    "pass --targets kmeans --kmeans-layer K --clusters N"
)


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

    kind = "model"
    groups = 1

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
        return embs[self.num_special :]

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

    def labels(self, features: Tensor, wavs: List[Tensor], lengths: Tensor) -> Tensor:
        """``features (L, N, D)`` -> ``(N, 1)``: the assignment of ``hidden_states[L]``."""
        return self(features[-1]).unsqueeze(-1)

    def record(self) -> Dict[str, Any]:
        """``daisy.targets`` for these branches."""
        return {
            "kind": self.kind,
            "source": "HuBERT cluster assignment at the last layer (final_proj vs label_embs_concat)",
            "clusters": self.num_classes,
        }


class BranchLoss(nn.Module):
    """Per-layer cross-entropy and agreement of all branches (the module DDP wraps).

    Forward: ``features (L, N, D)`` valid frames of ``hidden_states[1..L]``, ``targets (N, G)``
    (or ``(N,)`` for ``G = 1``) -> ``(ce (L,), correct (L,))``: per layer the cross-entropy
    averaged over frames and the ``G`` output blocks, and the count of (frame, block) pairs
    whose argmax equals the target. ``N = 0`` gives zero losses that still touch every
    parameter (so that all DDP ranks take part in the step).
    """

    def __init__(self, branches: ExitBranches) -> None:
        super().__init__()
        self.branches = branches

    def forward(self, features: Tensor, targets: Tensor) -> Tuple[Tensor, Tensor]:
        ces, correct = [], []
        groups = self.branches.groups
        targets = targets.reshape(-1)  # (N*G,), frame-major like the logits' blocks below
        for k, branch in enumerate(self.branches):
            logits = branch(features[k])
            if groups > 1:  # (N, G*V) -> (N*G, V): one softmax per block
                logits = logits.reshape(-1, self.branches.num_classes)
            if targets.numel() == 0:
                ces.append(logits.sum() * 0.0 + sum(p.sum() for p in branch.parameters()) * 0.0)
                correct.append(torch.zeros((), dtype=torch.long, device=logits.device))
                continue
            ces.append(F.cross_entropy(logits.float(), targets))
            correct.append((logits.argmax(dim=-1) == targets).sum())
        return torch.stack(ces), torch.stack(correct)


def load_frozen_model(
    checkpoint: Union[str, Path], teacher: Optional[Union[str, Path]] = None, need_head: bool = True
) -> Tuple[DaisyCheckpoint, Dict[str, Any]]:
    """The frozen model with ``final_proj``/``label_embs_concat``, and the raw state to extend.

    ``teacher``: a converted HuBERT of the same backbone that provides ``final_proj`` and
    ``label_embs_concat`` (for the authors' layout, whose heads replace ``final_proj``).
    ``need_head=False`` (k-means targets): the cluster head may be absent. A checkpoint of
    another family (wav2vec 2.0, data2vec, WavLM) is loaded as its stock upstream loads it.

    Raises:
        ValueError: no ``label_embs_concat``; per-layer heads without a teacher; a teacher of
            another backbone.
    """
    state = read_checkpoint(checkpoint)
    family = family_of_state(state, str(checkpoint))
    if family.name != "hubert":  # no cluster head, no authors' layout: the file as its upstream loads it
        if teacher is not None:
            raise ValueError(
                f"--teacher is for the authors' HuBERT layout; {checkpoint} is a {FAMILY_NAMES[family.name]} checkpoint"
            )
        loaded = load_daisy_state(state, str(checkpoint))
        for p in loaded.model.parameters():
            p.requires_grad_(False)
        return loaded, state
    weights = state["model_weight"]
    if teacher is not None:
        state = with_teacher(state, read_checkpoint(teacher), str(checkpoint), f"teacher {teacher}")
    elif "final_proj.weight" not in weights and split_authors_heads(weights)[1] and need_head:
        raise ValueError(
            f"{checkpoint} has per-layer heads (the authors' layout) instead of HuBERT's final_proj, "
            "so the last layer's cluster assignment cannot be computed from it; give as teacher the "
            "converted HuBERT checkpoint the heads were trained on"
        )
    elif "label_embs_concat" not in weights and need_head:
        raise ValueError(_NO_LABEL_EMBS)
    loaded = load_daisy_state(state, str(checkpoint))
    model = loaded.model
    log.info("%s: branches trained here read %s", checkpoint, BRANCH_INPUTS["hidden_states"])
    if need_head and getattr(model, "label_embs_concat", None) is None:
        raise ValueError(_NO_LABEL_EMBS)
    for p in model.parameters():
        p.requires_grad_(False)
    return loaded, state


#: how the refusal names each family
FAMILY_NAMES = {"hubert": "HuBERT", "wav2vec2": "wav2vec 2.0", "data2vec": "data2vec", "wavlm": "WavLM"}


def model_targets(loaded: DaisyCheckpoint, state: Dict[str, Any], name: str, kind: str = "model") -> nn.Module:
    """``--targets model`` (the pretraining head's targets of the loaded model's family) or
    ``--targets quantizer`` (wav2vec 2.0's quantizer code of the input).

    Raises:
        ValueError: a family without a pretraining head (WavLM, data2vec), or ``quantizer``
            for another family than wav2vec 2.0, in one line naming what to use.
    """
    family = loaded.family.name
    if kind == "quantizer" and family != "wav2vec2":
        raise ValueError(f"--targets quantizer is wav2vec 2.0's; {name} is a {FAMILY_NAMES[family]} model")
    if family == "hubert":
        return ClusterTargets(loaded.model, state["dictionaries_symbols"][0])
    if family == "wav2vec2":
        if kind == "quantizer":
            return QuantizerTargets(loaded.model, bool(loaded.task_cfg.normalize))
        return ContrastiveTargets(loaded.model)
    raise ValueError(
        f"{name} is a {FAMILY_NAMES[family]} model, which has no pretraining head to take "
        "stage-1 targets from: pass --targets kmeans --kmeans-layer K --clusters N"
    )


def batch_features(backbone: EarlyExitModel, targets: nn.Module, wavs: List[Tensor]) -> Tuple[Tensor, Tensor]:
    """Valid frames of ``hidden_states[1..L]`` ``(L, N, D)`` and their targets ``(N, G)``.

    Float32 whatever ``backbone.precision`` (its forward leaves float32), and so the targets.
    """
    num_layers = backbone.num_layers
    with torch.no_grad():
        out = backbone(wavs, make_plan([num_layers], None))
        mask = valid_frame_mask(out.lengths, out.hidden_states[0].size(1))
        features = torch.stack([out.hidden_states[k][mask] for k in range(1, num_layers + 1)])
        labels = targets.labels(features, wavs, out.lengths)
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
        raise ValueError(
            f"a layer's features are all zero (mean norms {norms.tolist()}); cannot balance learning rates"
        )
    return [lr * float(v) for v in norms.max() / norms]


@torch.no_grad()
def evaluate_branches(
    backbone: EarlyExitModel,
    targets: nn.Module,
    branches: ExitBranches,
    corpus: AudioCorpus,
    batch_seconds: float,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
    workers: int = 0,
    prefetch: int = 2,
) -> Dict[str, Any]:
    """Per-layer frame-weighted mean CE and agreement with the targets on ``corpus``.

    Under ``world`` processes (every rank calls this), rank ``r`` evaluates batches ``r, r +
    world, ...`` and the sums are all-reduced: each rank returns the numbers one process gets
    (up to the order of float64 additions). ``workers`` / ``prefetch``: the DataLoader that
    reads ``corpus`` (:mod:`~daisy_upstream.training.batch_feed`); the numbers do not depend on them.

    Returns:
        ``{"ce": [L floats], "accuracy": [L floats], "frames": int, "utterances": int}``
        (accuracy over (frame, output block) pairs).
    """
    loss = BranchLoss(branches)
    num_layers = branches.num_layers
    # [CE x frames per layer (L), correct per layer (L), frames, (frame, block) pairs, utterances]
    sums = torch.zeros(2 * num_layers + 3, dtype=torch.float64, device=device)
    batches = corpus.batches(batch_seconds)
    loader = batch_loader(
        PaddedBatches(corpus, batches),
        shard_keys(len(batches), rank, world),
        workers,
        prefetch,
        pin_memory=torch.device(device).type == "cuda",
    )
    for item in loader:
        wavs = unpad(item, corpus, device)
        if not wavs:
            continue
        features, labels = batch_features(backbone, targets, wavs)
        if labels.numel() == 0:
            continue
        ce, hits = loss(features, labels)
        sums[:num_layers] += ce.double() * labels.size(0)
        sums[num_layers : 2 * num_layers] += hits.double()
        sums[2 * num_layers :] += torch.tensor(
            [labels.size(0), labels.numel(), len(wavs)], dtype=torch.float64, device=device
        )
    sums = all_reduce_sum(sums, world).cpu()
    frames, pairs, utterances = (int(v) for v in sums[2 * num_layers :])
    if frames == 0:
        raise ValueError(f"no frame could be evaluated in {corpus.name} ({corpus.problems.summary()})")
    return {
        "ce": [float(v) for v in sums[:num_layers] / frames],
        "accuracy": [float(v) for v in sums[num_layers : 2 * num_layers] / pairs],
        "frames": frames,
        "utterances": utterances,
    }
