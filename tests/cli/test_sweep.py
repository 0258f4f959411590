"""The CLI surface swept with bad inputs (issue 18): every subcommand x {missing file, empty
folder, truncated checkpoint, bad YAML, existing output without --force, --force onto a folder
or file of a user's own}. Each answer is exit 2 and one line ``daisy CMD: error: ...``, with no
traceback, and every file that existed before is byte-identical afterwards (nothing created,
nothing removed).

The commands run in this process (``daisy_upstream.cli.main``), as one fresh interpreter per
case would take minutes; ``tests/cli/test_errors.py`` runs one case per command the way a
user meets it (``python -m daisy_upstream``). ``None`` marks a case a command has no input
for (say which in the comment); every command has the cases it can have.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from daisy_upstream.cli import SUBCOMMANDS, main

HELDOUT = Path(__file__).resolve().parents[1] / "data" / "heldout_clips"
CASES = ("missing", "empty", "truncated", "bad_yaml", "exists", "force_foreign")


def _setup(tmp: Path, ckpt: Path) -> None:
    """The user's folder: a checkpoint, audio, an empty folder, a folder and files of their own."""
    (tmp / "model.pt").write_bytes(ckpt.read_bytes())
    data = ckpt.read_bytes()
    (tmp / "trunc.pt").write_bytes(data[: len(data) // 2])  # a download cut short
    (tmp / "audio").mkdir()
    for clip in sorted(HELDOUT.glob("*.wav"))[:3]:
        shutil.copy(clip, tmp / "audio" / clip.name)
    (tmp / "empty").mkdir()
    (tmp / "bad.yaml").write_text("rho: [0.7, 1.0\nstrategy: none\n")  # an unclosed flow sequence
    (tmp / "metrics.yaml").write_text("SID_acc: 80.5\n")
    (tmp / "metrics.json").write_text('{"SID_acc": 80.5, "ASR_wer": ')  # a JSON file cut short
    mine = tmp / "mine"
    (mine / "runs").mkdir(parents=True)
    (mine / "notes.txt").write_text("months of experiments\n")
    (mine / "runs" / "states-1000.ckpt").write_bytes(b"\x80\x04 a user's checkpoint")
    (tmp / "mine.json").write_text('{"my": "results"}\n')
    (tmp / "mine.pt").write_bytes(b"a user's model")
    (tmp / "mine.zip").write_bytes(b"PK a user's zip")


# command -> case -> arguments (None: the command has no input of that kind)
ARGS: Dict[str, Dict[str, Optional[List[str]]]] = {
    "convert": {  # input: a checkpoint file or a transformers folder; no YAML
        "missing": ["missing.pt", "--out", "c.pt"],
        "empty": ["empty", "--out", "c.pt"],
        "truncated": ["trunc.pt", "--out", "c.pt"],
        "bad_yaml": None,
        "exists": ["model.pt", "--out", "mine.pt"],
        "force_foreign": ["model.pt", "--out", "mine.pt", "--force"],
    },
    "make-corpus": {  # no input files: only the output folder can be wrong
        "missing": None,
        "empty": None,
        "truncated": None,
        "bad_yaml": None,
        "exists": ["mine", "--hours", "0.01"],
        "force_foreign": [".", "--hours", "0.01"],  # no --force: the current folder instead
    },
    "pretrain-tiny": {  # a resumable working folder; its inputs are a corpus and its own state
        "missing": ["--plot", "p.png", "--state-dir", "missing"],
        "empty": ["--plot", "p.png", "--state-dir", "empty"],
        "truncated": None,
        "bad_yaml": None,
        "exists": ["--plot", "mine.pt", "--state-dir", "mine"],
        "force_foreign": None,
    },
    "train-branches": {
        "missing": ["-k", "missing.pt", "--audio", "audio", "--out", "o.pt"],
        "empty": ["-k", "model.pt", "--audio", "empty", "--out", "o.pt"],
        "truncated": ["-k", "trunc.pt", "--audio", "audio", "--out", "o.pt"],
        "bad_yaml": ["-k", "bad.yaml", "--audio", "audio", "--out", "o.pt"],
        "exists": ["-k", "model.pt", "--audio", "audio", "--out", "mine.pt"],
        "force_foreign": ["-k", "model.pt", "--audio", "audio", "--out", "mine.pt", "--force"],
    },
    "calibrate": {
        "missing": ["-k", "missing.pt", "--audio", "audio", "--out", "c.yaml"],
        "empty": ["-k", "model.pt", "--audio", "empty", "--out", "c.yaml"],
        "truncated": ["-k", "trunc.pt", "--audio", "audio", "--out", "c.yaml"],
        "bad_yaml": ["-k", "model.pt", "--s3prl-config", "bad.yaml", "--split", "test", "--out", "c.yaml"],
        "exists": ["-k", "model.pt", "--audio", "audio", "--out", "mine.json"],
        "force_foreign": ["-k", "model.pt", "--audio", "audio", "--out", "mine.json", "--force"],
    },
    "bench": {
        "missing": ["-k", "missing.pt", "--out", "b"],
        "empty": ["-k", "empty", "--out", "b"],
        "truncated": ["-k", "trunc.pt", "--out", "b", "--utterances", "2"],
        "bad_yaml": ["-g", "bad.yaml", "--out", "b"],
        "exists": ["--out", "mine"],
        "force_foreign": ["--out", "mine", "--force"],
    },
    "noise-report": {
        "missing": ["-k", "missing.pt", "--out", "nr"],
        "empty": ["--clean", "empty", "--out", "nr"],
        "truncated": ["-k", "trunc.pt", "--clean", "audio", "--max-clips", "2", "--out", "nr"],
        "bad_yaml": ["-g", "bad.yaml", "--out", "nr"],
        "exists": ["--out", "mine"],
        "force_foreign": ["--out", "mine", "--force"],
    },
    "table1": {  # a resumable working folder (issue 19's); its inputs
        "missing": ["-k", "missing.pt", "--out", "t1"],
        "empty": ["--corpus", "empty", "--out", "t1"],
        "truncated": ["-k", "trunc.pt", "--out", "t1"],
        "bad_yaml": ["--data-config", "asr=bad.yaml", "--out", "t1"],
        "exists": ["--out", "mine"],
        "force_foreign": ["--out", "."],  # no --force (it continues in its own working folder): the current folder
    },
    "demo": {  # a working folder (re-run to continue): no --force
        "missing": ["-k", "missing.pt", "--out", "d"],
        "empty": ["-k", "empty", "--out", "d"],
        "truncated": ["-k", "trunc.pt", "--out", "d"],
        "bad_yaml": ["--task-config", "bad.yaml", "--out", "d"],
        "exists": ["--out", "mine"],
        "force_foreign": ["--out", "."],  # no --force: the current folder instead
    },
    "profile": {
        "missing": ["-k", "missing.pt", "--out", "p"],
        "empty": ["--audio", "empty", "--out", "p"],
        "truncated": ["-k", "trunc.pt", "--audio", "audio", "--out", "p"],
        "bad_yaml": ["-g", "bad.yaml", "--out", "p"],
        "exists": ["--out", "mine"],
        "force_foreign": ["--out", "mine", "--force"],
    },
    "submit": {  # inputs: runner experiment folders
        "missing": ["asr=missing", "--out", "p.zip"],
        "empty": ["asr=empty", "--out", "p.zip"],
        "truncated": None,
        "bad_yaml": None,
        "exists": ["asr=empty", "--out", "mine.zip"],
        "force_foreign": ["asr=empty", "--out", "mine.zip", "--force"],
    },
    "export-hidden": {
        "missing": ["-k", "missing.pt", "--out", "eh"],
        "empty": ["-k", "empty", "--out", "eh"],
        "truncated": ["-k", "trunc.pt", "--out", "eh"],
        "bad_yaml": ["-g", "bad.yaml", "--out", "eh"],
        "exists": ["--out", "mine"],
        "force_foreign": ["--out", "mine", "--force"],
    },
    "superb-score": {  # inputs: a metrics file (no checkpoint: a metrics file cut short instead)
        "missing": ["missing.yaml"],
        "empty": ["empty"],
        "truncated": ["metrics.json"],
        "bad_yaml": ["bad.yaml"],
        "exists": ["metrics.yaml", "--json", "mine.json"],
        "force_foreign": ["metrics.yaml", "--json", "mine.json", "--force"],
    },
}


def _snapshot(root: Path) -> Dict[str, Optional[bytes]]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def test_every_subcommand_and_case_is_listed():
    assert sorted(ARGS) == sorted(SUBCOMMANDS)
    assert all(tuple(cases) == CASES for cases in ARGS.values())


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", sorted(ARGS))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(command, case, tmp_path, tiny_ckpt, monkeypatch, capsys):
    args = ARGS[command][case]
    if args is None:
        pytest.skip(f"{command} has no input of this kind (see ARGS)")
    user = tmp_path / "user"
    user.mkdir()
    _setup(user, tiny_ckpt)
    monkeypatch.chdir(user)
    before = _snapshot(user)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = main([command, *args])
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"daisy {command}: error: "), err
    assert "Traceback" not in err
    assert _snapshot(user) == before, f"{command} {case}: files changed, created or removed"


def _has_device(command: str) -> bool:
    import argparse
    import importlib

    parser = argparse.ArgumentParser()
    importlib.import_module(f"daisy_upstream.cli.{SUBCOMMANDS[command][0]}").add_arguments(parser)
    return any("--device" in action.option_strings for action in parser._actions)


DEVICE_COMMANDS = [c for c in sorted(SUBCOMMANDS) if _has_device(c)]


@pytest.mark.parametrize("device", ["cuda:99", "tpu", "nonsense"])
@pytest.mark.parametrize("command", DEVICE_COMMANDS)
def test_an_unavailable_device_is_one_line_exit_2(command, device, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:  # argparse's answer (cli/args.py: device), before any work
        main([command, *REQUIRED.get(command, []), "--device", device])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"daisy {command}: error: argument --device: "), lines
    assert list(tmp_path.iterdir()) == []


#: the required arguments of commands with --device (the device is checked before they are used)
REQUIRED = {
    "train-branches": ["-k", "m.pt", "--audio", "a", "--out", "o.pt"],
    "calibrate": ["-k", "m.pt", "--audio", "a", "--out", "c.yaml"],
}


def test_device_commands_are_found():
    assert {"bench", "calibrate", "demo", "noise-report", "profile", "table1", "train-branches"} <= set(DEVICE_COMMANDS)


@pytest.mark.parametrize("stats", ["model.pt", "trunc.pt", "bad.yaml", "missing.ckpt"])
@pytest.mark.parametrize("command", ["profile", "export-hidden"])
def test_stats_that_is_not_a_runner_checkpoint_is_one_line(command, stats, tmp_path, tiny_ckpt, monkeypatch, capsys):
    """--stats given a DAISY checkpoint, a truncated file, a YAML, nothing (issue 18: was a traceback)."""
    user = tmp_path / "user"
    user.mkdir()
    _setup(user, tiny_ckpt)
    monkeypatch.chdir(user)
    before = _snapshot(user)
    assert main([command, "-k", "model.pt", "--stats", stats, "--out", "o"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and stats in lines[0], lines
    assert _snapshot(user) == before
