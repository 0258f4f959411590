"""``make_corpus``: synthesise speech and write the s3prl task layouts.

Steps: plan (speakers, sentences, splits) -> synthesise every utterance once into the
LibriSpeech-like ASR tree (in parallel) -> derive the other tasks from those files (SID,
SE, SS, noisy test copies) -> write ``corpus.json``. Each file is written atomically and
existing files are kept, so an interrupted run can simply be repeated.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import numpy as np

from daisy_upstream.atomic import atomic_write_text as write_text
from daisy_upstream.atomic import output_error
from daisy_upstream.audio.io import SAMPLE_RATE, read_audio
from daisy_upstream.audio.write import write_audio
from daisy_upstream.outputs import OutputRefused, claim_working_folder

from . import tts
from .asr_layout import write_asr_metadata
from .parallel import parallel_map
from .plan import CorpusPlan, plan_corpus, plan_summary

__all__ = ["make_corpus", "TASKS", "PEAK_LEVEL"]

#: Tasks ``make_corpus`` can write (``asr`` is always written: the others derive from it).
#: ``real`` copies the LibriVox recordings of Debian's pocketsphinx-testdata (+ noisy copies).
TASKS = ("asr", "sid", "se", "ss", "noisy", "real")
#: Every utterance is scaled to this absolute peak, leaving headroom for noise.
PEAK_LEVEL = 0.5
FORMAT_VERSION = 1
TOOL = "make-corpus"
#: the settings record of corpora made before folders were claimed through daisy_upstream.outputs
LEGACY_MARKER = ".make_corpus_settings.json"


def _synth_job(job: Tuple[str, tts.Voice, str]) -> Tuple[str, int]:
    path, voice, text = job
    p = Path(path)
    if p.exists():
        return path, int(read_audio(p).shape[0])
    wav = tts.synthesize(voice, text)
    peak = float(np.max(np.abs(wav)))
    if peak <= 0:
        raise RuntimeError(f"{voice.key} produced silence for {text!r}")
    wav = wav * (PEAK_LEVEL / peak)
    write_audio(p, wav)
    return path, int(wav.shape[0])


def synthesize_plan(plan: CorpusPlan, asr_root: Path, workers: int, progress: bool = True) -> Dict[str, int]:
    """Synthesise every planned utterance into the ASR tree; returns id -> samples."""
    libri = asr_root / "LibriSpeech"
    jobs = [(str(libri / u.rel_path), plan.speakers[u.speaker], u.tts_text) for u in plan.utterances]
    results = parallel_map(_synth_job, jobs, workers, "synthesising", progress)
    return {u.utt_id: n for u, (_, n) in zip(plan.utterances, results)}


def _legacy_settings(out_dir: Path) -> Optional[Dict]:
    """The settings of a corpus made before folders were claimed (its marker or its manifest)."""
    marker = out_dir / LEGACY_MARKER
    try:
        if marker.is_file():
            return json.loads(marker.read_text())
        if (out_dir / "corpus.json").is_file():
            existing = json.loads((out_dir / "corpus.json").read_text())
            return {
                "format_version": existing.get("format_version"),
                "seed": existing.get("seed"),
                **{k: existing.get("settings", {}).get(k) for k in ("hours", "flite")},
            }
    except (OSError, ValueError, AttributeError):
        return None
    return None


def _claim_folder(out_dir: Path, settings: Dict) -> bool:
    """Claim ``out_dir`` as make-corpus's working folder with ``settings``
    (:func:`daisy_upstream.outputs.claim_working_folder`); True when it was new or empty.

    Raises:
        OutputRefused: a folder of other files, or of a corpus made with other settings.
    """
    fresh = not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir()))
    before = _legacy_settings(out_dir)
    if before is not None and any(before.get(k) != settings.get(k) for k in before):
        raise OutputRefused(f"{out_dir} already holds a corpus made with {before}; use another folder for {settings}")
    claim_working_folder(out_dir, TOOL, made_before=lambda _: before is not None, settings=settings, flag="folder")
    return fresh


def _remove_what_this_run_made(out_dir: Path, existed: bool) -> None:
    """Undo a corpus begun in a new or empty folder: the folder itself only where this run made it
    (an empty folder the user gave stays, emptied of what this run wrote)."""
    if not existed:
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    for child in out_dir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def make_corpus(
    out_dir: Path,
    hours: float = 0.5,
    seed: int = 0,
    tasks: Optional[Iterable[str]] = None,
    workers: Optional[int] = None,
    num_speakers: int = 0,
    flite: bool = True,
    progress: bool = True,
) -> Path:
    """Make a synthetic speech corpus and write the s3prl task layouts.

    Args:
        out_dir: corpus root (created). ``out_dir/corpus.json`` describes the result.
        hours: approximate hours of speech in the ASR tree (train+dev+test).
        seed: random seed; the same arguments give the same corpus.
        tasks: subset of :data:`TASKS`; ``asr`` is always included. Default: all, with
            ``real`` only when pocketsphinx-testdata is installed.
        workers: processes for synthesis (default: all cores).
        num_speakers: speakers in total (0: ``max(10, 50*sqrt(hours))``).
        flite: also use flite voices (about 15% of the speakers).
        progress: show progress bars.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Re-running with the same arguments completes an interrupted run (existing audio is
    kept); a folder holding a corpus made with other settings is refused.

    Raises:
        ValueError: bad arguments, or ``out_dir`` holds something else.
        RuntimeError: a TTS program is missing or failed.
    """
    out_dir = Path(out_dir).resolve()
    if tasks is None:
        from .derived import real_speech_available

        tasks = [t for t in TASKS if t != "real" or real_speech_available()]
    tasks = sorted(set(tasks) | {"asr"})
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown task(s) {sorted(unknown)}; choose from {list(TASKS)}")
    if not hours > 0:
        raise ValueError(f"hours must be positive, got {hours}")
    if num_speakers < 0:
        raise ValueError(f"num_speakers must be >= 0, got {num_speakers}")
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    tts.check_engines(flite=flite)
    settings = {
        "format_version": FORMAT_VERSION,
        "hours": hours,
        "seed": seed,
        "num_speakers": num_speakers,
        "flite": flite,
    }
    existed = out_dir.exists()
    fresh = _claim_folder(out_dir, settings)
    try:
        _write_corpus(out_dir, hours, seed, tasks, workers, num_speakers, flite, progress)
    except OSError as error:  # a full disk, a read-only folder: one line naming the folder
        if fresh:  # nothing of a corpus this run began is left (an older one's files are kept)
            _remove_what_this_run_made(out_dir, existed)
        failed = output_error(out_dir, error)
        if failed is None:
            raise
        raise failed from error
    return out_dir


def _write_corpus(
    out_dir: Path, hours: float, seed: int, tasks: list, workers: int, num_speakers: int, flite: bool, progress: bool
) -> None:
    """Plan, synthesise and derive the layouts; ``corpus.json`` last (its presence = complete)."""
    t0 = time.time()
    plan = plan_corpus(hours, seed, tts.espeak_variants(), num_speakers=num_speakers, flite=flite)
    asr_root = out_dir / "asr"
    lengths = synthesize_plan(plan, asr_root, workers, progress)
    write_asr_metadata(asr_root, plan.utterances, lengths)
    manifest = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "settings": {
            "hours": hours,
            "num_speakers": len(plan.speakers),
            "flite": flite,
            "tasks": tasks,
            "peak_level": PEAK_LEVEL,
            "sample_rate": SAMPLE_RATE,
        },
        "counts": plan_summary(plan),
        "hours": {
            split: sum(lengths[u.utt_id] for u in plan.by_split(split)) / SAMPLE_RATE / 3600
            for split in ("train", "dev", "test")
        },
        "speakers": [
            {
                "index": i,
                "split": plan.speaker_split[i],
                "voice": v.key,
                "librispeech_id": 100 + i,
                "voxceleb_id": f"id{10001 + i}",
            }
            for i, v in enumerate(plan.speakers)
        ],
        "babble_voices": [v.key for v in plan.babble_voices],
        "layouts": {
            "asr": {
                "libri_root": str(asr_root / "LibriSpeech"),
                "bucket_file": str(asr_root / "len_for_bucket"),
                "dict_path": str(asr_root / "char.dict"),
            }
        },
    }
    from . import derived  # noqa: WPS433 (kept lazy: only needed beyond ASR)

    for task in tasks:
        if task != "asr":
            manifest["layouts"][task] = derived.WRITERS[task](out_dir, plan, lengths, seed, workers, progress)
    manifest["seconds_to_make"] = round(time.time() - t0, 1)
    write_text(out_dir / "corpus.json", json.dumps(manifest, indent=1) + "\n")
