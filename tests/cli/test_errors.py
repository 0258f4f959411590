"""Every ``daisy`` subcommand answers a user error like a tool: exit 2, one line, no traceback.

Each case runs ``python -m daisy_upstream <command> ...`` in a fresh interpreter (the way a
user meets it) and makes an error that the command finds before loading a model, so the
whole file takes seconds per command. ``--debug`` / ``DAISY_DEBUG=1`` show the traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from daisy_upstream.cli import SUBCOMMANDS

REPO = Path(__file__).resolve().parents[2]


def _files(tmp: Path) -> None:
    """What the cases point at: an empty folder, a folder of junk audio, an existing output,
    an upstream config with a key the upstream does not know."""
    (tmp / "empty").mkdir()
    (tmp / "junk").mkdir()
    (tmp / "junk" / "a.wav").write_text("not audio")  # a .wav soundfile cannot decode
    (tmp / "exists.pt").write_bytes(b"")
    (tmp / "bad.yaml").write_text("bogus_key: 1\n")


#: command -> its arguments (the comments say which kind of user error); EXPECT: a fragment of the line
CASES: Dict[str, Callable[[Path], List[str]]] = {
    # a folder that is no transformers model
    "convert": lambda t: [str(t / "empty"), "--out", str(t / "c.pt")],
    # a bad value
    "make-corpus": lambda t: [str(t / "corpus"), "--tasks", "asr,nope"],
    "pretrain-tiny": lambda t: ["--steps-iter1", "-1", "--state-dir", str(t / "state")],
    # an existing output without --force
    "train-branches": lambda t: ["-k", str(t / "nope.pt"), "--audio", str(t / "empty"), "--out", str(t / "exists.pt")],
    # no usable audio (every file skipped)
    "calibrate": lambda t: ["-k", str(t / "nope.pt"), "--audio", str(t / "junk"), "--out", str(t / "c.yaml")],
    # a bad config key
    "bench": lambda t: ["-g", str(t / "bad.yaml"), "--out", str(t / "bench")],
    # no audio at all
    "noise-report": lambda t: ["--clean", str(t / "empty"), "--out", str(t / "nr")],
    "table1": lambda t: ["--tasks", "bogus", "--out", str(t / "t1")],
    # a missing file
    "demo": lambda t: ["-k", str(t / "nope.pt"), "--out", str(t / "demo")],
    "profile": lambda t: ["--audio", str(t / "empty"), "--out", str(t / "profile")],
    "submit": lambda t: [f"asr={t / 'empty'}", "--out", str(t / "exists.pt")],
    "export-hidden": lambda t: ["--out", str(t / "exists.pt")],
    "superb-score": lambda t: [str(t / "nope.yaml")],
}
EXPECT = {
    "convert": "without config.json",
    "make-corpus": "unknown task(s) ['nope']",
    "pretrain-tiny": "argument --steps-iter1: must be >= 0, got -1",
    "train-branches": "pass --force",
    "calibrate": "no usable audio",
    "bench": "bogus_key",
    "noise-report": "no audio found",
    "table1": "unknown ['bogus']",
    "demo": "does not exist",
    "profile": "no audio found",
    "submit": "pass --force",
    "export-hidden": "is a file, not a folder",
    "superb-score": "nope.yaml",
}


def _daisy(args: List[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "DAISY_DEBUG"}
    environ.update(OMP_NUM_THREADS="1", **env)
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    return subprocess.run(
        [sys.executable, "-m", "daisy_upstream", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_subcommand_has_a_case():
    """A new subcommand needs its user-error case here."""
    assert sorted(CASES) == sorted(SUBCOMMANDS) == sorted(EXPECT)


@pytest.mark.parametrize("command", sorted(CASES))
def test_user_error_is_one_line_and_exit_2(command, tmp_path):
    _files(tmp_path)
    proc = _daisy([command, *CASES[command](tmp_path)], tmp_path)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"daisy {command}: error: "), lines[0]
    assert EXPECT[command] in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(how, tmp_path):
    _files(tmp_path)
    args = ["make-corpus", str(tmp_path / "corpus"), "--tasks", "asr,nope"]
    proc = _daisy(["--debug", *args], tmp_path) if how == "flag" else _daisy(args, tmp_path, DAISY_DEBUG="1")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ValueError: unknown task(s)" in proc.stderr
