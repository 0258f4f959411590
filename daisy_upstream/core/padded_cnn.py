"""One padded CNN pass whose GroupNorm counts only each row's valid frames.

s3prl's ``ConvFeatureExtractionModel`` (``wav2vec2/wav2vec2_model.py:2857-2935``, shared by
HuBERT, wav2vec 2.0 and data2vec; WavLM's copy with ``conv_type="default"``,
``wavlm/WavLM.py:408-530``) in extractor mode ``default`` normalises conv block 0 with
``Fp32GroupNorm(C, C)``: a mean and variance over *time*. Run on a zero-padded batch, the
padded samples enter those statistics, so a row's features depend on its batch-mates' lengths.

Here the blocks run on the padded batch as they are, except that every GroupNorm takes its
statistics over each row's valid frames only (frames whose receptive field lies inside the
row's own samples: ``(n - kernel) // stride + 1`` per conv). A valid frame of a conv sees only
valid frames of the layer below, so each row's valid frames equal the CNN run on that row alone
(up to float summation order, <= 1e-5) and do not depend on its batch-mates; what lies past a
row's valid frames is garbage and is zeroed by the caller.

Where this cannot be shown equal, :func:`padded_cnn` returns None and the caller runs the
CNN row by row: a feature extractor that is not this plain stack of blocks (WavLM's
``conv_type`` ``conv2d`` / ``custom``, a conv with padding or dilation, any module in a block
other than Conv1d, Dropout, GELU, GroupNorm and a per-frame LayerNorm).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "CPU_CNN_SAMPLES",
    "chunked_padded_cnn",
    "length_chunks",
    "masked_group_norm",
    "padded_cnn",
    "per_length_cnn",
    "supports_padded_cnn",
]

#: padded samples per CNN pass on CPU: the padded batch's block-0 output is ``(B, 512, S/5)``
#: floats (2**20 samples: about 430 MB); on other devices the whole batch is one pass
CPU_CNN_SAMPLES = 1 << 20


def _per_frame(module: nn.Module) -> bool:
    """s3prl's ``Sequential(TransposeLast, Fp32LayerNorm, TransposeLast)`` (mode ``layer_norm``)."""
    return isinstance(module, nn.Sequential) and all(
        isinstance(m, nn.LayerNorm) or type(m).__name__ == "TransposeLast" for m in module
    )


def _plain_module(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv1d):
        return module.padding == (0,) and module.dilation == (1,) and module.groups == 1
    return isinstance(module, (nn.Dropout, nn.GELU, nn.GroupNorm)) or _per_frame(module)


def supports_padded_cnn(extractor: nn.Module) -> bool:
    """Whether ``extractor`` is the plain stack of blocks :func:`padded_cnn` reproduces."""
    blocks = getattr(extractor, "conv_layers", None)
    if getattr(extractor, "conv_type", "default") != "default" or not isinstance(blocks, nn.ModuleList):
        return False
    return all(isinstance(b, nn.Sequential) and all(_plain_module(m) for m in b) for b in blocks)


def length_chunks(sizes: Sequence[int], budget: Optional[int]) -> List[List[int]]:
    """Row indices in passes of at most ``budget`` padded samples (rows sorted by length)."""
    if budget is None or len(sizes) * max(sizes) <= budget:
        return [list(range(len(sizes)))]
    chunks: List[List[int]] = [[]]
    for i in sorted(range(len(sizes)), key=sizes.__getitem__):
        if chunks[-1] and (len(chunks[-1]) + 1) * sizes[i] > budget:
            chunks.append([])
        chunks[-1].append(i)
    return chunks


