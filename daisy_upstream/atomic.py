"""Atomic file writing: a file appears under its name only once it is completely written.

Every file the package writes (checkpoints, configs, tables, plots, audio) goes through
:func:`atomic_path`: the content is written to a temporary file beside the target, which
gets the usual mode of a new file (``0666 & ~umask``) and is renamed over the target; on
any failure the temporary file is removed and the target is left as it was, and so are
folders: those created for the target are removed again.

An OS error while writing (no space, read-only, no permission, a file where a folder should
be) becomes :class:`OutputFailed`: one line naming the target (never the hidden temporary
file) and what to do. Libraries that hide the OS error (torch's stream writer, libsndfile
raise a ``RuntimeError``) are handled too: torch writes through a file object that keeps
the error, and for any other ``RuntimeError`` a probe write in the target's folder finds it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator, List, Optional, Union

__all__ = [
    "OutputFailed",
    "probe_write",
    "atomic_path",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_figure",
    "atomic_torch_save",
    "make_folders",
    "output_error",
    "remove_folders",
]

PathLike = Union[str, "os.PathLike[str]"]

#: errno -> what to do; these are the errors of writing an output (anything else passes unchanged)
_ADVICE = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some of your quota or write elsewhere",
    errno.EFBIG: "the file is larger than this system allows here; write elsewhere",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.EACCES: "no permission to write there; write elsewhere",
    errno.EPERM: "no permission to write there; write elsewhere",
    errno.ENOTDIR: "a part of the path is a file, not a folder; write elsewhere",
    errno.EEXIST: "a part of the path is a file, not a folder; write elsewhere",
    errno.EIO: "the device failed; check it or write elsewhere",
}
_PROBE_BYTES = 1 << 16


class OutputFailed(OSError):
    """An OS error while writing an output: one line naming the path the user gave and what to do.

    Built as ``OutputFailed(errno, strerror, path)`` (so it pickles like any ``OSError``).
    """

    def __str__(self) -> str:
        advice = _ADVICE.get(self.errno or 0, "write elsewhere")
        return f"cannot write {self.filename}: {self.strerror} ({advice})"


def output_error(path: PathLike, error: BaseException) -> Optional[OutputFailed]:
    """``error`` as an :class:`OutputFailed` naming ``path``, or None when it is not an output error."""
    if isinstance(error, OSError) and error.errno in _ADVICE:
        return OutputFailed(error.errno, error.strerror or os.strerror(error.errno), str(path))
    return None


def probe_write(folder: Path) -> Optional[OSError]:
    """Write and remove a small file in ``folder``: the OS error a write there meets now, if any."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".daisy-probe-")
    except OSError as error:
        return error
    try:
        data = memoryview(b"\0" * _PROBE_BYTES)
        while data:  # a write the system cuts short is retried: the next one names the error
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    except OSError as error:
        return error
    finally:
        os.close(fd)
        os.unlink(name)
    return None


def make_folders(folder: PathLike) -> List[Path]:
    """``mkdir -p folder``; returns the folders it created (deepest last), for :func:`remove_folders`.

    Raises:
        OutputFailed: a part of the path is a file (ENOTDIR), or the folder cannot be made.
    """
    folder = Path(folder)
    missing = []
    existing = folder
    while not existing.exists() and not existing.is_symlink():
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        raise OutputFailed(errno.ENOTDIR, f"{existing} is a file", str(folder))
    created = []
    try:
        for part in reversed(missing):
            try:
                part.mkdir()
            except FileExistsError:
                if part.is_dir():  # made meanwhile by another process (parallel writers)
                    continue
                raise
            created.append(part)
    except OSError as error:
        remove_folders(created)
        raise output_error(folder, error) or error
    return created


def remove_folders(created: List[Path]) -> None:
    """Remove the folders :func:`make_folders` created, deepest first, where they are still empty."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _as_output_error(path: Path, error: BaseException) -> Optional[OutputFailed]:
    found = output_error(path, error)
    if found is None and isinstance(error, RuntimeError) and path.parent.is_dir():
        cause = probe_write(path.parent)  # a library that swallowed the OS error (libsndfile, ...)
        found = output_error(path, cause) if cause is not None else None
    return found


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); rename it to ``path`` on success.

    Creates ``path``'s folder if needed (and removes what it created on failure).

    Raises:
        OutputFailed: an OS error while writing (see the module docstring).
    """
    path = Path(path)
    created = make_folders(path.parent)
    tmp: Optional[str] = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        failed = _as_output_error(path, error)  # (the probe writes in the folder: before removing it)
        remove_folders(created)
        if failed is not None:
            raise failed from error
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: PathLike, payload: Any) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def atomic_save_figure(fig: Any, path: PathLike, dpi: int = 110) -> None:
    """Save a matplotlib figure to ``path`` atomically (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)


class _KeepsErrors:
    """A binary file for ``torch.save`` that keeps the OS error of a failed write (torch's stream
    writer reports only ``unexpected pos``)."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.error: Optional[OSError] = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename over it."""
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as raw:
            file = _KeepsErrors(raw)
            try:
                torch.save(obj, file)
            except RuntimeError:
                if file.error is not None:
                    raise file.error from None
                raise
