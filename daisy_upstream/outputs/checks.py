"""The refusals and the ownership records: what may be written where, and who wrote what is there."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

from daisy_upstream.atomic import output_error, probe_write

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
    """A path under a file (``notes.txt/x.yaml``) or under a link to nothing cannot be made."""
    for parent in path.parents:
        if parent.is_symlink() and not parent.exists():
            raise OutputRefused(
                f"{flag}{path}: {parent} is a link to a folder that does not exist; choose another path"
            )
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
        _probe_writable(out)
        return out
    if not out.is_dir():
        raise OutputRefused(f"--out {out} is a file, not a folder; choose another --out")
    if not any(out.iterdir()):
        _probe_writable(out / "x")
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


def _probe_writable(out: Path) -> None:
    """A new ``out`` can be made where it will go: a read-only or full file system fails here,
    before any work, naming ``out`` (a probe file in the nearest existing folder, removed)."""
    error = probe_write(next((p for p in out.parents if p.is_dir()), Path.cwd()))
    if error is not None:
        failed = output_error(out, error)
        raise failed if failed is not None else error


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
