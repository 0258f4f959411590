"""Which ``daisy make-corpus`` corpus feeds which Table 1 task, and making the missing ones.

By default ``daisy table1`` makes two corpora in its working folder: ``corpus`` (``--hours``,
1 h) for SID, SE and SS, and ``corpus_asr`` (``--asr-hours``, 8 h, 50 voices an hour) for ASR
and Fig. 5, since the ASR head needs more speech and voices than the other heads to read voices
it has not heard (docs/results/table1_embedded.md, learning curves). Equal hours make one
corpus for all.
A corpus the user names (``--corpus DIR`` for every task, ``--corpus TASK=DIR`` for one) is
read, never written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from daisy_upstream.factory.corpus.build import make_corpus

from .plan import CORPUS_LAYOUT, TASKS

__all__ = [
    "ASR_VOICES_PER_HOUR",
    "MADE_CORPORA",
    "assign_corpora",
    "has_mixed_set",
    "make_missing_corpora",
    "parse_corpus_args",
    "task_layout",
]

#: the corpora ``daisy table1`` makes in its working folder: ASR's own, and the one for the rest
MADE_CORPORA = {"asr": "corpus_asr", "other": "corpus"}
#: voices per hour of ASR's own corpus (8 h: 400 voices, 320 of them training voices): the corpora
#: of the learning curves in docs/results/table1_embedded.md (``make-corpus`` alone makes 50 x sqrt(hours))
ASR_VOICES_PER_HOUR = 50


def parse_corpus_args(items: Sequence[str]) -> Dict[Optional[str], Path]:
    """``--corpus`` values (``DIR`` or ``TASK=DIR``) as ``{task or None: folder}``.

    Raises:
        ValueError: an unknown task, or the same task (or two plain folders) given twice.
        FileNotFoundError: a folder without ``corpus.json``.
    """
    out: Dict[Optional[str], Path] = {}
    for item in items:
        task, sep, path = item.partition("=")
        if not sep or task not in TASKS:
            if sep and task.isidentifier():
                raise ValueError(f"--corpus {item!r}: unknown task {task!r}; choose from {', '.join(TASKS)}")
            task, path = None, item
        if task in out:
            raise ValueError(
                f"--corpus {item!r}: {'a corpus for ' + task if task else 'a corpus for every task'} is given twice"
            )
        if not (Path(path) / "corpus.json").is_file():
            raise FileNotFoundError(f"--corpus {item!r}: no corpus.json in {path} (make one with 'daisy make-corpus')")
        out[task] = Path(path).resolve()
    return out


def assign_corpora(
    tasks: Sequence[str], given: Mapping[Optional[str], Path], out: Path, hours: float, asr_hours: float
) -> Dict[str, Path]:
    """``{task: corpus folder}``: the user's (per task, then for every task), else one made in ``out``."""
    assigned = {}
    for task in tasks:
        if task in given:
            assigned[task] = Path(given[task])
        elif None in given:
            assigned[task] = Path(given[None])
        elif task == "asr" and asr_hours != hours:
            assigned[task] = Path(out) / MADE_CORPORA["asr"]
        else:
            assigned[task] = Path(out) / MADE_CORPORA["other"]
    return assigned


def make_missing_corpora(
    assigned: Mapping[str, Path],
    out: Path,
    hours: float,
    asr_hours: float,
    seed: int,
    workers: int,
    log: Callable[[str], None] = print,
) -> None:
    """Make (or finish making) the corpora of ``out`` that ``assigned`` uses; a made one is kept."""
    for name in sorted(set(MADE_CORPORA.values())):
        folder = Path(out) / name
        users = [task for task, corpus in assigned.items() if corpus == folder]
        if not users or (folder / "corpus.json").is_file():
            continue
        own = name == MADE_CORPORA["asr"]
        size = asr_hours if own else hours
        voices = max(6, round(ASR_VOICES_PER_HOUR * size)) if own else 0  # 0: make-corpus's default
        layouts: List[str] = [CORPUS_LAYOUT[t] for t in users] + ["noisy"]  # noisy: Fig. 5, noise-report
        log(f"[table1] making a {size} h corpus in {folder} (for {', '.join(users)})")
        make_corpus(folder, hours=size, seed=seed, tasks=layouts, workers=workers, num_speakers=voices)


def task_layout(task: str, corpus: Path) -> Mapping[str, str]:
    """The ``corpus.json`` layout of ``task`` in ``corpus``.

    Raises:
        ValueError: the corpus was made without that task.
    """
    layout = json.loads((Path(corpus) / "corpus.json").read_text())["layouts"].get(CORPUS_LAYOUT[task])
    if layout is None:
        raise ValueError(
            f"{corpus} has no {CORPUS_LAYOUT[task]!r} layout for {task}; "
            f"remake it with that task, or give --corpus {task}=DIR or --data-config {task}=PATH"
        )
    return layout


def has_mixed_set(corpus: Path) -> bool:
    """Whether ``corpus`` holds the mixed-noise set of Fig. 5 (its ``noisy`` layout)."""
    return "noisy" in json.loads((Path(corpus) / "corpus.json").read_text())["layouts"]
