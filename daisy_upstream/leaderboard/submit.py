"""``daisy submit``: the SUPERB public-set ``predict.zip`` from s3prl runner experiment directories.

One experiment directory per task; from each, the one file the s3prl runner wrote for the test
split goes to ``predict/<task>_public/`` in the zip, as s3prl's ``s3prl/submit/submit.py`` lays
it out (task names are that script's flags without dashes; ``asr`` stands for ``asr_no_lm``):

=============  =========================================  ==========================================
task           file in the experiment directory           member of the zip
=============  =========================================  ==========================================
pr             test-hyp.ark                               predict/pr_public/predict.ark
sid            test_predict.txt                           predict/sid_public/predict.txt
ks             test_predict.txt                           predict/ks_public/predict.txt
ic             test_predict.csv                           predict/ic_public/predict.csv
er_fold1..5    test_fold{k}_predict.txt                   predict/er_fold{k}_public/predict.txt
asr_no_lm      test-clean-noLM-hyp.ark                    predict/asr_public/predict.ark
asr_with_lm    test-clean-LM-hyp.ark                      predict/asr_lm_public/predict.ark
qbe            benchmark.stdlist.xml                      predict/qbe_public/benchmark.stdlist.xml
sf             test-hyp.ark                               predict/sf_public/predict.ark
sv             test_predict.txt                           predict/sv_public/predict.txt
sd             scoring/predictions/ (+ frame_shift)       predict/sd_public/scoring/predictions/...
se             test_metrics.txt                           predict/se_public/metrics.txt
ss             test_metrics.txt                           predict/ss_public/metrics.txt
st             output-st-test.tsv                         predict/st_public/predict.tsv
=============  =========================================  ==========================================

ER is scored only when all five folds are submitted. The zip is written to a temporary file
beside the target and renamed (:func:`daisy_upstream.atomic.atomic_path`): a refused
submission leaves no zip.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple, Union

from daisy_upstream.outputs import output_files

__all__ = ["TASKS", "ALIASES", "SubmissionError", "parse_pairs", "plan_submission", "write_predict_zip"]


@dataclass(frozen=True)
class TaskFile:
    """Where one task's prediction is in the experiment directory and in the zip."""

    source: str  # relative to the experiment directory (a folder for sd)
    member: str  # relative to predict/
    folder: bool = False


TASKS: Dict[str, TaskFile] = {
    "pr": TaskFile("test-hyp.ark", "pr_public/predict.ark"),
    "sid": TaskFile("test_predict.txt", "sid_public/predict.txt"),
    "ks": TaskFile("test_predict.txt", "ks_public/predict.txt"),
    "ic": TaskFile("test_predict.csv", "ic_public/predict.csv"),
    **{f"er_fold{k}": TaskFile(f"test_fold{k}_predict.txt", f"er_fold{k}_public/predict.txt") for k in range(1, 6)},
    "asr_no_lm": TaskFile("test-clean-noLM-hyp.ark", "asr_public/predict.ark"),
    "asr_with_lm": TaskFile("test-clean-LM-hyp.ark", "asr_lm_public/predict.ark"),
    "qbe": TaskFile("benchmark.stdlist.xml", "qbe_public/benchmark.stdlist.xml"),
    "sf": TaskFile("test-hyp.ark", "sf_public/predict.ark"),
    "sv": TaskFile("test_predict.txt", "sv_public/predict.txt"),
    "sd": TaskFile("scoring/predictions", "sd_public/scoring/predictions", folder=True),
    "se": TaskFile("test_metrics.txt", "se_public/metrics.txt"),
    "ss": TaskFile("test_metrics.txt", "ss_public/metrics.txt"),
    "st": TaskFile("output-st-test.tsv", "st_public/predict.tsv"),
}
ALIASES = {"asr": "asr_no_lm"}
ER_FOLDS = tuple(f"er_fold{k}" for k in range(1, 6))


class SubmissionError(ValueError):
    """A submission that cannot be made (unknown task, missing or empty prediction file)."""


