"""Argument types shared by the subcommands: one ``type=`` per kind of value, so that every
command checks ``--threads``, rho, counts and sizes alike (argparse then answers a bad value
with one line and exit 2, before any work)."""

from __future__ import annotations

import argparse
from typing import Callable, Optional

__all__ = [
    "add_loader",
    "add_precision",
    "at_least_2",
    "budget",
    "device",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "rho",
    "set_threads",
    "threads",
    "unit_interval",
]


def _number(cast: Callable[[str], float], check: Callable[[float], bool], what: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if cast is int else 'a number'}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


#: an integer >= 0
non_negative_int = _number(int, lambda v: v >= 0, ">= 0")
#: an integer >= 1
positive_int = _number(int, lambda v: v >= 1, ">= 1")
#: an integer >= 2 (k-means clusters)
at_least_2 = _number(int, lambda v: v >= 2, ">= 2")
#: a number > 0
positive_float = _number(float, lambda v: v > 0, "> 0")
#: a number in [0, 1]
unit_interval = _number(float, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
#: a compute budget: the fraction of the full model's MACs to spend, in (0, 1]
budget = _number(float, lambda v: 0 < v <= 1, "a fraction in (0, 1]")
#: rho of Eq. 3 (tau = (E_max + E_min) / 2 * rho): in [0, 1]
rho = unit_interval
#: torch CPU threads: an integer >= 0, 0 = torch's default
threads = non_negative_int


def device(name: str) -> str:
    """``--device``: a torch device this machine has (``cpu``, ``cuda``, ``cuda:N``, ``mps``),
    else one line saying what to use. Returns the name as given."""
    import torch

    try:
        parsed = torch.device(name)
    except (RuntimeError, TypeError):
        raise argparse.ArgumentTypeError(f"{name!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{name}: CUDA is not available on this machine; use --device cpu")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise argparse.ArgumentTypeError(
                f"{name}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}"
            )
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{name}: MPS is not available on this machine; use --device cpu")
    elif parsed.type != "cpu":
        raise argparse.ArgumentTypeError(f"{name}: daisy runs on cpu, cuda or mps")
    return name


def add_precision(parser: argparse.ArgumentParser, default: Optional[str] = "fp32") -> None:
    """``--precision fp32|bf16|fp16``: the frozen model's forward (daisy_upstream.core.precision)."""
    from daisy_upstream.core.precision import PRECISIONS

    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=default,
        help="the frozen model's forward: fp32 (TF32 matmuls on CUDA), bf16 or fp16 autocast; "
        "branches, entropies and targets stay fp32 (default: %s)" % (default or "the config's"),
    )


def add_loader(parser: argparse.ArgumentParser, work: str) -> None:
    """``--workers N`` and ``--prefetch N``: the DataLoader that reads the audio
    (daisy_upstream.training.batch_feed); ``work`` says what the workers do."""
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        default=0,
        help=f"DataLoader processes {work} (default 0: in this process, one batch at a time; on a GPU use several)",
    )
    parser.add_argument("--prefetch", type=positive_int, default=2, help="batches each worker loads ahead (default 2)")


def set_threads(count: Optional[int]) -> None:
    """``torch.set_num_threads(count)`` unless ``count`` is None or 0 (torch's default)."""
    if count:
        import torch

        torch.set_num_threads(count)
