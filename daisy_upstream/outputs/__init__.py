"""Where commands write: every output set complete or absent, nothing a user wrote replaced.

One policy for every ``daisy`` command that writes results (the resumable state folder of
``pretrain-tiny`` keeps its own semantics; the working folders of ``demo``, ``table1``,
``make-corpus`` and ``train-branches --work-dir`` are claimed, see below):

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
record their absolute paths; a ``make-corpus`` folder; a ``train-branches`` work dir: re-run
to continue) cannot be built aside; :func:`claim_working_folder` applies the same refusals
and marks the folder as the command's (with the settings it was made with, where given), so a
later run continues only in a folder that command claimed, with the same settings.

The package's modules: :mod:`.checks` (the refusals and ownership records), :mod:`.writing`
(write aside, rename into place), :mod:`.working` (working folders and locks).

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

from .checks import FILE_MANIFEST, FOLDER_MANIFEST, OutputRefused, check_output_files, check_output_folder
from .working import LOCK_FILE, OwnerLock, check_working_folder, claim_working_folder, locked_folder
from .writing import output_files, output_folder

__all__ = [
    "FOLDER_MANIFEST",
    "FILE_MANIFEST",
    "LOCK_FILE",
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
