"""The output policy (daisy_upstream.outputs): complete or absent, --force replaces only the
same tool's own output, inputs / the current folder / foreign files never touched."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading

import pytest

from daisy_upstream.atomic import OutputFailed, atomic_path
from daisy_upstream.outputs import (
    FILE_MANIFEST,
    FOLDER_MANIFEST,
    LOCK_FILE,
    OutputRefused,
    OwnerLock,
    check_output_files,
    check_output_folder,
    claim_working_folder,
    locked_folder,
    output_files,
    output_folder,
)


def _snapshot(root):
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def _write(tmp, name="a.txt", text="new"):
    (tmp / name).write_text(text)


def test_folder_appears_in_one_piece_with_its_manifest(tmp_path):
    out = tmp_path / "out"
    with output_folder(out, "demo") as tmp:
        assert tmp.parent == tmp_path and not out.exists()
        _write(tmp)
        (tmp / "sub").mkdir()
        _write(tmp / "sub", "b.bin", "b")
    manifest = json.loads((out / FOLDER_MANIFEST).read_text())
    assert manifest["tool"] == "daisy demo" and set(manifest["contents"]) == {"a.txt", "sub", "sub/b.bin"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failure_leaves_the_old_output_and_no_partial_folder(tmp_path):
    out = tmp_path / "out"
    with output_folder(out, "demo") as tmp:
        _write(tmp, text="old")
    with pytest.raises(KeyboardInterrupt):
        with output_folder(out, "demo", force=True) as tmp:
            _write(tmp, text="half")
            raise KeyboardInterrupt
    assert (out / "a.txt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_force_replaces_its_own_output_only(tmp_path):
    out = tmp_path / "out"
    with output_folder(out, "demo") as tmp:
        _write(tmp, text="old")
    with pytest.raises(OutputRefused, match="not empty; pass --force"):
        with output_folder(out, "demo") as tmp:
            pass
    with pytest.raises(OutputRefused, match="written by daisy demo, not daisy bench"):
        with output_folder(out, "bench", force=True):
            pass
    with output_folder(out, "demo", force=True) as tmp:
        _write(tmp, text="new")
    assert (out / "a.txt").read_text() == "new"
    _write(out, "mine.txt", "user")  # a user's file added to the output
    before = _snapshot(tmp_path)
    with pytest.raises(OutputRefused, match="'mine.txt', which daisy demo did not write"):
        with output_folder(out, "demo", force=True):
            pass
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ["foreign", "cwd", "parent-of-cwd", "holds-input", "is-input", "file", "symlink"])
def test_refused_whatever_force_says(case, tmp_path, monkeypatch):
    user = tmp_path / "user"
    (user / "deep").mkdir(parents=True)
    _write(user, "data.txt", "precious")
    _write(user / "deep", "model.pt", "weights")
    out, inputs = user, ()
    if case == "cwd":
        monkeypatch.chdir(user)
        out = "."
    elif case == "parent-of-cwd":
        monkeypatch.chdir(user / "deep")
        out = ".."
    elif case == "holds-input":
        out, inputs = tmp_path / "empty", (tmp_path / "empty" / "x.pt",)
        out.mkdir()
    elif case == "is-input":
        out, inputs = user / "deep", (user / "deep",)
    elif case == "file":
        out = user / "data.txt"
    elif case == "symlink":
        out = tmp_path / "link"
        out.symlink_to(user / "deep")
    before = _snapshot(tmp_path)
    with pytest.raises(OutputRefused):
        with output_folder(out, "profile", force=True, inputs=inputs) as tmp:
            _write(tmp)
    assert _snapshot(tmp_path) == before


def test_two_runs_on_one_out_never_both_succeed(tmp_path):
    out, barrier, results = tmp_path / "out", threading.Barrier(2), []

    def run(text):
        try:
            with output_folder(out, "profile") as tmp:
                _write(tmp, text=text)
                barrier.wait(timeout=10)  # both have passed the first check
            results.append(text)
        except OutputRefused:
            results.append("refused")

    threads = [threading.Thread(target=run, args=(t,)) for t in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("refused") == 1
    winner = next(r for r in results if r != "refused")
    assert (out / "a.txt").read_text() == winner
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_files_forced_only_over_the_same_tools_unchanged_file(tmp_path):
    target, other = tmp_path / "scores.json", tmp_path / "notes.json"
    other.write_text("user's")
    with output_files([target], "superb-score") as (tmp,):
        tmp.write_text("1")
    assert json.loads((tmp_path / FILE_MANIFEST).read_text())["scores.json"]["tool"] == "daisy superb-score"
    with pytest.raises(OutputRefused, match="exists; pass --force"):
        with output_files([target], "superb-score"):
            pass
    with output_files([target], "superb-score", force=True) as (tmp,):
        tmp.write_text("2")
    assert target.read_text() == "2"
    for path, tool in ((other, "superb-score"), (target, "submit")):
        with pytest.raises(OutputRefused, match="not written by"):
            with output_files([path], tool, force=True):
                pass
    target.write_text("edited")
    with pytest.raises(OutputRefused, match="changed since"):
        with output_files([target], "superb-score", force=True):
            pass
    with pytest.raises(OutputRefused, match="is an input"):
        with output_files([tmp_path / "new.json"], "superb-score", force=True, inputs=[tmp_path / "new.json"]):
            pass
    assert other.read_text() == "user's" and target.read_text() == "edited"
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_two_file_runs_without_force_never_both_succeed(tmp_path):
    target = tmp_path / "predict.zip"
    with pytest.raises(OutputRefused, match="exists"):  # the check under the lock, before the rename
        with output_files([target], "submit") as (tmp,):
            tmp.write_text("first")
            target.write_text("second run finished meanwhile")
    assert target.read_text() == "second run finished meanwhile"


def test_a_working_folder_is_continued_only_by_the_command_that_claimed_it(tmp_path, monkeypatch):
    work = claim_working_folder(tmp_path / "demo", "demo")
    _write(work, "corpus.json", "{}")
    assert claim_working_folder(work, "demo") == work  # re-run: continue
    with pytest.raises(OutputRefused, match="not a working folder of daisy bench"):
        claim_working_folder(work, "bench")
    user = tmp_path / "user"
    user.mkdir()
    _write(user, "data.txt", "precious")
    before = _snapshot(tmp_path)
    with pytest.raises(OutputRefused, match="not a working folder"):
        claim_working_folder(user, "demo")
    with pytest.raises(OutputRefused, match="holds the input"):
        claim_working_folder(work, "demo", inputs=[work / "model.pt"])
    monkeypatch.chdir(work)
    with pytest.raises(OutputRefused, match="current folder"):
        claim_working_folder(".", "demo")
    assert _snapshot(tmp_path) == before


# --- issue 35: bookkeeping files never replace the user's; OS errors name the given path ---------


def test_a_foreign_file_named_like_our_record_is_refused_not_replaced(tmp_path):
    """A user's ``.daisy-outputs.json`` was overwritten silently by the next output's record."""
    theirs = tmp_path / FILE_MANIFEST
    theirs.write_text('{"my": "bookkeeping"}\n')
    with pytest.raises(OutputRefused, match="not daisy's record"):
        with output_files([tmp_path / "scores.json"], "superb-score") as (tmp,):
            tmp.write_text("1")
    assert theirs.read_text() == '{"my": "bookkeeping"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_MANIFEST]


def test_a_path_under_a_file_is_refused_before_work(tmp_path):
    """``--out notes.txt/x.yaml`` said ``[Errno 17] File exists``."""
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputRefused, match="notes.txt is a file, not a folder"):
        check_output_files([tmp_path / "notes.txt" / "x.yaml"], "calibrate")
    with pytest.raises(OutputRefused, match="notes.txt is a file, not a folder"):
        check_output_folder(tmp_path / "notes.txt" / "sub" / "out", "bench")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.ENOTDIR])
def test_an_os_error_names_the_given_path_and_leaves_nothing(code, tmp_path, monkeypatch):
    """Writing into a new folder: the error names ``new/c.yaml`` (not its hidden temporary
    file), and neither the temporary file nor the folder made for it is left."""
    target = tmp_path / "new" / "deeper" / "c.yaml"
    with pytest.raises(OutputFailed) as failed:
        with output_files([target], "calibrate") as (tmp,):
            raise OSError(code, os.strerror(code), str(tmp))  # what a write into tmp meets
    line = str(failed.value)
    assert line.startswith(f"cannot write {target}: {os.strerror(code)} (") and "partial" not in line
    assert failed.value.errno == code and list(tmp_path.iterdir()) == []

    real = tempfile.mkdtemp

    def read_only(*args, **kwargs):  # a folder output on a read-only file system
        name = real(*args, **kwargs)
        os.rmdir(name)
        raise OSError(code, os.strerror(code), name)

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(OutputFailed, match=f"cannot write {tmp_path / 'out'}: "):
        with output_folder(tmp_path / "out", "bench"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_inside_a_folder_output_names_the_folder(tmp_path):
    out = tmp_path / "profile"
    with pytest.raises(OutputFailed) as failed:
        with output_folder(out, "profile") as tmp:
            with atomic_path(tmp / "macs.json") as part:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(part))
    assert str(failed.value).startswith(f"cannot write {out}: No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_working_folder_claimed_with_other_settings_is_refused_naming_them(tmp_path):
    work = claim_working_folder(tmp_path / "c", "make-corpus", settings={"seed": 1, "hours": 0.1})
    (work / "a.flac").write_bytes(b"audio")
    assert claim_working_folder(work, "make-corpus", settings={"seed": 1, "hours": 0.1}) == work
    with pytest.raises(OutputRefused, match=r"other settings \(seed: 1 there, 2 now\)"):
        claim_working_folder(work, "make-corpus", settings={"seed": 2, "hours": 0.1})


def test_a_lock_is_refused_while_its_owner_lives_and_a_foreign_file_is_never_taken(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (work / LOCK_FILE).write_text(f"{socket.gethostname()} {sleeper.pid}\n")
        with pytest.raises(OutputRefused, match=f"in use by another daisy train-branches run \\(process {sleeper.pid}"):
            with locked_folder(work, "train-branches", "--work-dir"):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    with locked_folder(work, "train-branches"):  # its owner died: taken over
        assert (work / LOCK_FILE).read_text().split() == [socket.gethostname(), str(os.getpid())]
    assert not (work / LOCK_FILE).exists()
    (work / LOCK_FILE).write_text("my notes about locks\n")
    with pytest.raises(OutputRefused, match="not a daisy lock file"):
        OwnerLock(work / LOCK_FILE).acquire()
    assert (work / LOCK_FILE).read_text() == "my notes about locks\n"


def test_a_path_under_a_link_to_nothing_is_refused_before_work(tmp_path):
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputRefused, match="gone is a link to a folder that does not exist"):
        check_output_files([tmp_path / "gone" / "x.yaml"], "calibrate")
