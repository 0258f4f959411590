"""One process per cell: a lock file beside the cell's result, so that several ``daisy
table1`` processes can share one ``--out`` (one per core) without running a cell twice.

The lock is ``.<folder>-<result name>.lock`` beside the result's folder (outside it: a cell
may clear its own folder), an :class:`daisy_upstream.outputs.OwnerLock` (the host name and
process id of its owner; one whose owner on this host died is taken over, and a training
then resumes from its newest checkpoint; a file of the user's under that name is refused).
"""

from __future__ import annotations

from pathlib import Path

from daisy_upstream.outputs import OwnerLock

__all__ = ["CellLock"]


class CellLock:
    """``with CellLock(result) as held:`` - ``held`` is True when this process owns the cell."""

    def __init__(self, result: Path) -> None:
        self.path = self.lock_path(result)
        self._lock = OwnerLock(self.path)

    @property
    def held(self) -> bool:
        return self._lock.held

    @staticmethod
    def lock_path(result: Path) -> Path:
        result = Path(result)
        return result.parent.parent / f".{result.parent.name}-{result.name}.lock"

    @staticmethod
    def held_elsewhere(result: Path) -> bool:
        """Whether another living process holds the cell of ``result``."""
        return OwnerLock(CellLock.lock_path(result)).held_elsewhere()

    def __enter__(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self._lock.acquire()

    def __exit__(self, *exc) -> None:
        self._lock.release()
