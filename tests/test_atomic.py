"""Atomic writing: the target appears complete or not at all, with normal permissions."""

from __future__ import annotations

import os
import stat

import pytest

from daisy_upstream.atomic import atomic_path, atomic_save_figure, atomic_write_json, atomic_write_text


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "table.md"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half writ")
            raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]


def test_mode_follows_umask_and_folders_are_made(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_json(tmp_path / "a" / "b.json", {"x": 1})
    finally:
        os.umask(old)
    path = tmp_path / "a" / "b.json"
    assert path.read_text() == '{\n  "x": 1\n}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_figure_format_from_suffix(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    atomic_save_figure(fig, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.get_fignums()  # closed
