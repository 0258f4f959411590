"""The arithmetic of the frozen model's forward: ``fp32``, ``bf16`` or ``fp16``.

``fp32`` runs the model in float32; on CUDA its matmuls and cuDNN convolutions may use TF32
inside the forward (the flags are set for the forward and restored after it, after the last
one when forwards overlap in threads, as DataParallel's replicas do). ``bf16`` /
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
import threading
from typing import Any, Callable, ContextManager, Iterator, List, Tuple

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


_TF32_LOCK = threading.Lock()
_tf32_users = 0  # forwards inside _tf32() now (DataParallel runs one per replica, in threads)
_tf32_saved: Tuple[bool, bool] = (False, False)  # the flags before the first of them


@contextlib.contextmanager
def _tf32() -> Iterator[None]:
    """TF32 on for the forward; the caller's flags back once the last overlapping forward ends
    (a save / restore per thread would leave TF32 on when the threads' forwards interleave)."""
    import torch

    global _tf32_users, _tf32_saved
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    with _TF32_LOCK:
        if _tf32_users == 0:
            _tf32_saved = matmul.allow_tf32, cudnn.allow_tf32
            matmul.allow_tf32 = cudnn.allow_tf32 = True
        _tf32_users += 1
    try:
        yield
    finally:
        with _TF32_LOCK:
            _tf32_users -= 1
            if _tf32_users == 0:
                matmul.allow_tf32, cudnn.allow_tf32 = _tf32_saved


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
