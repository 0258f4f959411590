"""``make_corpus``: synthesise speech and write the s3prl task layouts.

Steps: plan (speakers, sentences, splits) -> synthesise every utterance once into the
LibriSpeech-like ASR tree (in parallel) -> derive the other tasks from those files (SID,
SE, SS, noisy test copies) -> write ``corpus.json``. Each file is written atomically and
existing files are kept, so an interrupted run can simply be repeated.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import numpy as np

from daisy_upstream.atomic import atomic_write_text as write_text
from daisy_upstream.audio.io import SAMPLE_RATE, read_audio
from daisy_upstream.audio.write import write_audio

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


def _claim_folder(out_dir: Path, settings: Dict) -> None:
    """Record the settings a folder is made with; refuse to mix two corpora in one folder."""
    marker = out_dir / ".make_corpus_settings.json"
    if marker.exists():
        before = json.loads(marker.read_text())
        if before != settings:
            raise ValueError(f"{out_dir} already holds a corpus made with {before}; use another folder for {settings}")
    elif (out_dir / "corpus.json").exists():
        existing = json.loads((out_dir / "corpus.json").read_text())
        before = {
            "format_version": existing.get("format_version"),
            "seed": existing.get("seed"),
            **{k: existing.get("settings", {}).get(k) for k in ("hours", "flite")},
        }
        if any(before[k] != settings[k] for k in before):
            raise ValueError(f"{out_dir} already holds a corpus made with {before}; use another folder for {settings}")
        write_text(marker, json.dumps(settings, sort_keys=True) + "\n")
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} is not empty and holds no make-corpus corpus; choose a new or empty folder")
    else:
        write_text(marker, json.dumps(settings, sort_keys=True) + "\n")


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
    _claim_folder(
        out_dir,
        {"format_version": FORMAT_VERSION, "hours": hours, "seed": seed, "num_speakers": num_speakers, "flite": flite},
    )
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
    return out_dir
