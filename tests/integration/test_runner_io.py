"""Running s3prl's runner and reading what it writes (:mod:`daisy_upstream.integration.runner_io`).

The runner checkpoint's layout is s3prl 0.4.18's (``downstream/runner.py``, ``all_states``):
``Optimizer``, ``Step``, ``Epoch``, ``Args`` (the run's ``argparse.Namespace``), ``Config`` and
one entry per trainable module (the DAISY featurizer's under ``Featurizer``, with
``exit_counts``). Metric parsing is tested on real runner outputs in
``tests/evaluation/test_table1.py``.
"""

from __future__ import annotations

import argparse
import sys

import pytest
import torch

from daisy_upstream.integration import runner_io as rio


def _runner_checkpoint(path, featurizer=True):
    states = {
        "Optimizer": {},
        "Step": 7,
        "Epoch": 0,
        "Args": argparse.Namespace(downstream="asr", upstream="daisy_hubert_local", upstream_ckpt="/m.pt"),
        "Config": {"runner": {"total_steps": 7}},
    }
    if featurizer:
        states["Featurizer"] = {"exit_counts": torch.tensor([3, 0, 5]), "weights": torch.zeros(3)}
    torch.save(states, path)
    return path


def test_runner_checkpoint_loads_with_weights_only(tmp_path):
    path = _runner_checkpoint(tmp_path / "states-7.ckpt")
    state = rio.load_runner_checkpoint(path)  # weights_only=True, argparse.Namespace allowed
    assert rio.runner_args(state) == {"downstream": "asr", "upstream": "daisy_hubert_local", "upstream_ckpt": "/m.pt"}
    assert rio.exit_counts(path) == [3, 0, 5] == rio.exit_counts(state)


def test_exit_counts_missing_and_checkpoint_missing(tmp_path):
    path = _runner_checkpoint(tmp_path / "stock.ckpt", featurizer=False)
    with pytest.raises(ValueError, match="no DAISY exit counts"):
        rio.exit_counts(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rio.load_runner_checkpoint(tmp_path / "nope.ckpt")


def test_subprocess_runner_logs_echoes_and_fails_with_the_tail(tmp_path, capfd):
    log = tmp_path / "logs" / "run.log"
    rio.subprocess_runner([sys.executable, "-c", "print('hello runner')"], log, threads=1, echo=True)
    assert "hello runner" in capfd.readouterr().out
    assert "hello runner" in log.read_text()
    with pytest.raises(rio.RunnerFailed, match=r"exit 3\); full log") as failed:
        rio.subprocess_runner([sys.executable, "-c", "print('last words'); raise SystemExit(3)"], log)
    assert "last words" in str(failed.value)
    assert log.read_text().count("$ ") == 2  # both calls appended, each with its command line


def test_runner_command_runs_s3prls_runner_in_a_fresh_interpreter(tmp_path):
    """The command really starts s3prl's run_downstream (its own argument parser answers),
    in this interpreter, with none of the third-party warnings the daisy commands filter."""
    import os
    import subprocess

    cmd = rio.runner_command(["-h", tmp_path / "ignored"])
    assert cmd[0] == sys.executable and cmd[-1] == str(tmp_path / "ignored")  # paths become strings
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(rio.Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("usage: run_downstream.py") and "-u UPSTREAM" in proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr[-3000:]
