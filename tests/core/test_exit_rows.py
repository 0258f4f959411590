"""Rows leaving the batch (core/exit_rows.py); the loop's use of it: tests/core/test_families.py."""

from __future__ import annotations

import torch

from daisy_upstream.core.exit_rows import ExitRows


def test_rows_leave_and_their_states_are_kept():
    state = torch.arange(4 * 5 * 2, dtype=torch.float32).view(4, 5, 2)  # (B_a, T, D)
    padding = torch.tensor([[False] * n + [True] * (5 - n) for n in (5, 3, 4, 2)])
    rows = ExitRows([5, 3, 4, 2], torch.tensor([5, 3, 4, 2]), padding, frames=5, deepest=6)
    assert rows.scatter(state) is state  # all running: no copy
    keep, before, longest = rows.leave(2, [True, False, True, False], state)
    assert (keep.tolist(), before, longest) == ([1, 3], 4, 3)
    assert rows.active == [1, 3] and rows.lengths.tolist() == [3, 2] and rows.padding.shape == (2, 3)
    assert rows.exit_layers == [2, 6, 2, 6]
    torch.testing.assert_close(rows.exit_hidden[[0, 2]], state[[0, 2]])
    assert not rows.exit_hidden[[1, 3]].any()
    later = torch.ones(2, 3, 2)
    full = rows.scatter(later)
    assert full.shape == (4, 5, 2) and full[[1, 3], :3].eq(1).all() and not full[[0, 2]].any()
    assert rows.leave(4, [True, True], later) is None  # nobody stays
    assert rows.exit_layers == [2, 4, 2, 4]
