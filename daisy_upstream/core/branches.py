"""Early-exit branches (one linear classifier per transformer layer) and their entropy."""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BRANCH_INPUTS",
    "ExitBranches",
    "check_branches_fit",
    "check_entropy",
    "frame_entropy",
    "frame_weights",
    "group_entropy",
    "mean_entropy",
    "valid_frame_mask",
]

#: what branch ``k`` reads (``ExitBranches.branch_input``); computed by ``EarlyExitModel``
BRANCH_INPUTS = {
    # ours: the hidden state s3prl's stock ``hubert`` upstream returns for layer k
    "hidden_states": "hidden_states[k]",
    # the authors' cls_pred_position 'after-norm': what transformer layer k returns (equal to
    # hidden_states[k] except at the last layer of a pre-LN model, which s3prl normalizes)
    "layer_output": "layer k's output",
    # the authors' 'before-norm' (their class default): the output of layer k's fc2, before
    # dropout, the residual add and any LayerNorm
    "ffn_output": "layer k's FFN output (fc2, before the residual add and LayerNorm)",
}


def valid_frame_mask(lengths: Tensor, max_len: int) -> Tensor:
    """``(B,)`` frame counts -> ``(B, max_len)`` bool mask, True on valid frames."""
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def frame_entropy(logits: Tensor) -> Tensor:
    """Entropy (nats) of softmax(logits) over the last axis: ``(..., C) -> (...)``.

    Computed from ``log_softmax`` so that probabilities that underflow to zero give
    ``0 * log 0 = 0`` and never NaN, whatever the logits' scale.
    """
    log_p = F.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def group_entropy(logits: Tensor, groups: int = 1) -> Tensor:
    """Frame entropy of a head with ``groups`` output blocks: ``(..., G*V) -> (...)``.

    The last axis holds ``G`` blocks of ``V`` classes (block ``g`` = columns ``g*V..g*V+V-1``,
    e.g. one per codebook group of wav2vec 2.0's quantizer); each block is its own softmax
    and the result is the mean of the ``G`` blocks' entropies. ``groups=1`` is
    :func:`frame_entropy`.
    """
    if groups == 1:
        return frame_entropy(logits)
    return frame_entropy(logits.unflatten(-1, (groups, -1))).mean(dim=-1)


def mean_entropy(logits: Tensor, lengths: Optional[Tensor], groups: int = 1) -> Tensor:
    """Per-utterance mean frame entropy over valid frames only.

    Args:
        logits: ``(B, T, C)`` branch logits (``C = G*V`` for ``groups`` blocks).
        lengths: ``(B,)`` number of valid frames of each row (padding excluded), or None
            when every row's ``T`` frames are valid.
        groups: output blocks of the head (:func:`group_entropy`).

    Returns:
        ``(B,)`` mean entropy in nats.
    """
    ent = group_entropy(logits, groups)
    if lengths is None:
        return ent.mean(dim=1)
    mask = valid_frame_mask(lengths, logits.size(1))
    return (ent * mask).sum(dim=1) / lengths.clamp(min=1).to(ent.dtype)


def frame_weights(lengths: Tensor, frames: int, groups: int = 1) -> Tensor:
    """``(B,)`` valid frames -> ``(B, frames)`` weights of the masked mean: ``1 / (G * n_b)`` on
    row ``b``'s valid frames, 0 on padding (the weights of :func:`check_entropy`)."""
    valid = valid_frame_mask(lengths, frames)
    return valid / (lengths.clamp(min=1) * groups).to(torch.float32).unsqueeze(1)


def check_entropy(hidden: Tensor, weight: Tensor, bias: Tensor, weights: Optional[Tensor], groups: int = 1) -> Tensor:
    """A branch check in one expression of few kernels: :func:`mean_entropy` of ``hidden @ W^T + b``.

    Args:
        hidden: ``(B, T, D)`` in ``weight``'s dtype.
        weight, bias: the branch, ``(G*C, D)`` and ``(G*C,)``.
        weights: ``(B, T)`` :func:`frame_weights` (computed once per set of running rows), or
            None when every frame of every row is valid.

    Returns:
        ``(B,)`` the mean over valid frames of the mean over ``G`` blocks of the frame entropy.

    The linear map, a log-softmax, ``p * log p`` and one batched product with the frame weights
    that does the masked mean and the group mean at once: 5 kernels where :func:`mean_entropy`
    launches about 14, the same values (the eager reference, to float summation order).
    """
    batch, frames = hidden.shape[:2]
    logits = torch.addmm(bias, hidden.reshape(batch * frames, -1), weight.t())
    log_p = logits.view(batch, frames * groups, -1).log_softmax(dim=-1)
    plogp = (log_p.exp() * log_p).sum(dim=-1)  # (B, T*G): -entropy of each frame's block
    if weights is None:
        return plogp.mean(dim=1).neg()
    per_block = weights if groups == 1 else weights.repeat_interleave(groups, dim=1)
    return torch.bmm(plogp.unsqueeze(1), per_block.neg().unsqueeze(2)).view(batch)


