"""``count_macs`` (issue 18, bounded memory in ``profile``): attention runs on torch's fused CPU
kernel, which never holds the ``T x T`` scores, and is counted with torch's own attention
formula: exactly what the math backend's two ``bmm`` count (an independent count: torch's
FlopCounterMode with no formula of ours, attention forced onto the math backend)."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from daisy_upstream.integration.hubconf import daisy_hubert_local
from daisy_upstream.leaderboard.macs import count_macs
from daisy_upstream.testing import waves


class SquareOutputs(TorchDispatchMode):
    """Records every op whose output ends in a ``(frames, frames)`` matrix (attention scores)."""

    def __init__(self, frames: int):
        super().__init__()
        self.frames, self.ops = frames, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.dim() >= 2 and tuple(t.shape[-2:]) == (self.frames, self.frames):
                self.ops.append(str(func))
        return out


def _math_backend_macs(fn) -> int:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), counter:
        fn()
    return counter.get_total_flops() // 2


def test_attention_is_counted_exactly_without_materialising_the_scores(tiny_ckpt):
    upstream = daisy_hubert_local(str(tiny_ckpt), model_config={"strategy": "full"}).eval()
    wav = waves(48000, seed=11)[0]  # 3 s: 149 frames
    frames = upstream.net.frame_counts([wav.numel()])[0]

    def forward():
        return upstream([wav])

    watch = SquareOutputs(frames)
    with watch:
        macs, per_op, _ = count_macs(forward)
    assert watch.ops == [], watch.ops  # no (..., T, T) tensor was made
    assert macs == _math_backend_macs(forward)  # exactly the count with the scores materialised
    # Q K^T and P V: H heads x T x T x d_head MACs each, H d_head = D (32 in tiny_ckpt), every layer
    attention = sum(v for k, v in per_op.items() if "attention" in k)
    assert attention == upstream.num_layers * 2 * frames * frames * upstream.net.embed_dim

    with SquareOutputs(frames) as old:  # what the math backend does: the T x T scores
        _math_backend_macs(forward)
    assert old.ops
