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


# --- issue 35: the classes of the second round, for every subcommand -----------------------------
#: foreign_bookkeeping: a user's file under the name of one of our bookkeeping files (the file
#:     outputs' record, a folder manifest, a work dir's state); link_outside: a prediction that is
#:     a link out of the folder read as a unit; bad_value: a checkpoint whose model_cfg disagrees
#:     with its weights (5000 layers for 4); dup_key: an upstream config giving a key twice;
#:     read_only: every file or folder creation refused by the system (EROFS); in_use: a work dir
#:     whose lock a living process holds.
MORE_CASES = ("foreign_bookkeeping", "link_outside", "bad_value", "dup_key", "read_only", "in_use")


def _setup_more(tmp: Path, ckpt: Path) -> None:
    import os
    import socket

    import torch

    (tmp / "audio4").mkdir()  # profile's four length buckets
    for clip in sorted(HELDOUT.glob("*.wav"))[:4]:
        shutil.copy(clip, tmp / "audio4" / clip.name)
    (tmp / "rec").mkdir()
    (tmp / "rec" / ".daisy-outputs.json").write_text('{"my": "bookkeeping"}\n')
    (tmp / "claimed").mkdir()
    (tmp / "claimed" / ".daisy-output.json").write_text('{"tool": "my own notes", "contents": {}}\n')
    (tmp / "claimed" / "notes.txt").write_text("mine\n")
    (tmp / "wd").mkdir()
    (tmp / "wd" / "state.pt").write_bytes(b"my own state of things")
    (tmp / "secret.txt").write_text("root:password\n")
    (tmp / "exp").mkdir()
    (tmp / "exp" / "test_predict.txt").symlink_to(tmp / "secret.txt")
    (tmp / "exp_ok").mkdir()
    (tmp / "exp_ok" / "test_predict.txt").write_text("utt1 id10001\n")
    state = torch.load(ckpt, weights_only=True)
    state["model_cfg"]["encoder_layers"] = 5000
    torch.save(state, tmp / "mismatch.pt")
    (tmp / "dup.yaml").write_text("rho: 0.7\nstrategy: none\nrho: 1.0\n")
    (tmp / "locked").mkdir()
    (tmp / "locked" / ".daisy-output.json").write_text('{"tool": "daisy train-branches", "working": true}\n')
    (tmp / "locked" / ".daisy-lock").write_text(f"{socket.gethostname()} {os.getpid()}\n")