def parse_pairs(pairs: Sequence[str]) -> Dict[str, Path]:
    """``["sid=runs/sid", ...]`` -> ``{"sid": Path("runs/sid")}`` (aliases resolved)."""
    tasks: Dict[str, Path] = {}
    for pair in pairs:
        name, sep, expdir = pair.partition("=")
        name = ALIASES.get(name.strip(), name.strip())
        if not sep or not expdir:
            raise SubmissionError(f"{pair!r}: expected TASK=EXPDIR (e.g. sid=result/downstream/sid_daisy)")
        if name not in TASKS:
            raise SubmissionError(f"unknown task {name!r}; choose from {', '.join([*TASKS, *ALIASES])}")
        if name in tasks:
            raise SubmissionError(f"task {name} given twice")
        tasks[name] = Path(expdir)
    if not tasks:
        raise SubmissionError("no task given: pass TASK=EXPDIR pairs, e.g. sid=result/downstream/sid_daisy")
    return tasks


def _inside(name: str, path: Path, expdir: Path) -> Path:
    """``path``, refused when it (or a link on its way) leads outside ``expdir``: nothing but the
    experiment's own files goes into the zip."""
    target = path.resolve()
    root = expdir.resolve()
    if target != root and root not in target.parents:
        raise SubmissionError(
            f"{name}: {path} is a symbolic link to {target}, outside the experiment directory {expdir}; "
            "copy the file into the experiment directory if it is meant to be submitted"
        )
    return path


def plan_submission(tasks: Mapping[str, Union[str, Path]]) -> Tuple[List[Tuple[Path, str]], List[str]]:
    """Check every source and list ``(file, zip member)`` pairs, plus warnings.

    An experiment directory given as a symbolic link is followed (with a warning saying so);
    a prediction file or folder that is a link leading outside its experiment directory is refused.

    Raises:
        SubmissionError: a task's experiment directory, file or folder is missing or empty,
            or leads outside the experiment directory (one line naming the task and the file).
    """
    entries: List[Tuple[Path, str]] = []
    warnings = []
    for name, expdir in tasks.items():
        spec = TASKS[name]
        expdir = Path(expdir)
        source = expdir / spec.source
        if not expdir.is_dir():
            raise SubmissionError(f"{name}: experiment directory {expdir} does not exist")
        if expdir.is_symlink():
            warnings.append(f"{name}: the experiment directory {expdir} is a link; reading {expdir.resolve()}")
        if spec.folder:
            files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else []
            files = [_inside(name, p, expdir) for p in files]
            if not files:
                raise SubmissionError(
                    f"{name}: {source} is missing or holds no prediction files "
                    "(run the runner's test split with save_predictions on)"
                )
            entries += [(p, f"predict/{spec.member}/{p.relative_to(source).as_posix()}") for p in files]
            frame_shift = Path(expdir) / "frame_shift"
            if frame_shift.is_file():
                _inside(name, frame_shift, expdir)
                entries.append((frame_shift, f"predict/{spec.member.split('/')[0]}/frame_shift"))
            continue
        if not source.is_file():
            raise SubmissionError(
                f"{name}: {source} not found (run the s3prl runner with -m evaluate on the test split)"
            )
        _inside(name, source, expdir)
        if source.stat().st_size == 0 or not source.read_bytes().strip():
            raise SubmissionError(f"{name}: {source} is empty (or only whitespace): no predictions")
        entries.append((source, f"predict/{spec.member}"))
    folds = [t for t in ER_FOLDS if t in tasks]
    if folds and len(folds) < len(ER_FOLDS):
        warnings.append(
            f"ER: only {len(folds)} of 5 folds ({', '.join(folds)}); ER will NOT be scored "
            "unless all five folds are submitted"
        )
    return entries, warnings


def write_predict_zip(
    tasks: Mapping[str, Union[str, Path]], out: Union[str, Path], force: bool = False
) -> Tuple[List[str], List[str]]:
    """Write ``out`` (the public-set ``predict.zip``) atomically (:func:`daisy_upstream.outputs.output_files`:
    an existing ``out`` only with ``force`` and only if ``daisy submit`` wrote it; never an input file).

    Returns:
        ``(members, warnings)``.

    Raises:
        SubmissionError: see :func:`plan_submission`; nothing is written then.
        OutputRefused: see :mod:`daisy_upstream.outputs`.
    """

    entries, warnings = plan_submission(tasks)
    with output_files([out], "submit", force, inputs=[source for source, _ in entries]) as (tmp,):
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for source, member in entries:
                archive.write(source, member)
    return [member for _, member in entries], warnings


def describe_tasks() -> str:
    """The mapping, one task per line (for ``--help``)."""
    return "\n".join(f"  {name:<12} {spec.source:<26} -> predict/{spec.member}" for name, spec in TASKS.items())
