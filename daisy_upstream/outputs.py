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

Refusals are :class:`OutputRefused` (a ``ValueError``: one line, exit 2 in the CLI).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

__all__ = [
    "FOLDER_MANIFEST",
    "FILE_MANIFEST",
    "OutputRefused",
    "check_output_folder",
    "check_output_files",
    "check_working_folder",
    "claim_working_folder",
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


def _refuse_always(out: PathLike, inputs: Sequence[Optional[PathLike]]) -> Path:
    """A folder output that is a symlink, the current folder or a parent of it, or holds an input."""
    out = Path(out).expanduser()
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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.daisy-partial-"))
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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def check_working_folder(
    out: PathLike,
    tool: str,
    inputs: Sequence[Optional[PathLike]] = (),
    made_before: Optional[Callable[[Path], bool]] = None,
) -> Path:
    """Refuse ``out`` as ``tool``'s resumable working folder, writing nothing; returns it as a ``Path``.

    A new or empty folder, or one that ``tool`` claimed before (:func:`claim_working_folder`),
    passes; so does one that ``made_before(out)`` recognises as ``tool``'s from before the
    manifest existed (``table1``: its ``settings.json``). Anything else is refused, as are
    the current folder, its parents and a folder holding an input.

    Raises:
        OutputRefused: see the module docstring.
    """
    tool = _tool_name(tool)
    out = _refuse_always(out, inputs)
    if out.exists() and not out.is_dir():
        raise OutputRefused(f"--out {out} is a file, not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        try:
            record = json.loads((out / FOLDER_MANIFEST).read_text())
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and record.get("tool") == tool and record.get("working"):
            return out  # continue there
        if record is None and made_before is not None and made_before(out):
            return out
        raise OutputRefused(
            f"--out {out} is not empty and is not a working folder of {tool}; choose a new or empty folder"
        )
    return out


def claim_working_folder(
    out: PathLike,
    tool: str,
    inputs: Sequence[Optional[PathLike]] = (),
    made_before: Optional[Callable[[Path], bool]] = None,
) -> Path:
    """Claim ``out`` as ``tool``'s resumable working folder: :func:`check_working_folder`, then
    create it and mark it with a manifest, so that a later run continues only there.

    Raises:
        OutputRefused: see the module docstring.
    """
    out = check_working_folder(out, tool, inputs, made_before)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / FOLDER_MANIFEST).is_file():
        from daisy_upstream.atomic import atomic_write_json

        atomic_write_json(out / FOLDER_MANIFEST, {"tool": _tool_name(tool), "working": True})
    return out


def _file_manifest(folder: Path) -> Dict[str, Dict[str, str]]:
    try:
        record = json.loads((folder / FILE_MANIFEST).read_text())
        return {k: v for k, v in record.items() if isinstance(v, dict)}
    except (OSError, ValueError, AttributeError):
        return {}


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
        if path.is_symlink():
            raise OutputRefused(f"{path} is a symbolic link; give a plain file path")
        if path.resolve() in sources:
            raise OutputRefused(f"{path} is an input of this command; write the output elsewhere")
        if path.is_dir():
            raise OutputRefused(f"{path} is a folder; give a file path")
        if path.exists():
            if not force:
                raise OutputRefused(
                    f"{path} exists; pass --force to replace a file {tool} wrote, or choose another name"
                )
            record = _file_manifest(path.parent).get(path.name, {})
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
    and recorded in the folder's ``.daisy-outputs.json``; on any failure they are removed and
    the targets are untouched.
    """
    tool = _tool_name(tool)
    targets = check_output_files(paths, tool, force, inputs)
    temps: List[Path] = []
    try:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.daisy-partial-", suffix=target.suffix
            )
            os.close(fd)
            temps.append(Path(name))
        yield list(temps)
        for tmp in temps:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        for target, tmp in zip(targets, temps):
            with _parent_lock(target.parent):
                check_output_files([target], tool, force, inputs)
                digest = _sha256(tmp)
                if force:
                    os.replace(tmp, target)
                else:
                    os.link(tmp, target)  # fails if a second run created it meanwhile
                    os.unlink(tmp)
                record = _file_manifest(target.parent)
                record[target.name] = {"tool": tool, "sha256": digest}
                from daisy_upstream.atomic import atomic_write_json

                atomic_write_json(target.parent / FILE_MANIFEST, record)
    finally:
        for tmp in temps:
            if tmp.exists():
                tmp.unlink()
