"""A Table 1 training cell stopped and resumed ends where an uninterrupted one does.

s3prl's real runner (a subprocess per training, as ``daisy table1`` runs it) trains the ASR
downstream on the tiny generated LibriSpeech layout of ``daisy_upstream.testing.superb``
(4 training utterances in batches of 1: 4 batches an epoch, so step 2 stops mid-epoch). One table trains 6 steps in one go; another
trains 2 steps, is moved to another folder, is then asked for 6 and resumes from
``states-2.ckpt`` (whose recorded paths are the old folder's); a third is killed
while it trains and run again. All three end with the same downstream weights, optimizer
step, learning rate (the ASR schedule's drop, moved to step 3, falls after the resumes), exit
counts and test-set hypotheses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.evaluation import table1 as t1
from daisy_upstream.evaluation.table1.table import newest_checkpoint
from daisy_upstream.integration.plugin import s3prl_configs
from daisy_upstream.integration.runner_io import load_runner_checkpoint
from daisy_upstream.testing import make_random_checkpoint
from daisy_upstream.testing.superb import make_librispeech


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    ckpt = root / "tiny.pt"
    atomic_torch_save(make_random_checkpoint(num_layers=2, layer_entropy=[2.0, 1.0]), ckpt)
    assert make_librispeech(root / "asr")["train-clean-100"] == 4  # 4 batches of 1: step 2 is mid-epoch
    layout = {
        "libri_root": str(root / "asr" / "LibriSpeech"),
        "bucket_file": str(root / "asr" / "len_for_bucket"),
        "dict_path": str(s3prl_configs() / "asr" / "char.dict"),
    }
    return root, ckpt, layout


def _config(layout: dict, steps: int) -> dict:
    with open(s3prl_configs() / "asr" / "config.yaml") as f:
        base = yaml.safe_load(f)
    config = t1.prepare_task_config("asr", base, steps, "small", layout)
    config["downstream_expert"]["datarc"].update(batch_size=1, num_workers=0)
    config["downstream_expert"]["modelrc"].update(project_dim=16)
    config["downstream_expert"]["modelrc"]["RNNs"].update(dim=[16, 16], dropout=[0.1, 0.1])  # randomness in each step
    config["scheduler"]["milestones"] = [3]  # the learning rate drops after the resumes at step 2
    return config


def _table(root: Path, ckpt: Path, layout: dict, name: str, steps: int) -> "t1.Table1":
    return t1.Table1(root / name, ckpt, {"asr": _config(layout, steps)}, fixed_layer=1, log=lambda m: None)


def _final(table: "t1.Table1", steps: int) -> dict:
    state = load_runner_checkpoint(table.train_dir("asr", "full") / f"states-{steps}.ckpt")
    return {
        "step": state["Step"],
        "downstream": state["Downstream"],
        "counts": state["Featurizer"]["exit_counts"],
        "adam_steps": [s["step"] for s in state["Optimizer"]["state"].values()],
        "lr": state["Optimizer"]["param_groups"][0]["lr"],
    }


def _assert_same(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] and torch.equal(a["counts"], b["counts"]) and a["lr"] == b["lr"]
    assert [float(x) for x in a["adam_steps"]] == [float(x) for x in b["adam_steps"]]
    assert a["downstream"].keys() == b["downstream"].keys()
    for key in a["downstream"]:
        torch.testing.assert_close(a["downstream"][key], b["downstream"][key], rtol=0, atol=1e-6, msg=key)


def test_interrupted_and_extended_trainings_end_as_an_uninterrupted_one(setup):
    root, ckpt, layout = setup
    once = _table(root, ckpt, layout, "once", 6)
    once.claim()
    once._train("asr", "full")
    reference = _final(once, 6)
    assert reference["step"] == 6 and reference["lr"] == pytest.approx(
        t1.SMALL_LR["asr"] * t1.SMALL_SCHEDULES["asr"]["gamma"]
    )  # the schedule ran

    # trained to 2 steps (mid-epoch), then asked for 6 in the same folder: resumed from states-2
    short = _table(root, ckpt, layout, "extended", 2)
    short.claim()
    short._train("asr", "full")
    assert newest_checkpoint(short.train_dir("asr", "full")).name == "states-2.ckpt"
    # ... and the folder moved meanwhile (another checkout or machine): the resumed run writes here
    (root / "extended").rename(root / "moved")
    longer = _table(root, ckpt, layout, "moved", 6)
    longer.claim()
    result = longer._train("asr", "full")
    assert result["resumed_from_step"] == 2
    _assert_same(_final(longer, 6), reference)
    log = (longer.task_dir("asr") / "train_full.log").read_text()
    assert "-e" in log.split("$ ")[-1].split() and "total_steps=6" in log.split("$ ")[-1]

    # a third run is killed once it has saved a checkpoint, then run again through the CLI's loop
    killed = _table(root, ckpt, layout, "killed", 6)
    killed.claim()
    expdir = killed.train_dir("asr", "full")
    code = (
        "import sys, json; from pathlib import Path; from daisy_upstream.evaluation.table1 import Table1; "
        "Table1(Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]), fixed_layer=1, "
        "log=lambda m: None)._train('asr', 'full')"
    )
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": repo, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(killed.out), str(ckpt), json.dumps({"asr": _config(layout, 6)})],
        env=env,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if newest_checkpoint(expdir) is not None and not (expdir / "states-6.ckpt").exists():
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.wait()
    stopped = newest_checkpoint(expdir)
    assert stopped is not None
    killed._train("asr", "full")
    _assert_same(_final(killed, 6), reference)


def test_finished_cells_rerun_only_what_more_steps_change(setup, monkeypatch):
    """Raising the steps of a finished table retrains (by resuming) and re-evaluates; nothing
    else; the same steps again run nothing."""
    from daisy_upstream.evaluation.table1 import table as t1_table

    root, ckpt, layout = setup
    calls = []
    monkeypatch.setattr(t1_table, "time_rows", lambda *a, **k: calls.append("time") or {"modes": {}})
    monkeypatch.setattr(t1_table, "test_audio_files", lambda task, config: [])
    monkeypatch.setattr(t1_table, "exit_counts", lambda ckpt: [0, 1])
    monkeypatch.setattr(t1_table, "parse_metric", lambda task, expdir: {"wer": 1.0})
    monkeypatch.setattr(t1_table.Table1, "_evaluate", lambda self, task, row: calls.append(row.key) or {"metric": {}})
    monkeypatch.setattr(
        t1_table.Table1,
        "_train",
        lambda self, task, run: (
            calls.append(f"train {run} {self.steps[task]}") or {"checkpoint": str(self.final_checkpoint(task, run))}
        ),
    )
    _table(root, ckpt, layout, "cells", 2).run()
    assert calls.count("time") == 1 and sum(c.startswith("train") for c in calls) == 4 and len(calls) == 13
    calls.clear()
    _table(root, ckpt, layout, "cells", 2).run()
    assert calls == []
    _table(root, ckpt, layout, "cells", 4).run()
    assert sorted(c for c in calls if c.startswith("train")) == [
        f"train {r} 4" for r in ("fixed", "full", "rho0.7", "rho1.0")
    ]
    assert len(calls) == 13
    settings = json.loads((root / "cells" / "settings.json").read_text())
    assert settings["task_configs"]["asr"]["runner"]["total_steps"] == 4


def test_a_cell_is_run_by_one_process(tmp_path):
    """The lock survives the cell clearing its own folder, and a dead owner's lock is taken over."""
    from daisy_upstream.evaluation.table1.lock import CellLock

    result = tmp_path / "runs" / "asr" / "train_full" / "cell.json"
    result.parent.mkdir(parents=True)
    with CellLock(result) as held:
        assert held
        import shutil

        shutil.rmtree(result.parent)  # what a fresh training does to its folder
        code = (
            "import sys; from daisy_upstream.evaluation.table1.lock import CellLock; "
            "c = CellLock(sys.argv[1]); sys.exit(0 if (c.__enter__() is False and CellLock.held_elsewhere(sys.argv[1])) else 1)"
        )
        assert subprocess.run([sys.executable, "-c", code, str(result)]).returncode == 0
    assert not CellLock.lock_path(result).exists()
    # a lock left by a process that died is stale
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    CellLock.lock_path(result).write_text(f"{__import__('socket').gethostname()} {dead.pid}\n")
    assert not CellLock.held_elsewhere(result)
    with CellLock(result) as held:
        assert held
