"""Task layouts derived from the synthesised ASR tree: SID, SE, SS and noisy test copies.

All randomness (split assignment, noise type, SNR, noise offset, partner choice) is drawn
from generators seeded by the corpus seed and the utterance id, so results do not depend
on the number of workers. Noisy files are mixed in numpy at an exact SNR (see
:mod:`.noise`); the SNR measured on the stored 16-bit samples is recorded in ``meta.tsv``.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from daisy_upstream.atomic import atomic_write_text as write_text
from daisy_upstream.audio.io import SAMPLE_RATE, read_audio
from daisy_upstream.audio.noise import NOISE_COLOURS, babble, fit_length, measure_snr, mix_at_snr, sox_noise
from daisy_upstream.audio.write import to_pcm16, write_audio

from . import tts
from .parallel import parallel_map
from .plan import CorpusPlan, Utterance
from .text import generate_sentences

__all__ = ["WRITERS", "NOISE_TYPES", "NOISY_CONDITIONS", "MIXED_SHARES", "noise_bank"]

#: Noise types used for SE and the noisy copies.
NOISE_TYPES = NOISE_COLOURS + ("babble",)
#: Conditions of the noisy test copies and their target SNRs (``None``: clean).
NOISY_CONDITIONS = {"clean": None, "snr10": 10.0, "snr5": 5.0, "snr0": 0.0}
#: The paper's mixed set: shares of clean / 10 / 5 / 0 dB.
MIXED_SHARES = (("clean", 0.4), ("snr10", 0.3), ("snr5", 0.2), ("snr0", 0.1))
SE_SNRS = {"train": (0.0, 5.0, 10.0, 15.0), "dev": (2.5, 7.5, 12.5, 17.5), "test": (2.5, 7.5, 12.5, 17.5)}
PEAK = 0.99
_BANK: Dict[str, np.ndarray] = {}


def _rng(seed: int, *parts) -> np.random.Generator:
    h = hashlib.sha256(repr((seed,) + parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def noise_bank(plan: CorpusPlan, seed: int, seconds: float = 30.0) -> Dict[str, np.ndarray]:
    """Unit-RMS noise signals: sox white/pink/brown noise and babble of held-out voices."""
    bank = {c: sox_noise(c, seconds, seed + i) for i, c in enumerate(NOISE_COLOURS)}
    used = {u.transcript for u in plan.utterances}
    sents = [s for s in generate_sentences(4 * len(plan.babble_voices) + 50, seed=seed + 7919) if s not in used]
    speech = []
    for i, v in enumerate(plan.babble_voices):
        parts = [tts.synthesize(v, s.lower()) for s in sents[4 * i : 4 * i + 4]]
        speech.append(np.concatenate(parts))
    bank["babble"] = babble(speech, int(seconds * SAMPLE_RATE), seed)
    return bank


def _noise_for(kind: str, length: int, rng: np.random.Generator) -> np.ndarray:
    src = _BANK[kind]
    return fit_length(src, length, int(rng.integers(0, src.size)))


def _mix(clean: np.ndarray, noise: np.ndarray, snr: float) -> Tuple[np.ndarray, np.ndarray, float]:
    """Mix at ``snr``; returns ``(clean_stored, mix_stored, measured_snr)`` (16-bit exact)."""
    mix = mix_at_snr(clean, noise, snr)
    gain = min(1.0, PEAK / float(np.max(np.abs(mix))))
    clean_q = to_pcm16(clean * gain)
    mix_q = to_pcm16(mix * gain)
    return clean_q, mix_q, measure_snr(clean_q, mix_q - clean_q)


def _scp(lines: Sequence[Tuple[str, Path]]) -> str:
    return "".join(f"{k} {p}\n" for k, p in sorted(lines))


# ----------------------------------------------------------------------------- SID
def _sid_job(job) -> None:
    src, dst = job
    if not Path(dst).exists():
        write_audio(dst, read_audio(src))


def write_sid(out: Path, plan: CorpusPlan, lengths, seed: int, workers: int, progress: bool) -> Dict[str, str]:
    """VoxCeleb1-like SID layout: ``sid/dev/wav/idNNNNN/<video>/<nnnnn>.wav`` and
    ``sid/iden_split.txt`` (``1``/``2``/``3`` = train/dev/test). Every speaker (of all three
    ASR splits) appears in each split; about 80/10/10% of its utterances."""
    root = out / "sid"
    libri = out / "asr" / "LibriSpeech"
    by_spk: Dict[int, List[Utterance]] = {}
    for u in plan.utterances:
        by_spk.setdefault(u.speaker, []).append(u)
    jobs, meta = [], []
    for spk, us in sorted(by_spk.items()):
        us = sorted(us, key=lambda u: u.utt_id)
        order = list(range(len(us)))
        random.Random(seed * 1000003 + spk).shuffle(order)
        n_eval = max(1, round(0.1 * len(us))) if len(us) >= 3 else 0
        split_of = {}
        for rank, i in enumerate(order):
            split_of[i] = 3 if rank < n_eval else 2 if rank < 2 * n_eval else 1
        for i, u in enumerate(us):
            rel = f"id{10001 + spk}/v{u.chapter}/{i + 1:05d}.wav"
            jobs.append((str(libri / u.rel_path), str(root / "dev" / "wav" / rel)))
            meta.append(f"{split_of[i]} {rel}\n")
    parallel_map(_sid_job, jobs, workers, "SID layout", progress)
    write_text(root / "iden_split.txt", "".join(meta))
    return {"file_path": str(root), "meta_data": str(root / "iden_split.txt")}


# ----------------------------------------------------------------------------- SE
def _se_job(job) -> Tuple[str, str, float, float]:
    utt_id, src, split_dir, split, seed = job
    rng = _rng(seed, "se", utt_id)
    kind = NOISE_TYPES[int(rng.integers(0, len(NOISE_TYPES)))]
    snr = float(rng.choice(SE_SNRS[split]))
    clean = read_audio(src)
    c, m, measured = _mix(clean, _noise_for(kind, clean.size, rng), snr)
    write_audio(Path(split_dir) / "clean" / f"{utt_id}.wav", c)
    write_audio(Path(split_dir) / "noisy" / f"{utt_id}.wav", m)
    return kind, f"{snr:g}", measured, 0.0


def write_se(out: Path, plan: CorpusPlan, lengths, seed: int, workers: int, progress: bool) -> Dict[str, str]:
    """VoiceBank-like SE layout: ``se/{train,dev,test}/{noisy,clean}/wav.scp`` (absolute
    paths) plus ``meta.tsv`` with noise type, target and measured SNR."""
    root = out / "se"
    libri = out / "asr" / "LibriSpeech"
    res = {}
    for split in ("train", "dev", "test"):
        us = plan.by_split(split)
        d = root / split
        jobs = [(u.utt_id, str(libri / u.rel_path), str(d), split, seed) for u in us]
        results = parallel_map(_se_job, jobs, workers, f"SE {split}", progress)
        for cond in ("clean", "noisy"):
            write_text(d / cond / "wav.scp", _scp([(u.utt_id, d / cond / f"{u.utt_id}.wav") for u in us]))
        write_text(
            d / "meta.tsv",
            "utt\tnoise\ttarget_snr\tmeasured_snr\n"
            + "".join(f"{u.utt_id}\t{k}\t{t}\t{m:.4f}\n" for u, (k, t, m, _) in zip(us, results)),
        )
        res[f"{split}_dir"] = str(d)
    return res


# ----------------------------------------------------------------------------- SS
def _ss_job(job) -> Tuple[str, float, float]:
    mix_id, src1, src2, split_dir, seed = job
    rng = _rng(seed, "ss", mix_id)
    a, b = read_audio(src1), read_audio(src2)
    n = min(a.size, b.size)
    sir = float(rng.uniform(-2.5, 2.5))
    s1, mix, measured = _mix(a[:n], b[:n], sir)
    s2 = to_pcm16(mix - s1)
    d = Path(split_dir)
    write_audio(d / "s1" / f"{mix_id}.wav", s1)
    write_audio(d / "s2" / f"{mix_id}.wav", s2)
    write_audio(d / "mix_clean" / f"{mix_id}.wav", to_pcm16(s1 + s2))
    return mix_id, sir, measured


def write_ss(out: Path, plan: CorpusPlan, lengths, seed: int, workers: int, progress: bool) -> Dict[str, str]:
    """LibriMix-like two-speaker SS layout: ``ss/{train,dev,test}/{mix_clean,s1,s2}/wav.scp``
    (``min`` mode: both sources cut to the shorter one; relative level uniform in
    [-2.5, 2.5] dB), plus ``meta.tsv``."""
    root = out / "ss"
    libri = out / "asr" / "LibriSpeech"
    res = {}
    for split in ("train", "dev", "test"):
        us = sorted(plan.by_split(split), key=lambda u: u.utt_id)
        r = random.Random(seed * 7 + len(split))
        order = us[:]
        r.shuffle(order)
        pairs = []
        pool = order[:]
        while len(pool) >= 2:
            a = pool.pop()
            j = next((k for k in range(len(pool) - 1, -1, -1) if pool[k].speaker != a.speaker), None)
            if j is None:
                break
            b = pool.pop(j)
            pairs.append((a, b))
        d = root / split
        jobs = [
            (f"{a.utt_id}_{b.utt_id}", str(libri / a.rel_path), str(libri / b.rel_path), str(d), seed) for a, b in pairs
        ]
        results = parallel_map(_ss_job, jobs, workers, f"SS {split}", progress)
        for cond in ("mix_clean", "s1", "s2"):
            write_text(d / cond / "wav.scp", _scp([(j[0], d / cond / f"{j[0]}.wav") for j in jobs]))
        write_text(
            d / "meta.tsv",
            "mix\tsir_target\tsir_measured\n" + "".join(f"{m}\t{s:.4f}\t{x:.4f}\n" for m, s, x in results),
        )
        res[f"{split}_dir"] = str(d)
    return res


# ----------------------------------------------------------------------------- noisy copies
def _noisy_job(job) -> List[Tuple[str, str, str, float]]:
    utt_id, src, root, seed = job
    rng = _rng(seed, "noisy", utt_id)
    kind = NOISE_TYPES[int(rng.integers(0, len(NOISE_TYPES)))]
    clean = read_audio(src)
    noise = _noise_for(kind, clean.size, rng)  # same noise segment at every SNR
    rows = []
    for cond, snr in NOISY_CONDITIONS.items():
        path = Path(root) / cond / f"{utt_id}.wav"
        if snr is None:
            write_audio(path, clean)
            rows.append((cond, "none", "inf", float("inf")))
        else:
            _, m, measured = _mix(clean, noise, snr)
            write_audio(path, m)
            rows.append((cond, kind, f"{snr:g}", measured))
    return rows


def write_noisy(out: Path, plan: CorpusPlan, lengths, seed: int, workers: int, progress: bool) -> Dict[str, str]:
    """Noisy copies of the ASR test split: ``noisy/{clean,snr10,snr5,snr0}/`` (each with
    the audio, ``wav.scp`` and ``meta.tsv``: utterance, speaker, noise, target and measured
    SNR, transcript) and ``noisy/mixed/`` (wav.scp + meta.tsv pointing into the others:
    40% clean, 30% 10 dB, 20% 5 dB, 10% 0 dB). One utterance keeps the same noise type and
    segment at every SNR."""
    root = out / "noisy"
    libri = out / "asr" / "LibriSpeech"
    us = sorted(plan.by_split("test"), key=lambda u: u.utt_id)
    jobs = [(u.utt_id, str(libri / u.rel_path), str(root), seed) for u in us]
    results = parallel_map(_noisy_job, jobs, workers, "noisy copies", progress)
    header = "utt\tspeaker\tnoise\ttarget_snr\tmeasured_snr\ttranscript\n"
    rows_by_cond: Dict[str, Dict[str, str]] = {c: {} for c in NOISY_CONDITIONS}
    for u, rows in zip(us, results):
        for cond, kind, target, measured in rows:
            rows_by_cond[cond][u.utt_id] = (
                f"{u.utt_id}\t{u.speaker}\t{kind}\t{target}\t{measured:.4f}\t{u.transcript}\n"
            )
    for cond in NOISY_CONDITIONS:
        d = root / cond
        write_text(d / "wav.scp", _scp([(u.utt_id, d / f"{u.utt_id}.wav") for u in us]))
        write_text(d / "meta.tsv", header + "".join(rows_by_cond[cond][u.utt_id] for u in us))
    # the mixed set: exact shares (rounded), assignment shuffled with the seed
    n = len(us)
    counts = [int(round(share * n)) for _, share in MIXED_SHARES]
    counts[0] += n - sum(counts)
    conds = [c for (c, _), k in zip(MIXED_SHARES, counts) for _ in range(k)]
    random.Random(seed + 4242).shuffle(conds)
    d = root / "mixed"
    write_text(d / "wav.scp", _scp([(u.utt_id, root / c / f"{u.utt_id}.wav") for u, c in zip(us, conds)]))
    write_text(
        d / "meta.tsv", "condition\t" + header + "".join(f"{c}\t{rows_by_cond[c][u.utt_id]}" for u, c in zip(us, conds))
    )
    return {"root": str(root), "conditions": ",".join(list(NOISY_CONDITIONS) + ["mixed"])}


def _with_bank(writer):
    def run(out, plan, lengths, seed, workers, progress):
        if not _BANK:
            _BANK.update(noise_bank(plan, seed))
        return writer(out, plan, lengths, seed, workers, progress)

    run.__doc__ = writer.__doc__
    return run


WRITERS = {"sid": write_sid, "se": _with_bank(write_se), "ss": write_ss, "noisy": _with_bank(write_noisy)}


# ----------------------------------------------------------------------------- real speech
#: Debian's pocketsphinx-testdata: 5 LibriVox utterances (public domain) with transcripts.
REAL_SPEECH_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")


def real_speech_available(path: Path = REAL_SPEECH_DIR) -> bool:
    """Whether the real recordings of ``pocketsphinx-testdata`` are installed."""
    return (path / "transcription").exists()


def write_real(
    out: Path, plan: CorpusPlan, lengths, seed: int, workers: int, progress: bool, source: Path = REAL_SPEECH_DIR
) -> Dict[str, str]:
    """Real recordings (never committed; read from the Debian package at make time) in the
    layout of the noisy copies: ``real/{clean,snr10,snr5,snr0,mixed}/`` with ``wav.scp``
    and ``meta.tsv`` (speaker ``librivox``; transcripts upper-cased)."""
    from .text import normalize_text

    if not real_speech_available(source):
        raise FileNotFoundError(
            f"no real recordings at {source}; run `apt-get install pocketsphinx-testdata` or leave out the 'real' task"
        )
    root = out / "real"
    items = []
    for line in (source / "transcription").read_text().splitlines():
        if "(" not in line:
            continue
        words, utt = line.rsplit("(", 1)
        utt = utt.strip().rstrip(")")
        words = words.replace("<s>", " ").replace("</s>", " ")
        items.append((utt, normalize_text(words)))
    jobs = [(utt, str(source / f"{utt}.wav"), str(root), seed) for utt, _ in items]
    results = parallel_map(_noisy_job, jobs, workers, "real speech", progress)
    header = "utt\tspeaker\tnoise\ttarget_snr\tmeasured_snr\ttranscript\n"
    for cond in NOISY_CONDITIONS:
        d = root / cond
        rows = [r for res in results for r in res if r[0] == cond]
        write_text(d / "wav.scp", _scp([(u, d / f"{u}.wav") for u, _ in items]))
        write_text(
            d / "meta.tsv",
            header + "".join(f"{u}\tlibrivox\t{k}\t{t}\t{m:.4f}\t{tr}\n" for (u, tr), (_, k, t, m) in zip(items, rows)),
        )
    return {"root": str(root), "source": str(source), "conditions": ",".join(NOISY_CONDITIONS)}


WRITERS["real"] = _with_bank(write_real)
