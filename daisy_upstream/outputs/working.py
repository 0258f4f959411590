"""Working folders (re-run to continue) and the locks that keep one run in each."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Mapping, Optional, Sequence

from daisy_upstream.atomic import atomic_write_json, make_folders, remove_folders

from .checks import FOLDER_MANIFEST, OutputRefused, PathLike, _refuse_always, _settings, _tool_name


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
        raise OutputRefused(str(refused).replace("--out", flag)) from None
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
