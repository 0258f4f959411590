"""``daisy export-hidden``: a SUPERB hidden-set submission folder, checked like the template.

The folder holds ``expert.py`` (:data:`~daisy_upstream.leaderboard.expert_template.EXPERT_PY`),
``model.pt`` (the checkpoint with the upstream config and exit statistics baked in, under
``daisy_export``), ``requirements.txt`` and a short ``README.md``. The organizers run s3prl's
stock featurizer, so the export sets ``layers_past_exit: copy``: the layers an utterance
skipped repeat its exit-layer state, and the weighted sum gives the exit layer their weights.

The folder is built beside ``out`` under a temporary name, checked in a fresh interpreter
(:mod:`daisy_upstream.leaderboard.hidden_checks`, working directory = the folder) and only then
renamed to ``out`` (:func:`daisy_upstream.outputs.output_folder`): an export that fails the
checks leaves nothing behind, and ``--force`` replaces only a folder a previous export wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from daisy_upstream.atomic import atomic_torch_save, atomic_write_text
from daisy_upstream.core.checkpoint import checkpoint_record, read_checkpoint
from daisy_upstream.core.policy import load_calibration
from daisy_upstream.evaluation.loading import load_upstream, span_note
from daisy_upstream.integration.compat import s3prl_distribution
from daisy_upstream.leaderboard.expert_template import EXPERT_PY, EXPORT_KEY
from daisy_upstream.outputs import check_output_folder, output_folder

__all__ = ["HiddenCheckFailed", "export_hidden", "requirements", "run_checks"]

PathLike = Union[str, Path]
TOOL = "daisy export-hidden"


class HiddenCheckFailed(ValueError):
    """The written folder failed the hidden-set template's checks."""


def requirements() -> List[str]:
    """daisy_upstream, each of its requirements (setup.cfg ``install_requires``, ranges) pinned to
    the version installed here, and the s3prl distribution in use (s3prl or espnet-s3prl)."""
    import re
    from importlib.metadata import PackageNotFoundError, requires, version

    try:
        names = [re.match(r"[A-Za-z0-9._-]+", r)[0] for r in (requires("daisy_upstream") or []) if "extra ==" not in r]
        own = f"daisy_upstream=={version('daisy_upstream')}"
    except PackageNotFoundError as error:
        raise FileNotFoundError(
            "daisy_upstream is not installed (its pins come from the installed metadata); run 'make install' first"
        ) from error
    s3prl = s3prl_distribution()
    return [own, *(f"{name}=={version(name)}" for name in names + ([s3prl] if s3prl else []))]


def run_checks(folder: PathLike, timeout: float = 600.0) -> Dict[str, Any]:
    """The template's checks in a fresh interpreter (cwd = ``folder``), with this daisy_upstream.

    Raises:
        HiddenCheckFailed: a check failed or the interpreter crashed (its output's tail named).
    """
    import daisy_upstream

    env = dict(os.environ)
    package_root = str(Path(daisy_upstream.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(
        [sys.executable, "-m", "daisy_upstream.leaderboard.hidden_checks"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    report = json.loads(lines[-1]) if lines else None
    if proc.returncode != 0 or report is None or not report.get("ok"):
        detail = "; ".join(report["problems"]) if report else (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise HiddenCheckFailed(f"the export failed the hidden-set template's checks: {detail}")
    return report


def _readme(values: Dict[str, Any], counts: Optional[List[int]], source: Path, report: Dict[str, Any]) -> str:
    stats = f"exit statistics {counts}" if counts else "no exit statistics (strategy 'none' needs none)"
    return "\n".join(
        [
            "# DAISY early-exit SSL model: SUPERB hidden-set submission",
            "",
            f'Exported by `daisy export-hidden` from `{source.name}`: `expert.py` (`UpstreamExpert(ckpt="model.pt")`),',
            "`model.pt` (the model in its s3prl format + DAISY exit branches, read with `torch.load(weights_only=True)`),",
            "`requirements.txt` (install daisy_upstream itself from its wheel or source).",
            "",
            f"Upstream config baked into model.pt: `{json.dumps(values)}`; {stats}.",
            "`layers_past_exit: copy`: hidden states past an utterance's exit layer repeat its exit state, so a",
            "stock weighted-sum featurizer gives the exit layer the weight of the layers it skipped.",
            "",
            f"Template checks passed (random 2, 1.8, 3.7 s waveforms): shapes {report['shapes']}, "
            f"downsample rates {report['rates']}.",
            "",
        ]
    )


def export_hidden(
    out: PathLike,
    ckpt: Optional[PathLike] = None,
    config: Optional[PathLike] = None,
    overrides: Optional[Dict[str, Any]] = None,
    stats: Optional[PathLike] = None,
    force: bool = False,
) -> Dict[str, Any]:
    """Write and check the submission folder ``out``.

    Returns:
        ``{"out", "upstream_config", "exit_counts", "span", "checks"}``.

    Raises:
        OutputRefused: ``out`` is not empty and ``force`` is false, or holds anything but a previous
            export, or is the current folder or holds an input (:mod:`daisy_upstream.outputs`).
        HiddenCheckFailed: the written folder fails the template's checks (nothing is left).
    """

    inputs = (ckpt, config, stats)
    out = check_output_folder(out, TOOL, force, inputs)  # before any work
    overrides = {**(overrides or {}), "layers_past_exit": "copy"}  # the organizers' featurizer is stock
    loaded = load_upstream(ckpt, config, overrides, stats)
    upstream, source, values, counts = loaded.upstream, loaded.checkpoint, loaded.config, loaded.exit_counts
    note = span_note(upstream, counts)  # fails here, not at the organizers', on a bad config
    state = read_checkpoint(source)
    if values.get("calibration"):  # a calibration file travels inside model.pt
        if isinstance(state.get("daisy"), dict):
            state["daisy"] = {**state["daisy"], "calibration": load_calibration(values["calibration"])}
            values = {**values, "calibration": None}
        else:  # authors' layout: no daisy entry to carry it, the threshold it gives is baked in
            values = {**values, "calibration": None, "tau": upstream.tau}
    state[EXPORT_KEY] = {
        "upstream_config": values,
        "exit_counts": counts,
        "source_checkpoint": checkpoint_record(source),
    }
    with output_folder(out, TOOL, force, inputs) as tmp:
        atomic_torch_save(state, tmp / "model.pt")
        atomic_write_text(tmp / "expert.py", EXPERT_PY)
        atomic_write_text(tmp / "requirements.txt", "\n".join(requirements()) + "\n")
        report = run_checks(tmp)
        atomic_write_text(tmp / "README.md", _readme(values, counts, source, report))
    return {"out": str(out), "upstream_config": values, "exit_counts": counts, "policy": note, "checks": report}
