"""MACs of one forward, counted by torch's own ``torch.utils.flop_counter.FlopCounterMode``.

``MACs = FLOPs / 2``. The counter sees every operator that reaches torch's dispatcher and has
a FLOP formula in torch: matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm``), convolutions
and fused attention kernels; elementwise ops, normalisations, activations and softmax count
zero (as MACs in any profiler). Attention runs on torch's default kernel: on CPU the fused
flash-attention kernel, which never holds the ``T x T`` scores (memory linear in the clip
length, not quadratic: a 10-minute clip fits). torch's counter has no formula registered for
that CPU kernel, so its own attention formula (``flop_counter.sdpa_flop``, the two products
``Q K^T`` and ``P V``) is given for it; it is exactly what the math backend's two ``bmm`` count.

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
    "batch 1; counted: matrix products (mm/addmm/bmm/baddbmm), convolutions, fused attention (the CPU "
    "flash-attention kernel with torch's own attention formula: Q K^T and P V, what the math backend's "
    "two bmm count); elementwise ops, norms, activations and softmax count 0. The SUPERB challenge's "
    "profiler (a DeepSpeed fork) counts what its Python patches of torch.nn.functional and tensor "
    "methods see (not torchaudio / torch.fft / linalg), after 10 warm-up forwards; a count does not "
    "depend on warm-up, so none is run here."
)


def _attention_macs_formula(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """torch's attention formula (``flop_counter.sdpa_flop_count``: ``Q K^T`` and ``P V``) on the
    shapes of a fused kernel's ``query``, ``key``, ``value`` ``(B, H, T, d)``."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _attention_formulas() -> Dict[Any, Callable[..., int]]:
    """The attention formula for the fused kernels torch's registry lacks (the CPU flash kernel)."""
    from torch.utils.flop_counter import flop_registry

    aten = torch.ops.aten
    kernels = [getattr(aten, name) for name in ("_scaled_dot_product_flash_attention_for_cpu",) if hasattr(aten, name)]
    return {kernel: _attention_macs_formula for kernel in kernels if kernel not in flop_registry}


def count_macs(fn: Callable[[], Any]) -> Tuple[int, Dict[str, int], Any]:
    """Run ``fn()`` under the counter.

    Returns:
        ``(macs, macs_per_op, result)``: total MACs, MACs by aten operator, ``fn``'s result.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_attention_formulas())
    with torch.no_grad(), counter:
        result = fn()
    per_op = {str(op): int(flops) // 2 for op, flops in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()) // 2, per_op, result
