"""Where commands write: every output set complete or absent, nothing a user wrote replaced.

One policy for every ``daisy`` command that writes results (the resumable state folders of
``pretrain-tiny`` and ``train-branches --work-dir`` keep their own semantics; the working
folders of ``demo`` and ``table1`` are claimed, see below):

* **Write aside, rename into place.** A folder output is built in a hidden temporary sibling
  (``.NAME.daisy-partial-XXXX``) and renamed to its name in one ``rename``; file outputs are
  written beside their names and renamed each (:func:`daisy_upstream.atomic.atomic_path`). An
  interrupt or a crash leaves the old state or the new one, and the partial sibling is removed.
* **Ownership.** A finished folder holds a manifest, ``.daisy-output.json``: the command that
  wrote it and the SHA-256 of every file. A finished file is recorded in its folder's
  ``.daisy-outputs.json`` (name -> command, SHA-256). ``--force`` replaces an existing output
  only when its manifest says the same command wrote exactly what is there now; anything else
  (a foreign or edited file, an unmanifested folder) is refused.
* **Refused always**, ``--force`` or not: a folder output that is the current folder or one of
  its parents, or that is or contains an input; a file output that is an input; a symbolic
  link as an output.
* **Without --force** an existing file or a non-empty folder is never written into (an empty
  folder is taken). The final rename happens under a lock on the parent folder after a second
  check, so of two runs on one output at most one succeeds.

A **working folder** (``demo --out``, ``table1 --out``: a corpus and runner experiments that
record their absolute paths, re-run to continue) cannot be built aside; :func:`claim_working_folder`
applies the same refusals and marks the folder as the command's, so a later run continues only
in a folder that command claimed (``make-corpus`` keeps its own equivalent marker).

**Bookkeeping files** (this module's manifests, the locks of :class:`OwnerLock`, the state
a working folder holds) are created only in a folder that is new or empty, or that holds
them from the same tool before; a file of the user's under such a name (a
``.daisy-outputs.json`` that is not our record, a lock file that is not ours) is refused,
never replaced. A **lock** (:class:`OwnerLock`, :func:`locked_folder`) is a file holding its
owner's host and process id, made with ``O_EXCL``; one whose owner on this host died is
taken over.

Refusals are :class:`OutputRefused` (a ``ValueError``: one line, exit 2 in the CLI). An OS
error while writing is :class:`daisy_upstream.atomic.OutputFailed`, naming the path given
(an ``OSError``: one line, exit 2), and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

from daisy_upstream.atomic import atomic_write_json, make_folders, output_error, remove_folders

__all__ = [
    "FOLDER_MANIFEST",
    "FILE_MANIFEST",
    "OutputRefused",
    "OwnerLock",
    "check_output_folder",
    "check_output_files",
    "check_working_folder",
    "claim_working_folder",
    "locked_folder",
    "output_folder",
    "output_files",
]

PathLike = Union[str, "os.PathLike[str]"]
FOLDER_MANIFEST = ".daisy-output.json"
FILE_MANIFEST = ".daisy-outputs.json"


class OutputRefused(ValueError):
    """An output the policy will not write (one line naming the path and what to do)."""


def _resolved(paths: Iterable[Optional[PathLike]]) -> List[Path]:
    return [Path(p).expanduser().resolve() for p in paths if p not in (None, "")]


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _entry(path: Path) -> str:
    """What identifies one entry of a folder: a link's target, a file's hash, 'dir' for a folder."""
    if path.is_symlink():
        return "link:" + os.readlink(path)
    if path.is_dir():
        return "dir"
    return _sha256(path)


def _contents(folder: Path) -> Dict[str, str]:
    """Every entry under ``folder`` (relative POSIX path -> identity), the manifest excepted."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            if rel != FOLDER_MANIFEST:
                found[rel] = _entry(path)
    return found


def _tool_name(tool: str) -> str:
    return tool if tool.startswith("daisy") else f"daisy {tool}"


