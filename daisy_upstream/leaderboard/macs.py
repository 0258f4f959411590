"""MACs of one forward, counted by torch's own ``torch.utils.flop_counter.FlopCounterMode``.

``MACs = FLOPs / 2``. The counter sees every operator that reaches torch's dispatcher and has
a FLOP formula in torch: matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm``), convolutions
and fused attention kernels; elementwise ops, normalisations, activations and softmax count
zero (as MACs in any profiler). The forward runs under ``sdpa_kernel(MATH)``: torch's counter
has no formula for the CPU flash-attention kernel, the math backend runs attention as two
``bmm``, which are counted.

How this differs from the SUPERB challenge's profiler (a fork of DeepSpeed's flops profiler):
that one patches ``torch.nn.functional`` and tensor methods in Python and counts only what its
patches see (not torchaudio, ``torch.fft`` or linalg ops; sorting not counted), after 10
warm-up forwards on ``randn(160000)``. A count is a property of the ops executed, so no
warm-up is run here. On a HuBERT both count the same convolutions, linear layers and attention
products; for an early-exit model both count only what the forward actually executed.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import torch

__all__ = ["COUNTER_NOTE", "count_macs"]

COUNTER_NOTE = (
    "MACs = FLOPs / 2 from torch.utils.flop_counter.FlopCounterMode (torch's own counter), forward at "
    "batch 1 under sdpa_kernel(MATH) so attention runs as counted bmm; counted: matrix products "
    "(mm/addmm/bmm/baddbmm), convolutions, fused attention; elementwise ops, norms, activations and "
    "softmax count 0. The SUPERB challenge's profiler (a DeepSpeed fork) counts what its Python "
    "patches of torch.nn.functional and tensor methods see (not torchaudio / torch.fft / linalg), "
    "after 10 warm-up forwards; a count does not depend on warm-up, so none is run here."
)


def count_macs(fn: Callable[[], Any]) -> Tuple[int, Dict[str, int], Any]:
    """Run ``fn()`` under the counter.

    Returns:
        ``(macs, macs_per_op, result)``: total MACs, MACs by aten operator, ``fn``'s result.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), counter:
        result = fn()
    per_op = {str(op): int(flops) // 2 for op, flops in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()) // 2, per_op, result
