"""Writing aside and renaming into place: a folder or files complete or absent."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

from daisy_upstream.atomic import atomic_write_json, make_folders, output_error, remove_folders

from .checks import (
    FILE_MANIFEST,
    FOLDER_MANIFEST,
    PathLike,
    _contents,
    _file_manifest,
    _parent_lock,
    _sha256,
    _tool_name,
    _umask,
    check_output_files,
    check_output_folder,
)


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