def _owned_folder_problem(out: Path, tool: str) -> Optional[str]:
    """Why ``out`` (an existing non-empty folder) is not this tool's own output, or None when it is."""
    manifest = out / FOLDER_MANIFEST
    try:
        record = json.loads(manifest.read_text())
        owner, recorded = record["tool"], record["contents"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"holds files that {tool} did not write (no {FOLDER_MANIFEST} of its own)"
    if owner != tool:
        return f"was written by {owner}, not {tool}"
    now = _contents(out)
    foreign = sorted(set(now) - set(recorded))
    if foreign:
        return f"holds {foreign[0]!r}, which {tool} did not write"
    changed = sorted(k for k in now if now[k] != recorded[k])
    if changed:
        return f"{changed[0]!r} changed since {tool} wrote it"
    return None


def _refuse_file_ancestor(path: Path, flag: str) -> None:
    """A path under a file (``notes.txt/x.yaml``) cannot be made."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputRefused(f"{flag}{path}: {parent} is a file, not a folder; choose another path")
            return


def _refuse_always(out: PathLike, inputs: Sequence[Optional[PathLike]]) -> Path:
    """A folder output that is a symlink, the current folder or a parent of it, or holds an input."""
    out = Path(out).expanduser()
    _refuse_file_ancestor(out, "--out ")
    if out.is_symlink():
        raise OutputRefused(f"--out {out} is a symbolic link; give a real folder path")
    where = out.resolve()
    if _inside(Path.cwd().resolve(), where):
        raise OutputRefused(
            f"--out {out} is the current folder or one of its parents; give a new folder, e.g. --out runs/NAME"
        )
    for source in _resolved(inputs):
        if _inside(source, where):
            raise OutputRefused(f"--out {out} holds the input {source}; choose another --out")
    return out


def check_output_folder(
    out: PathLike, tool: str, force: bool = False, inputs: Sequence[Optional[PathLike]] = ()
) -> Path:
    """Refuse a folder output the policy forbids; returns ``out`` as a ``Path``.

    Raises:
        OutputRefused: see the module docstring.
    """
    tool = _tool_name(tool)
    out = _refuse_always(out, inputs)
    if not out.exists():
        return out
    if not out.is_dir():
        raise OutputRefused(f"--out {out} is a file, not a folder; choose another --out")
    if not any(out.iterdir()):
        return out
    if not force:
        raise OutputRefused(
            f"--out {out} exists and is not empty; pass --force to replace what {tool} "
            "wrote there, or choose another --out"
        )
    problem = _owned_folder_problem(out, tool)
    if problem:
        raise OutputRefused(f"--out {out} {problem}; not replacing it (choose another --out)")
    return out


@contextlib.contextmanager
def _parent_lock(folder: Path) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def output_folder(
    out: PathLike, tool: str, force: bool = False, inputs: Sequence[Optional[PathLike]] = ()
) -> Iterator[Path]:
    """Yield a temporary sibling of ``out`` to fill; on success it becomes ``out`` in one rename.

    Checks first (:func:`check_output_folder`), and again under a lock on the parent folder just
    before the rename. On any failure the temporary folder is removed and ``out`` is untouched.
    """
    tool = _tool_name(tool)
    out = check_output_folder(out, tool, force, inputs)
    created = make_folders(out.parent)
    try:
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.daisy-partial-"))
    except OSError as error:
        remove_folders(created)
        raise output_error(out, error) or error from error
    old: Optional[Path] = None
    try:
        yield tmp
        manifest = {"tool": tool, "contents": _contents(tmp)}
        (tmp / FOLDER_MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        with _parent_lock(out.parent):
            check_output_folder(out, tool, force, inputs)  # a second run may have finished meanwhile
            if out.is_dir() and any(out.iterdir()):  # forced over its own output: swap
                old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.daisy-old-"))
                os.rename(out, old / out.name)
                try:
                    os.rename(tmp, out)
                except BaseException:
                    os.rename(old / out.name, out)
                    raise
            else:
                os.rename(tmp, out)  # onto nothing, or onto an empty folder
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_folders(created)
        failed = output_error(out, error)  # named by --out, not the temporary folder
        if failed is not None:
            raise failed from error
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _settings_differ(saved: Mapping[str, Any], settings: Mapping[str, Any]) -> List[str]:
    return sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))


def check_working_folder(
    out: PathLike,
    tool: str,
    inputs: Sequence[Optional[PathLike]] = (),
    made_before: Optional[Callable[[Path], bool]] = None,
    settings: Optional[Mapping[str, Any]] = None,
    flag: str = "--out",
) -> Path:
    """Refuse ``out`` as ``tool``'s resumable working folder, writing nothing; returns it as a ``Path``.

    A new or empty folder, or one that ``tool`` claimed before (:func:`claim_working_folder`),
    passes; so does one that ``made_before(out)`` recognises as ``tool``'s from before the
    manifest existed (``table1``: its ``settings.json``). Anything else is refused, as are
    the current folder, its parents and a folder holding an input. With ``settings``, a folder
    claimed with other settings is refused naming the keys that differ. ``flag`` names the
    option in the messages.

    Raises:
        OutputRefused: see the module docstring.
    """
    tool = _tool_name(tool)
    given = Path(out).expanduser()
    try:
        out = _refuse_always(out, inputs)
    except OutputRefused as refused:
        raise OutputRefused(str(refused).replace("--out", flag, 1)) from None
    if out.exists() and not out.is_dir():
        raise OutputRefused(f"{flag} {given} is a file, not a folder; choose another {flag}")
    if out.is_dir() and any(out.iterdir()):
        try:
            record = json.loads((out / FOLDER_MANIFEST).read_text())
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and record.get("tool") == tool and record.get("working"):
            saved = record.get("settings")
            differ = _settings_differ(saved, settings) if settings is not None and isinstance(saved, dict) else []
            if differ:
                detail = ", ".join(f"{k}: {saved.get(k)!r} there, {settings.get(k)!r} now" for k in differ)
                raise OutputRefused(
                    f"{flag} {given} holds the work of a {tool} run with other settings ({detail}); "
                    f"use the same settings to continue, or another {flag}"
                )
            return out  # continue there
        if record is None and made_before is not None and made_before(out):
            return out
        raise OutputRefused(
            f"{flag} {given} is not empty and is not a working folder of {tool}; choose a new or empty folder"
        )
    return out


def claim_working_folder(
    out: PathLike,
    tool: str,
    inputs: Sequence[Optional[PathLike]] = (),
    made_before: Optional[Callable[[Path], bool]] = None,
    settings: Optional[Mapping[str, Any]] = None,
    flag: str = "--out",
) -> Path:
    """Claim ``out`` as ``tool``'s resumable working folder: :func:`check_working_folder`, then
    create it and mark it with a manifest (and ``settings``), so that a later run continues only
    there and only with the same settings.

    Raises:
        OutputRefused: see the module docstring.
    """
    out = check_working_folder(out, tool, inputs, made_before, settings, flag)
    created = make_folders(out)
    manifest = out / FOLDER_MANIFEST
    try:
        record = json.loads(manifest.read_text()) if manifest.is_file() else None
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or (settings is not None and "settings" not in record):
        try:
            atomic_write_json(manifest, {"tool": _tool_name(tool), "working": True, **_settings(settings)})
        except OSError:
            remove_folders(created)
            raise
    return out


def _settings(settings: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    return {} if settings is None else {"settings": dict(settings)}


def _is_file_record(record: Any) -> bool:
    """Whether ``record`` is one entry of our file manifest: ``{"tool": "daisy ...", "sha256": hex}``."""
    return (
        isinstance(record, dict)
        and set(record) == {"tool", "sha256"}
        and str(record["tool"]).startswith("daisy")
        and isinstance(record["sha256"], str)
        and len(record["sha256"]) == 64
    )


def _file_manifest(folder: Path) -> Dict[str, Dict[str, str]]:
    """The folder's record of the files daisy wrote there (empty when there is none).

    Raises:
        OutputRefused: a file of that name that is not such a record (a file of the user's).
    """
    path = folder / FILE_MANIFEST
    if not path.exists() and not path.is_symlink():
        return {}
    try:
        record = json.loads(path.read_text()) if path.is_file() and not path.is_symlink() else None
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or not record or not all(_is_file_record(v) for v in record.values()):
        raise OutputRefused(
            f"{path} is not daisy's record of the files it wrote (a file of yours?); "
            "move it away or write the output elsewhere"
        )
    return record


def check_output_files(
    paths: Sequence[PathLike], tool: str, force: bool = False, inputs: Sequence[Optional[PathLike]] = ()
) -> List[Path]:
    """Refuse file outputs the policy forbids; returns them as ``Path`` objects.

    Raises:
        OutputRefused: see the module docstring.
    """
    tool = _tool_name(tool)
    sources = _resolved(inputs)
    checked = []
    for path in paths:
        path = Path(path).expanduser()
        _refuse_file_ancestor(path, "")
        if path.is_symlink():
            raise OutputRefused(f"{path} is a symbolic link; give a plain file path")
        if path.resolve() in sources:
            raise OutputRefused(f"{path} is an input of this command; write the output elsewhere")
        if path.is_dir():
            raise OutputRefused(f"{path} is a folder; give a file path")
        record = _file_manifest(path.parent).get(path.name, {}) if path.parent.is_dir() else {}
        if path.exists():
            if not force:
                raise OutputRefused(
                    f"{path} exists; pass --force to replace a file {tool} wrote, or choose another name"
                )
            if record.get("tool") != tool or record.get("sha256") != _sha256(path):
                raise OutputRefused(f"{path} was not written by {tool} (or changed since); not replacing it")
        checked.append(path)
    if len({p.resolve() for p in checked}) != len(checked):
        raise OutputRefused(f"the same file is given twice as an output: {', '.join(map(str, checked))}")
    return checked


@contextlib.contextmanager
def output_files(
    paths: Sequence[PathLike], tool: str, force: bool = False, inputs: Sequence[Optional[PathLike]] = ()
) -> Iterator[List[Path]]:
    """Yield one temporary path beside each of ``paths`` (same suffix) to write.

    On success each is renamed to its name after a second check under a lock on its folder,
    and recorded in the folder's ``.daisy-outputs.json``; on any failure they are removed,
    the targets are untouched and the folders made for them removed again. An OS error
    names the target (:class:`~daisy_upstream.atomic.OutputFailed`).
    """
    tool = _tool_name(tool)
    targets = check_output_files(paths, tool, force, inputs)
    temps: List[Path] = []
    created: List[Path] = []
    target = targets[0] if targets else Path(".")
    try:
        for target in targets:
            created += make_folders(target.parent)
            fd, name = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.daisy-partial-", suffix=target.suffix
            )
            os.close(fd)
            temps.append(Path(name))
        target = targets[0] if targets else target
        yield list(temps)
        for tmp in temps:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        for target, tmp in zip(targets, temps):
            _place_file(target, tmp, tool, force, inputs)
        created = []
    except BaseException as error:
        failed = output_error(target, error)  # named by the path given, not the temporary file
        if failed is not None:
            raise failed from error
        raise
    finally:
        for tmp in temps:
            if tmp.exists():
                tmp.unlink()
        remove_folders(created)


def _place_file(target: Path, tmp: Path, tool: str, force: bool, inputs: Sequence[Optional[PathLike]]) -> None:
    """Rename ``tmp`` to ``target`` under a lock on its folder, after a second check, and record it."""
    with _parent_lock(target.parent):
        check_output_files([target], tool, force, inputs)
        digest = _sha256(tmp)
        record = _file_manifest(target.parent)
        if force:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)  # fails if a second run created it meanwhile
            os.unlink(tmp)
        record[target.name] = {"tool": tool, "sha256": digest}
        atomic_write_json(target.parent / FILE_MANIFEST, record)


# --- locks -----------------------------------------------------------------------------------


def _owner() -> str:
    return f"{socket.gethostname()} {os.getpid()}"


def _parse_owner(text: str) -> Optional[tuple]:
    """``(host, pid)`` of a lock file's content, or None when it is not one of ours."""
    host, _, pid = text.strip().rpartition(" ")
    return (host, int(pid)) if host and pid.isdigit() and text.count("\n") <= 1 else None


def _alive(owner: tuple) -> bool:
    host, pid = owner
    if pid == 0:
        return False
    if host != socket.gethostname():
        return True  # another machine's process: assume it is working
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OwnerLock:
    """A lock file holding its owner's ``host pid``, made with ``O_CREAT | O_EXCL``.

    ``acquire()`` is True when this process now holds it. A lock whose owner (on this host)
    died is taken over; a file under the lock's name that is not a lock of ours is refused.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.held = False

    def owner(self) -> Optional[tuple]:
        """The holder ``(host, pid)``; None when there is no lock file (or it is being written).

        Raises:
            OutputRefused: the file is not a lock of ours.
        """
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):
            text = "\0"
        if not text.strip():  # being written by its owner, or left empty by one that died
            return None if time.time() - self.path.stat().st_mtime < 60 else ("", 0)
        owner = _parse_owner(text)
        if owner is None:
            raise OutputRefused(
                f"{self.path} is not a daisy lock file (a file of yours?); move it away or use another folder"
            )
        return owner

    def held_elsewhere(self) -> bool:
        """Whether another living process holds the lock."""
        try:
            owner = self.owner()
        except OutputRefused:
            return True
        return owner is not None and owner != _parse_owner(_owner()) and _alive(owner)

    def _try(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(_owner() + "\n")
        return True

    def acquire(self) -> bool:
        for _ in range(3):  # the file may vanish between the tries
            if self._try():
                self.held = True
                return True
            owner = self.owner()
            if owner is None:
                if self.path.exists():
                    return False  # being written by its owner
                continue
            if _alive(owner):
                return False
            self.path.unlink(missing_ok=True)  # its owner died: take it over
        return False

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


LOCK_FILE = ".daisy-lock"


@contextlib.contextmanager
def locked_folder(folder: PathLike, tool: str, flag: str = "--out") -> Iterator[Path]:
    """Hold ``folder/.daisy-lock`` while the body runs: a second run on the same folder is refused.

    Raises:
        OutputRefused: another living process holds it (its host and pid named), or a file
            of the user's has the lock's name.
    """
    folder = Path(folder)
    lock = OwnerLock(folder / LOCK_FILE)
    if not lock.acquire():
        owner = lock.owner()
        holder = f" (process {owner[1]} on {owner[0]})" if owner else ""
        raise OutputRefused(
            f"{flag} {folder} is in use by another {_tool_name(tool)} run{holder}; wait for it to finish "
            f"or use another {flag}"
        )
    try:
        yield folder
    finally:
        lock.release()
