"""The bookkeeping of an early-exit batch: which rows still run, and their states as they leave.

:class:`ExitRows` keeps the running rows on the host (indices into the batch, frame counts, the
exit layer of each row), so that removing rows needs no host sync and no boolean-mask indexing,
and gathers each row's state at its exit layer as it leaves.

Shapes: ``B`` utterances, ``B_a`` rows still running, ``T`` frames, ``D`` model width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from daisy_upstream.core.branches import frame_weights

__all__ = ["ExitRows", "LoopState"]


class ExitRows:
    """The rows of a batch of ``B`` that still run, kept as they leave at their exit layers.

    Args:
        counts: ``B`` valid frames per row (host ints).
        lengths: ``(B,)`` the same counts on the device.
        padding: ``(B, T)`` True on frames past a row's end, or None where no row is padded.
        frames: ``T``, the batch's frames.
        deepest: the layer every row stops at unless it exits earlier.
    """

    def __init__(
        self, counts: List[int], lengths: Tensor, padding: Optional[Tensor], frames: int, deepest: int
    ) -> None:
        self.batch, self.frames = len(counts), frames
        self.active: List[int] = list(range(self.batch))  # batch index of each running row
        self.counts: List[int] = list(counts)  # valid frames of each running row
        self.rows = torch.arange(self.batch, device=lengths.device)  # the same indices on the device
        self.lengths = lengths  # (B_a,)
        self.padding = padding  # (B_a, T_a) or None: no running row is padded
        self.exit_layers: List[int] = [deepest] * self.batch
        self.exit_hidden: Optional[Tensor] = None  # (B, T, D): states of rows that left, as they leave
        self._weights: Optional[Tensor] = None  # frame_weights of the running rows (None: not made)

    def weights(self, groups: int = 1) -> Optional[Tensor]:
        """``(B_a, T_a)`` the branch mean's frame weights of the running rows, made once per set of
        rows (:func:`~daisy_upstream.core.branches.frame_weights`); None while no running row is padded."""
        if self.padding is None:
            return None
        if self._weights is None:
            self._weights = frame_weights(self.lengths, self.padding.size(1), groups)
        return self._weights

    def scatter(self, state: Tensor) -> Tensor:
        """``(B_a, T_a, D)`` -> ``(B, T, D)``: zeros for rows that left (no copy while all run)."""
        if len(self.active) == self.batch:
            return state
        full = state.new_zeros(self.batch, self.frames, state.size(-1))
        full[:, : state.size(1)].index_copy_(0, self.rows, state)
        return full

    def leave(self, layer: int, stop: List[bool], state: Tensor) -> Optional[Tuple[Tensor, int, int]]:
        """Rows with ``stop`` leave at ``layer``; ``state`` ``(B_a, T_a, D)`` is their state there.

        Returns None when nobody stays, else ``(keep, before, longest)``: the ``(B_a',)``
        device indices of the staying rows among the ``before`` running ones, and the longest
        staying row's frames (what the caller trims its time axis to).
        """
        leaving = [i for i, s in enumerate(stop) if s]
        staying = [i for i, s in enumerate(stop) if not s]
        for i in leaving:
            self.exit_layers[self.active[i]] = layer
        if self.exit_hidden is None:
            self.exit_hidden = state.new_zeros(self.batch, self.frames, state.size(-1))
        gone = torch.tensor(leaving, device=self.rows.device)
        self.exit_hidden[:, : state.size(1)].index_copy_(
            0, self.rows.index_select(0, gone), state.index_select(0, gone)
        )
        if not staying:
            return None
        before = len(self.active)
        self.active = [self.active[i] for i in staying]
        self.counts = [self.counts[i] for i in staying]
        keep = torch.tensor(staying, device=self.rows.device)
        self.rows, self.lengths = self.rows.index_select(0, keep), self.lengths.index_select(0, keep)
        longest = max(self.counts)
        self._weights = None
        if self.padding is not None:
            self.padding = self.padding[:, :longest].index_select(0, keep) if min(self.counts) < longest else None
        return keep, before, longest

    def finish(self, last: Optional[Tensor]) -> Optional[Tensor]:
        """Put the rows that ran to the end (``last``: their final state) into ``exit_hidden``."""
        if last is not None and self.exit_hidden is not None:
            self.exit_hidden[:, : last.size(1)].index_copy_(0, self.rows, last)
        return self.exit_hidden


@dataclass
class LoopState:
    """The plain loop's state: ``hidden[k]`` (layer ``k``'s output, None where not run),
    ``kept[k]`` (branch inputs asked for), the running rows and the last layer's state."""

    hidden: List[Optional[Tensor]]
    kept: List[Optional[Tensor]]
    running: ExitRows
    padded: bool  # some row of the batch is shorter than the batch
    last: Optional[Tensor] = None
    entropies: Optional[Tensor] = None

    def keep(self, k: int, state: Tensor, output: Tensor, ffn: Optional[Tensor], branch_input: Optional[str]) -> None:
        """Layer ``k``'s state (and the branch input asked for) into the batch's outputs."""
        self.hidden[k] = self.running.scatter(state)
        if branch_input is not None:
            self.kept[k] = (
                self.hidden[k]
                if branch_input == "hidden_states"
                else self.running.scatter(output if branch_input == "layer_output" else ffn.transpose(0, 1))
            )