class ExitBranches(nn.ModuleList):
    """``L`` linear branches ``W^k: D -> G*C``; branch ``k`` (1-based) reads layer ``k``.

    ``branch_input`` (a key of :data:`BRANCH_INPUTS`) names the tensor of layer ``k`` a branch
    takes: ``hidden_states[k]`` for branches trained by us, the FFN or layer output for the
    authors' heads. ``groups`` (``G``, default 1) output blocks of ``num_classes`` (``C``)
    classes each predict ``G`` targets per frame (wav2vec 2.0's codebook groups); the exit
    entropy is the mean over the blocks (:func:`group_entropy`). The state dict has keys
    ``{k-1}.weight`` (``(G*C, D)``) and ``{k-1}.bias`` (``(G*C,)``), the layout stored under
    ``checkpoint["daisy"]["branches"]`` (with ``daisy.groups`` when ``G > 1``).
    """

    def __init__(
        self, num_layers: int, embed_dim: int, num_classes: int, branch_input: str = "hidden_states", groups: int = 1
    ) -> None:
        if num_layers < 1 or embed_dim < 1 or num_classes < 2 or groups < 1:
            raise ValueError(
                f"ExitBranches needs num_layers >= 1, embed_dim >= 1, num_classes >= 2, groups >= 1; "
                f"got {num_layers}, {embed_dim}, {num_classes}, {groups}"
            )
        if branch_input not in BRANCH_INPUTS:
            raise ValueError(f"branches cannot read {branch_input!r}; choose one of {', '.join(BRANCH_INPUTS)}")
        super().__init__([nn.Linear(embed_dim, groups * num_classes) for _ in range(num_layers)])
        self.branch_input = branch_input
        self.groups = groups

    @property
    def num_layers(self) -> int:
        return len(self)

    @property
    def embed_dim(self) -> int:
        return self[0].in_features

    @property
    def num_classes(self) -> int:
        """Classes per output block (``C``)."""
        return self[0].out_features // self.groups

    def extra_repr(self) -> str:
        return f"branch_input={self.branch_input!r}" + (f", groups={self.groups}" if self.groups > 1 else "")

    def logits(self, layer: int, hidden: Tensor) -> Tensor:
        """Logits of branch ``layer`` (1-based) on ``hidden`` ``(..., D) -> (..., G*C)``."""
        return self[layer - 1](hidden)

    def entropy(self, layer: int, hidden: Tensor, lengths: Optional[Tensor]) -> Tensor:
        """Mean valid-frame entropy of branch ``layer`` on ``hidden`` ``(B, T, D)`` -> ``(B,)``.

        ``lengths`` ``(B,)`` counts each row's valid frames; None: all ``T`` are valid.
        Computed outside autocast in the branches' dtype (float32), whatever ``hidden``'s
        dtype and the forward's precision (:mod:`daisy_upstream.core.precision`).
        """
        weights = None if lengths is None else frame_weights(lengths, hidden.size(1), self.groups)
        return self.check(layer, hidden, weights)

    def check(self, layer: int, hidden: Tensor, weights: Optional[Tensor]) -> Tensor:
        """:meth:`entropy` with the mean's ``(B, T)`` :func:`frame_weights` given (the loop's
        fused check, :func:`check_entropy`); float32 outside autocast."""
        branch = self[layer - 1]
        with torch.autocast(hidden.device.type, enabled=False):
            return check_entropy(hidden.to(branch.weight.dtype), branch.weight, branch.bias, weights, self.groups)

    @classmethod
    def from_state_dict(
        cls,
        state: Dict[str, Tensor],
        num_layers: int,
        embed_dim: Optional[int] = None,
        branch_input: str = "hidden_states",
        groups: int = 1,
    ) -> "ExitBranches":
        """Build branches from a ``{k-1}.weight/bias`` state dict, checking its shape.

        The class count ``C`` is taken from the weights (rows / ``groups``); ``branch_input`` and
        ``groups`` as in the constructor.

        Raises:
            ValueError: if the branch count differs from ``num_layers``, keys are missing
                or unexpected, or the input width differs from ``embed_dim``.
        """
        indices = sorted({int(key.split(".", 1)[0]) for key in state if key.split(".", 1)[0].isdigit()})
        if indices != list(range(len(indices))) or not indices:
            raise ValueError(
                f"branch state dict must have keys '0.weight', '0.bias', ... consecutively; "
                f"got keys {sorted(state)[:6]}..."
            )
        if len(indices) != num_layers:
            raise ValueError(
                f"the checkpoint has {len(indices)} branches but the model has {num_layers} "
                "transformer layers; branches must be trained for this exact model "
                "(daisy train-branches)"
            )
        rows, width = state["0.weight"].shape
        if embed_dim is not None and width != embed_dim:
            raise ValueError(f"branches take {width}-dim input but the model's hidden size is {embed_dim}")
        if groups < 1 or rows % groups:
            raise ValueError(f"branches have {rows} outputs, which is not {groups} equal output blocks (groups)")
        branches = cls(num_layers, width, rows // groups, branch_input, groups)
        branches.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        return branches


def check_branches_fit(branches: ExitBranches, num_layers: int) -> None:
    """Refuse ``branches`` made for a model of another depth than ``num_layers`` (one branch a layer)."""
    if branches.num_layers != num_layers:
        raise ValueError(f"{branches.num_layers} branches for a {num_layers}-layer model")
