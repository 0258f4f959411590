"""``--precision``: the arithmetic of the frozen model's forward in stage 1 and calibration.

``fp32`` runs the frozen model in float32; on CUDA, matmuls and convolutions may then use
TF32 (:func:`allow_tf32`). ``bf16`` / ``fp16`` run its forward under ``torch.autocast``
(CUDA, and the CPU, where bf16 autocast works too). Whatever the forward's precision, the
hidden states leave it as float32: the branches, their entropies and the stage-1 targets are
computed in float32 outside autocast. How often bf16 changes the targets and the exit layers
is measured in ``docs/training.md``.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Union

import torch

from daisy_upstream.integration.compat import cpu_bf16_conv_guard

__all__ = ["PRECISIONS", "allow_tf32", "check_precision", "frozen_forward"]

PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> None:
    """Raises ValueError for a precision that is not one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown --precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


@contextlib.contextmanager
def frozen_forward(precision: str, device: Union[str, torch.device]) -> Iterator[None]:
    """The context to run the frozen model's forward in: autocast to bf16/fp16, or nothing.

    On the CPU, bf16 runs with oneDNN off (:func:`~daisy_upstream.integration.compat.cpu_bf16_conv_guard`:
    its bf16 grouped convolution is wrong for the positional convolution).
    """
    check_precision(precision)
    if precision == "fp32":
        yield
        return
    kind, dtype = torch.device(device).type, _AUTOCAST[precision]
    with cpu_bf16_conv_guard(kind, dtype), torch.autocast(kind, dtype=dtype):
        yield


def allow_tf32(precision: str, device: Union[str, torch.device]) -> None:
    """With ``fp32`` on CUDA, let float32 matmuls and cuDNN convolutions use TF32 (process-wide)."""
    if precision == "fp32" and torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