def masked_group_norm(norm: nn.GroupNorm, x: Tensor, lengths: Tensor, chunk: int = 1 << 24) -> Tensor:
    """``norm(x)`` with statistics over each row's first ``lengths[b]`` frames only.

    Args:
        x: ``(B, C, T)``. lengths: ``(B,)`` valid frames (on ``x``'s device).
        chunk: elements per temporary under no_grad, where groups are done a few at a time
            and ``x`` is overwritten (the padded batch's block-0 output is large: ``(B, 512, S/5)``).

    Computed in fp32 like s3prl's ``Fp32GroupNorm`` (and like autocast runs ``group_norm``),
    returned in ``x``'s dtype; biased variance, as ``F.group_norm``.
    """
    batch, channels, frames = x.shape
    groups = norm.num_groups
    per_group = channels // groups
    valid = (torch.arange(frames, device=x.device) < lengths.unsqueeze(1)).view(batch, 1, 1, frames)
    count = (lengths.float() * per_group).view(batch, 1, 1, 1)
    weight = norm.weight.float().view(-1, 1) if norm.affine else None
    bias = norm.bias.float().view(-1, 1) if norm.affine else None
    in_place = not torch.is_grad_enabled()
    out = x if in_place else []
    step = max(1, chunk // (batch * per_group * frames)) if in_place else groups
    for first in range(0, groups, step):
        lo, hi = first * per_group, min(groups, first + step) * per_group
        y = x[:, lo:hi].float().reshape(batch, -1, per_group, frames)
        mean = (y * valid).sum(dim=(2, 3), keepdim=True) / count
        centred = y - mean
        var = (centred.square() * valid).sum(dim=(2, 3), keepdim=True) / count
        normed = centred.mul_(torch.rsqrt(var + norm.eps)) if in_place else centred * torch.rsqrt(var + norm.eps)
        normed = normed.view(batch, hi - lo, frames)
        if weight is not None:
            normed = normed * weight[lo:hi] + bias[lo:hi]
        if in_place:
            out[:, lo:hi] = normed
        else:
            out.append(normed)
    return out if in_place else torch.cat(out, dim=1).type_as(x)


def padded_cnn(extractor: nn.Module, wav: Tensor, num_samples: Sequence[int]) -> Optional[Tensor]:
    """``(B, S)`` zero-padded waveforms -> ``(B, C, T)`` as ``extractor(wav)`` with row-wise GroupNorm.

    ``num_samples``: each row's own samples (host ints). None when the extractor is not the
    plain stack (:func:`supports_padded_cnn`): run it row by row instead.
    """
    if not supports_padded_cnn(extractor):
        return None
    lengths: List[int] = list(num_samples)
    x = wav.unsqueeze(1)
    for block in extractor.conv_layers:
        for module in block:
            if isinstance(module, nn.Conv1d):
                x = module(x)
                kernel, stride = module.kernel_size[0], module.stride[0]
                lengths = [(n - kernel) // stride + 1 for n in lengths]
            elif isinstance(module, nn.GroupNorm):
                x = masked_group_norm(module, x, torch.tensor(lengths, device=x.device))
            else:
                x = module(x)
    return x


def per_length_cnn(cnn: Callable[[Tensor], Tensor], wavs: Sequence[Tensor], counts: Sequence[int]) -> Tensor:
    """``(B, T, C)``: ``cnn`` (``(b, S) -> (b, T_s, C)``) once per distinct length, equal lengths
    batched; zeros past each row's ``counts`` frames."""
    groups: Dict[int, List[int]] = defaultdict(list)
    for i, wav in enumerate(wavs):
        groups[len(wav)].append(i)
    features = None
    for rows in groups.values():
        out = cnn(torch.stack([wavs[i] for i in rows]))
        if features is None:
            features = out.new_zeros(len(wavs), max(counts), out.size(-1))
        features[rows, : out.size(1)] = out
    return features


def chunked_padded_cnn(
    cnn: Callable[[Tensor, Optional[Sequence[int]]], Tensor],
    padded: Tensor,
    sizes: Sequence[int],
    counts: Sequence[int],
    group_norm: bool,
) -> Tensor:
    """``(B, T, C)``: ``cnn(wav, num_samples)`` on the zero-padded ``(B, S)`` batch, in passes of at
    most :data:`CPU_CNN_SAMPLES` on CPU (rows of similar length together); with ``group_norm`` the
    rows' own ``sizes`` go with each pass (:func:`padded_cnn`). Frames past a row's end: garbage."""
    chunks = length_chunks(sizes, CPU_CNN_SAMPLES if padded.device.type == "cpu" else None)
    if len(chunks) == 1:
        return cnn(padded, list(sizes) if group_norm else None)
    features = None
    for rows in chunks:
        part = [sizes[i] for i in rows]
        out = cnn(padded[rows, : max(part)], part if group_norm else None)
        if features is None:
            features = out.new_zeros(len(sizes), max(counts), out.size(-1))
        features[rows, : out.size(1)] = out
    return features