_TB = ["-k", "model.pt", "--audio", "audio", "--batch-seconds", "2", "--max-steps", "1", "--no-progress"]
# command -> case -> arguments (None: no such input; the comment says why)
MORE_ARGS: Dict[str, Dict[str, Optional[List[str]]]] = {
    "convert": {  # one file out, one checkpoint in (a file or a transformers folder); no config
        "foreign_bookkeeping": ["model.pt", "--out", "rec/c.pt"],
        "link_outside": None,  # the source is read, its weights are what the output holds
        "bad_value": ["mismatch.pt", "--out", "c.pt"],
        "dup_key": None,
        "read_only": ["model.pt", "--out", "c.pt"],
        "in_use": None,
    },
    "make-corpus": {  # no input files, no upstream config; the corpus folder is its working folder
        "foreign_bookkeeping": ["claimed", "--hours", "0.01"],
        "link_outside": None,
        "bad_value": None,
        "dup_key": None,
        "read_only": ["c", "--hours", "0.01", "--tasks", "asr"],
        "in_use": None,  # one corpus folder is made by one process at a time by the claim
    },
    "pretrain-tiny": {  # its state folder and corpus are its own (issue 31's); no upstream config
        "foreign_bookkeeping": ["--plot", "p.png", "--state-dir", "claimed"],
        "link_outside": None,
        "bad_value": None,
        "dup_key": None,
        "read_only": None,  # plots only from an existing state folder
        "in_use": None,
    },
    "train-branches": {
        "foreign_bookkeeping": [*_TB, "--out", "o.pt", "--work-dir", "wd"],
        "link_outside": None,  # audio is read, nothing of it is copied into the output
        "bad_value": ["-k", "mismatch.pt", "--audio", "audio", "--out", "o.pt"],
        "dup_key": None,  # no upstream config
        "read_only": [*_TB, "--out", "o.pt"],
        "in_use": [*_TB, "--out", "o.pt", "--work-dir", "locked"],
    },
    "calibrate": {
        "foreign_bookkeeping": ["-k", "model.pt", "--audio", "audio", "--out", "rec/c.yaml"],
        "link_outside": None,
        "bad_value": ["-k", "mismatch.pt", "--audio", "audio", "--out", "c.yaml"],
        "dup_key": None,  # no upstream config (--s3prl-config is the runner's)
        "read_only": ["-k", "model.pt", "--audio", "audio", "--out", "c.yaml", "--no-progress"],
        "in_use": None,  # writes files, no work dir
    },
    "bench": {
        "foreign_bookkeeping": ["--out", "claimed", "--force"],
        "link_outside": None,
        "bad_value": ["-k", "mismatch.pt", "--out", "b"],
        "dup_key": ["-g", "dup.yaml", "--out", "b"],
        "read_only": ["-k", "model.pt", "--out", "b", "--utterances", "2"],
        "in_use": None,
    },
    "noise-report": {
        "foreign_bookkeeping": ["--out", "claimed", "--force"],
        "link_outside": None,
        "bad_value": ["-k", "mismatch.pt", "--clean", "audio", "--max-clips", "2", "--out", "nr"],
        "dup_key": ["-g", "dup.yaml", "--out", "nr"],
        "read_only": ["-k", "model.pt", "--clean", "audio", "--max-clips", "2", "--out", "nr"],
        "in_use": None,
    },
    "table1": {  # a working folder (cells share it through their own locks)
        "foreign_bookkeeping": ["--out", "claimed"],
        "link_outside": None,
        "bad_value": ["-k", "mismatch.pt", "--out", "t1"],
        "dup_key": None,  # runner configs only
        "read_only": ["--out", "t1"],
        "in_use": None,
    },
    "demo": {
        "foreign_bookkeeping": ["--out", "claimed"],
        "link_outside": None,
        "bad_value": ["-k", "mismatch.pt", "--out", "d"],
        "dup_key": None,  # runner configs only
        "read_only": ["--out", "d"],
        "in_use": None,
    },
    "profile": {
        "foreign_bookkeeping": ["--out", "claimed", "--force"],
        "link_outside": None,
        "bad_value": ["-k", "mismatch.pt", "--audio", "audio", "--out", "p"],
        "dup_key": ["-g", "dup.yaml", "--out", "p"],
        "read_only": ["-k", "model.pt", "--audio", "audio4", "--out", "p"],
        "in_use": None,
    },
    "submit": {
        "foreign_bookkeeping": ["sid=exp_ok", "--out", "rec/p.zip"],
        "link_outside": ["sid=exp", "--out", "p.zip"],
        "bad_value": None,  # reads prediction files, no checkpoint
        "dup_key": None,
        "read_only": ["sid=exp_ok", "--out", "p.zip"],
        "in_use": None,
    },
    "export-hidden": {
        "foreign_bookkeeping": ["--out", "claimed", "--force"],
        "link_outside": None,
        "bad_value": ["-k", "mismatch.pt", "--out", "eh"],
        "dup_key": ["-g", "dup.yaml", "--out", "eh"],
        "read_only": ["-k", "model.pt", "--out", "eh"],
        "in_use": None,
    },
    "superb-score": {
        "foreign_bookkeeping": ["metrics.yaml", "--json", "rec/s.json"],
        "link_outside": None,
        "bad_value": None,
        "dup_key": None,  # a metrics file, not a config
        "read_only": ["metrics.yaml", "--json", "s.json"],
        "in_use": None,
    },
}


def test_every_subcommand_has_every_new_class():
    assert sorted(MORE_ARGS) == sorted(SUBCOMMANDS)
    assert all(tuple(cases) == MORE_CASES for cases in MORE_ARGS.values())


def _read_only(monkeypatch) -> None:
    """Every creation of a file or folder refused as on a read-only file system."""
    import errno
    import os

    real_open, real_mkdir = os.open, os.mkdir

    def no_create(path, flags, *args, **kwargs):
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    def no_mkdir(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(os, "open", no_create)
    monkeypatch.setattr(os, "mkdir", no_mkdir)
    assert real_open and real_mkdir


@pytest.mark.parametrize("case", MORE_CASES)
@pytest.mark.parametrize("command", sorted(MORE_ARGS))
def test_the_second_round_is_one_line_exit_2_and_touches_nothing(
    command, case, tmp_path, tiny_ckpt, monkeypatch, capsys
):
    args = MORE_ARGS[command][case]
    if args is None:
        pytest.skip(f"{command} has no input of this kind (see MORE_ARGS)")
    user = tmp_path / "user"
    user.mkdir()
    _setup(user, tiny_ckpt)
    _setup_more(user, tiny_ckpt)
    monkeypatch.chdir(user)
    before = _snapshot(user)
    with warnings.catch_warnings(), monkeypatch.context() as patch:
        warnings.simplefilter("ignore")
        if case == "read_only":
            _read_only(patch)
        status = main([command, *args])
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"daisy {command}: error: "), err
    assert "Traceback" not in err and "daisy-partial" not in err and ".tmp" not in err
    if case == "read_only":
        assert "Read-only file system" in lines[0], lines[0]
    assert _snapshot(user) == before, f"{command} {case}: files changed, created or removed"
