"""The arithmetic of the frozen model's forward: ``fp32``, ``bf16`` or ``fp16``.

``fp32`` runs the model in float32; on CUDA its matmuls and cuDNN convolutions may use TF32
inside the forward (the flags are set for the forward and restored after it, after the last
one when forwards overlap in threads, as DataParallel's replicas do). ``bf16`` /
``fp16`` run the forward under ``torch.autocast`` (CUDA, and the CPU, where bf16 autocast
works too), which casts every weight and many activations per op: on a forward bound by
launching kernels, these casts cost more than the bf16 arithmetic saves. ``bf16-weights``
runs a copy of the model whose weights were cast to bf16 once (:func:`cast_copy`, made by
the early-exit model at its first forward and kept), without autocast: no per-op casts,
bf16 activations; the hidden states are cast to float32 once per layer as they leave. Whatever the precision, what leaves the forward is float32 and the exit
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

__all__ = [
    "FORWARD_GUARDS",
    "PRECISIONS",
    "CastCache",
    "cast_copy",
    "check_precision",
    "frozen_forward",
    "weight_dtype",
]

#: the precisions of the frozen forward
PRECISIONS = ("fp32", "bf16", "fp16", "bf16-weights")
_AUTOCAST = {"bf16": "bfloat16", "fp16": "float16"}  # torch dtype names
_WEIGHTS = {"bf16-weights": "bfloat16"}  # precisions that run a copy of the model cast once

#: ``guard(device_type: str, dtype: torch.dtype) -> context manager`` entered around every autocast forward
FORWARD_GUARDS: List[Callable[[str, Any], ContextManager]] = []


def check_precision(precision: str) -> None:
    """Raises ValueError for a precision that is not one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


def weight_dtype(precision: str) -> Any:
    """The dtype a precision casts the model's weights to once (``bf16-weights``), else None."""
    import torch

    check_precision(precision)
    return getattr(torch, _WEIGHTS[precision]) if precision in _WEIGHTS else None


def cast_copy(model: Any, dtype: Any) -> Any:
    """A frozen copy of ``model`` (eval mode, no gradients) with its floating tensors in ``dtype``.

    ``torch.nn.utils.weight_norm`` (the positional convolution of every family) keeps its
    ``weight`` as a computed, non-leaf attribute that ``copy.deepcopy`` refuses; it is copied
    detached here (the copy recomputes it from ``weight_g`` / ``weight_v`` before each call)."""
    import copy

    import torch

    memo = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo).to(dtype).eval().requires_grad_(False)


class CastCache:
    """The model a forward runs under a precision: the model itself, or (``bf16-weights``) its
    :func:`cast_copy`, made once and again only when the weights change (a load bumps their
    versions; a move to another device, train / eval)."""

    def __init__(self) -> None:
        self.key: Any = None
        self.model: Any = None

    def model_for(self, model: Any, precision: str) -> Tuple[Any, bool]:
        """``(the model to run, whether it was made just now)``."""
        dtype = weight_dtype(precision)
        if dtype is None:
            return model, False
        params = list(model.parameters())
        key = (dtype, params[0].device, model.training, sum(p._version for p in params))
        if key == self.key:
            return self.model, False
        self.key, self.model = key, cast_copy(model, dtype)
        return self.model, True


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
    name): TF32 (``fp32`` on CUDA), autocast to bf16 / fp16 inside :data:`FORWARD_GUARDS`,
    only the guards (``bf16-weights``: the weights are bf16 already), or nothing (``fp32``
    elsewhere)."""
    import torch

    check_precision(precision)
    kind = torch.device(device).type
    with contextlib.ExitStack() as stack:
        if precision == "fp32":
            if kind == "cuda":
                stack.enter_context(_tf32())
        else:
            dtype = getattr(torch, {**_AUTOCAST, **_WEIGHTS}[precision])
            for guard in FORWARD_GUARDS:
                stack.enter_context(guard(kind, dtype))
            if precision in _AUTOCAST:
                stack.enter_context(torch.autocast(kind, dtype=dtype))
        yield
