"""The arithmetic of the frozen model's forward: ``fp32``, ``bf16`` or ``fp16``.

``fp32`` runs the model in float32; on CUDA its matmuls and cuDNN convolutions may use TF32
inside the forward (the flags are set for the forward and restored after it). ``bf16`` /
``fp16`` run the forward under ``torch.autocast`` (CUDA, and the CPU, where bf16 autocast
works too). Whatever the precision, what leaves the forward is float32 and the exit
branches and their entropies run in float32 outside autocast
(:meth:`~daisy_upstream.core.branches.ExitBranches.entropy`).

:data:`FORWARD_GUARDS` holds context factories entered around every autocast forward;
:mod:`daisy_upstream.integration.compat` adds its fix for torch's CPU bf16 grouped
convolution there when this module is imported (the plugin's import hooks), so that this
module, like all of ``core``, imports nothing else of ours. It imports torch only when a
forward runs (the CLI's parsers and the upstream config read :data:`PRECISIONS`).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterator, List

__all__ = ["FORWARD_GUARDS", "PRECISIONS", "check_precision", "frozen_forward"]

#: the precisions of the frozen forward
PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST = {"bf16": "bfloat16", "fp16": "float16"}  # torch dtype names

#: ``guard(device_type: str, dtype: torch.dtype) -> context manager`` entered around every autocast forward
FORWARD_GUARDS: List[Callable[[str, Any], ContextManager]] = []


def check_precision(precision: str) -> None:
    """Raises ValueError for a precision that is not one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


@contextlib.contextmanager
def _tf32() -> Iterator[None]:
    import torch

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = True
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


@contextlib.contextmanager
def frozen_forward(precision: str, device: Any) -> Iterator[None]:
    """The context of the frozen model's forward on ``device`` (a ``torch.device`` or its
    name): TF32 (``fp32`` on CUDA), autocast to bf16 / fp16 inside :data:`FORWARD_GUARDS`, or
    nothing (``fp32`` elsewhere)."""
    import torch

    check_precision(precision)
    kind = torch.device(device).type
    with contextlib.ExitStack() as stack:
        if precision == "fp32":
            if kind == "cuda":
                stack.enter_context(_tf32())
        else:
            dtype = getattr(torch, _AUTOCAST[precision])
            for guard in FORWARD_GUARDS:
                stack.enter_context(guard(kind, dtype))
            stack.enter_context(torch.autocast(kind, dtype=dtype))
        yield
