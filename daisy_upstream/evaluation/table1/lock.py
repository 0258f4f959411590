"""One process per cell: a lock file beside the cell's result, so that several ``daisy
table1`` processes can share one ``--out`` (one per core) without running a cell twice.

The lock is ``.<folder>-<result name>.lock`` beside the result's folder (outside it: a cell
may clear its own folder), made with ``O_CREAT | O_EXCL`` and holding the host name and
process id of its owner. A lock whose owner (on this host) has died is stale: the next
process takes the cell over (a training then resumes from its newest checkpoint).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Optional

__all__ = ["CellLock"]


def _owner() -> str:
    return f"{socket.gethostname()} {os.getpid()}"


def _alive(owner: str) -> bool:
    host, _, pid = owner.strip().rpartition(" ")
    if host != socket.gethostname():
        return True  # another machine's process: assume it is working
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class CellLock:
    """``with CellLock(result) as held:`` - ``held`` is True when this process owns the cell."""

    def __init__(self, result: Path) -> None:
        self.path = self.lock_path(result)
        self.held = False

    @staticmethod
    def lock_path(result: Path) -> Path:
        result = Path(result)
        return result.parent.parent / f".{result.parent.name}-{result.name}.lock"

    @staticmethod
    def held_elsewhere(result: Path) -> bool:
        """Whether another living process holds the cell of ``result``."""
        path = CellLock.lock_path(result)
        try:
            owner = path.read_text()
        except OSError:
            return False
        return owner.strip() != _owner() and _alive(owner)

    def _try(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(_owner() + "\n")
        return True

    def __enter__(self) -> bool:
        if not self._try():
            try:
                owner: Optional[str] = self.path.read_text()
            except OSError:
                owner = None
            if owner is None or (owner.strip() and _alive(owner)):
                return False
            if not owner.strip() and time.time() - self.path.stat().st_mtime < 60:
                return False  # being written by its owner
            self.path.unlink(missing_ok=True)  # its owner died: take the cell over
            if not self._try():
                return False
        self.held = True
        return True

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
