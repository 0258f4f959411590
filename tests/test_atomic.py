"""Atomic writing: the target appears complete or not at all, with normal permissions."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

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


#: a real OS write error without a full disk: the process may not write files over 4 KiB (EFBIG),
#: as a full disk refuses the next block; SIGXFSZ ignored so the write returns the error
_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
from daisy_upstream.atomic import OutputFailed
try:
    {write}
except OutputFailed as error:
    print(error)
    sys.exit(3)
"""


@pytest.mark.parametrize(
    "write",
    [
        # torch's stream writer reported only "unexpected pos" / "PytorchStreamWriter failed writing file"
        "import torch; from daisy_upstream.atomic import atomic_torch_save; "
        "atomic_torch_save({'w': torch.zeros(100000)}, sys.argv[1])",
        # libsndfile reported "LibsndfileError: Error : unspecified"
        "import numpy as np; from daisy_upstream.audio.write import write_audio; "
        "write_audio(sys.argv[1], np.random.default_rng(0).uniform(-0.5, 0.5, 160000).astype(np.float32))",
    ],
    ids=["torch", "soundfile"],
)
def test_a_write_the_system_refuses_is_one_line_naming_the_target(write, tmp_path):
    target = tmp_path / "out" / ("model.pt" if "torch" in write else "a.flac")
    code = _LIMITED.format(write=write)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path])}
    proc = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, env=env)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert (
        proc.stdout.strip()
        == f"cannot write {target}: File too large (the file is larger than this system allows here; write elsewhere)"
    )
    assert list(tmp_path.iterdir()) == []  # no temporary file, and the folder made for it removed
