"""What Table 1 is made of: its rows, the trainings they need, and the cells of work.

A run is a list of *cells*, each finished cell leaving a result file, so an interrupted run
resumes where it stopped:

* ``train``: one s3prl downstream training per (task, run), run in ``rho1.0``, ``rho0.7``
  (the upstream runs the plain threshold, strategy ``none``, and the DAISY featurizer counts
  where utterances exit), ``fixed`` (strategy ``fixed``) and ``full``;
* ``eval``: one ``-m evaluate -e`` per (task, row); the six DAISY rows evaluate the
  checkpoint of their rho with the span's upstream config given as
  ``-o args.upstream_model_config=...`` (the span comes from the training's exit counts);
* ``time``: per task, the upstream forward on that task's test audio, every row side by
  side with the full model in one benchmark run (same weights, same audio, batch 1);
* ``base``: SE and SS, what the unprocessed test input scores (:mod:`.baselines`);
* ``mixed``: with ASR and a corpus holding the mixed-noise set, the paper's Fig. 5 (the
  rho 1.0 downstream against one trained with the fixed exit of equal average compute).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from daisy_upstream.integration.runner_io import TASKS, TEST_SPLIT

__all__ = [
    "CORPUS_LAYOUT",
    "SETTINGS",
    "holds_table",
    "RHOS",
    "SPANS",
    "TASKS",
    "TASK_TITLES",
    "TEST_SPLIT",
    "Cell",
    "Row",
    "default_rows",
    "training_configs",
]

TASK_TITLES = {"asr": "ASR", "voxceleb1": "SID", "enhancement_stft": "SE", "separation_stft": "SS"}
#: the corpus.json layout of each task (``daisy make-corpus``)
CORPUS_LAYOUT = {"asr": "asr", "voxceleb1": "sid", "enhancement_stft": "se", "separation_stft": "ss"}
RHOS = (1.0, 0.7)
SPANS = ("mean", "threshold", "min-max")


#: the file in ``--out`` that records what its table is made from (:meth:`.table.Table1.claim`)
SETTINGS = "settings.json"


def holds_table(folder: Path) -> bool:
    """Whether ``folder`` holds a Table 1 (its :data:`SETTINGS`), such as one made before the
    working-folder manifest existed (:func:`daisy_upstream.outputs.check_working_folder`)."""
    try:
        settings = json.loads((Path(folder) / SETTINGS).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(settings, dict) and {"ckpt", "fixed_layer", "task_configs"} <= set(settings)


@dataclass(frozen=True)
class Row:
    """One row of Table 1: which training run it evaluates and with which upstream config."""

    key: str
    label: str
    run: str  # training run: rho1.0, rho0.7, fixed, full
    upstream: Dict[str, Any] = field(hash=False, compare=False)


def _rho_key(rho: float) -> str:
    return f"rho{rho:.1f}"


def default_rows(fixed_layer: int, rhos: Sequence[float] = RHOS, spans: Sequence[str] = SPANS) -> List[Row]:
    """The paper's rows: DAISY rho x span, the fixed exit layer, the full model."""
    rows = []
    for rho in rhos:
        for span in spans:
            rows.append(
                Row(
                    f"{_rho_key(rho)}-{span}",
                    f"DAISY rho={rho:.1f}, {span}",
                    _rho_key(rho),
                    {"rho": float(rho), "strategy": span},
                )
            )
    rows.append(
        Row(
            "fixed",
            f"HuBERT first {fixed_layer}L (fixed exit)",
            "fixed",
            {"strategy": "fixed", "fixed_layer": int(fixed_layer)},
        )
    )
    rows.append(Row("full", "HuBERT, full model", "full", {"strategy": "full"}))
    return rows


def training_configs(rows: Sequence[Row]) -> Dict[str, Dict[str, Any]]:
    """Upstream config of each training run (DAISY rho runs train with strategy ``none``)."""
    runs: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        if row.run.startswith("rho"):
            runs.setdefault(row.run, {"rho": row.upstream["rho"], "strategy": "none"})
        else:
            runs.setdefault(row.run, dict(row.upstream))
    return runs


@dataclass(frozen=True)
class Cell:
    """A unit of work that leaves ``result`` (a JSON file) when finished.

    ``inputs`` is what the result must have been made from (a training's steps, the
    checkpoint an evaluation read): a result made from other inputs is stale and the cell
    runs again. ``after`` holds the result files of the cells it needs.
    """

    kind: str  # train | eval | time | base | mixed
    task: str
    name: str  # run (train), row key (eval), "all" (time)
    result: Path
    inputs: Dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    after: Tuple[Path, ...] = ()

    @property
    def title(self) -> str:
        return f"{self.kind} {self.task} {self.name}"

    def done(self) -> bool:
        if not self.result.is_file():
            return False
        try:
            made_from = json.loads(self.result.read_text()).get("inputs", {})
        except ValueError:  # cut short: not done
            return False
        return made_from == json.loads(json.dumps(self.inputs))
