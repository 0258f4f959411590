"""Where utterances exit as the SNR falls (the paper's Fig. 4): the same clips, mixed with the
same noise at each SNR, run through the DAISY upstream; a table, a JSON report and a violin plot.

The noise is mixed in numpy at an exact SNR (:func:`daisy_upstream.audio.noise.mix_at_snr`) and
the measured SNR is reported beside the target.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from daisy_upstream.atomic import atomic_save_figure, atomic_write_json, atomic_write_text
from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.audio.io import SAMPLE_RATE, NoAudioError, read_audio
from daisy_upstream.audio.noise import NOISE_COLOURS, fit_length, measure_snr, mix_at_snr, sox_noise
from daisy_upstream.core.checkpoint import checkpoint_record
from daisy_upstream.evaluation.speech_sets import pocketsphinx_recordings, segment

__all__ = [
    "DEFAULT_SNRS",
    "clean_clips",
    "exit_layers_by_snr",
    "format_report",
    "noise_signals",
    "parse_snrs",
    "snr_sweep",
]

#: the conditions of the sweep: ``clean`` or an SNR in dB
DEFAULT_SNRS = ("clean", "10", "5", "0")


def parse_snrs(values: Sequence[str]) -> List[Optional[float]]:
    """``["clean", "10", ...]`` -> ``[None, 10.0, ...]``.

    Raises:
        ValueError: a value is neither ``clean`` nor a number.
    """
    snrs: List[Optional[float]] = []
    for value in values:
        if value == "clean":
            snrs.append(None)
            continue
        try:
            snrs.append(float(value))
        except ValueError:
            raise ValueError(f"SNR {value!r}: give 'clean' or an SNR in dB") from None
    return snrs


def clean_clips(source: Optional[Union[str, Path]], max_clips: int, seed: int = 0) -> List[np.ndarray]:
    """Up to ``max_clips`` clean clips (float32, 16 kHz).

    ``source``: a directory of wav/flac or a list file (:meth:`AudioCorpus.from_source`); None:
    pocketsphinx-testdata's real recordings cut into 2-6 s clips.

    Raises:
        FileNotFoundError / NoAudioError: no usable audio.
    """
    if source:
        corpus = AudioCorpus.from_source(source)
        loaded, kept = corpus.load_batch(range(min(len(corpus), max_clips)))
        wavs = []
        for wav, index in zip(loaded, kept):  # a silent clip has no SNR: skipped and counted by path
            if bool(wav.any()):
                wavs.append(wav)
            else:
                corpus.problems.skip(corpus.items[index].path, "silent: zero energy, no SNR to mix at")
        if corpus.problems.num_skipped:
            print(f"[noise-report] {corpus.problems.summary()}", file=sys.stderr)
        if not wavs:
            raise NoAudioError(f"no usable audio in {source} ({corpus.problems.summary()})")
        return [w.numpy() for w in wavs][:max_clips]
    rng = np.random.default_rng(seed)
    recordings = pocketsphinx_recordings()
    total = sum(len(r) for r in recordings) / SAMPLE_RATE
    lengths: List[float] = []
    used = 0.0
    while used < total * 0.9 and len(lengths) < max_clips:
        lengths.append(float(rng.uniform(2.0, 6.0)))
        used += lengths[-1]
    return segment(recordings, lengths[:-1])[:max_clips]


def noise_signals(paths: Optional[Sequence[Union[str, Path]]], seconds: float, seed: int = 0) -> List[np.ndarray]:
    """The noise files (16 kHz mono), or sox white / pink / brown noise of ``seconds``."""
    if paths:
        noises = [read_audio(p) for p in paths]
        for path, noise in zip(paths, noises):
            if not np.isfinite(noise).all() or not np.any(noise):
                raise ValueError(
                    f"noise file {path} is silent or holds NaN/inf samples; give noise with "
                    "finite, non-zero energy (--noise)"
                )
        return noises
    return [sox_noise(colour, seconds, seed=seed + i) for i, colour in enumerate(NOISE_COLOURS)]


def exit_layers_by_snr(
    upstream,
    clean: List,
    noises: List,
    snrs: List[Optional[float]],
    batch_size: int = 8,
    seed: int = 0,
    device: str = "cpu",
) -> Dict[str, Dict]:
    """Exit layers and per-layer entropies of every clip at every SNR (same clips, same noise)."""
    rng = np.random.default_rng(seed)
    picks = [(i % len(noises), int(rng.integers(0, 1 << 30))) for i in range(len(clean))]
    report = {}
    for snr in snrs:
        key = "clean" if snr is None else f"{snr:g}"
        wavs, measured = [], []
        for wav, (n, offset) in zip(clean, picks):
            if snr is None:
                wavs.append(np.asarray(wav, dtype=np.float32))
                continue
            noise = fit_length(noises[n], len(wav), offset % len(noises[n]))
            mix = mix_at_snr(wav, noise, snr)
            measured.append(measure_snr(np.asarray(wav, np.float64), mix.astype(np.float64) - wav))
            wavs.append(mix)
        exits, entropies = [], []
        with torch.no_grad():
            for i in range(0, len(wavs), batch_size):
                batch = [torch.from_numpy(w).to(device) for w in wavs[i : i + batch_size]]
                out = upstream.run(batch)
                exits += out.exit_layers.tolist()
                entropies += out.entropies.tolist()
        report[key] = {
            "snr_db": snr,
            "measured_snr_db": float(np.mean(measured)) if measured else None,
            "exit_layers": exits,
            "mean": float(np.mean(exits)),
            "min": int(min(exits)),
            "max": int(max(exits)),
        }
    return report


def format_report(report: Dict[str, Dict[str, Any]]) -> str:
    """The sweep as a text table: clips, measured SNR, mean / min / max exit layer per condition."""
    lines = [f"{'condition':<10} {'clips':>5} {'measured SNR':>12} {'mean exit':>9} {'min':>4} {'max':>4}"]
    for key, r in report.items():
        measured = "-" if r["measured_snr_db"] is None else f"{r['measured_snr_db']:.2f} dB"
        lines.append(
            f"{key:<10} {len(r['exit_layers']):>5} {measured:>12} {r['mean']:>9.2f} {r['min']:>4} {r['max']:>4}"
        )
    return "\n".join(lines)


def _violin(report: Dict[str, Dict[str, Any]], num_layers: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(report)
    fig, ax = plt.subplots(figsize=(1.6 * len(keys) + 2, 4))
    data = [report[k]["exit_layers"] for k in keys]
    # a violin needs spread: jitter-free fallback to a flat line when every clip exits at one layer
    parts = ax.violinplot([d if len(set(d)) > 1 else d + [d[0] + 1e-3] for d in data], showmeans=True, showextrema=True)
    for body in parts["bodies"]:
        body.set_alpha(0.5)
    ax.set_xticks(range(1, len(keys) + 1))
    ax.set_xticklabels([k if k == "clean" else f"SNR {k} dB" for k in keys])
    ax.set_ylabel("exit layer")
    ax.set_ylim(0.5, num_layers + 0.5)
    ax.set_title("DAISY exit layer by noise level")
    fig.tight_layout()
    atomic_save_figure(fig, path)


def snr_sweep(
    upstream,
    ckpt: str,
    clean: List[np.ndarray],
    noises: List[np.ndarray],
    snrs: List[Optional[float]],
    out: Path,
    batch_size: int = 8,
    seed: int = 0,
    device: str = "cpu",
) -> Dict[str, Any]:
    """Run :func:`exit_layers_by_snr` and write ``noise_report.{json,txt}`` and ``exit_layers_by_snr.png``.

    Returns the JSON payload (``checkpoint`` by name and sha256, ``tau``, ``strategy``, ``report``, ``table``).
    """
    report = exit_layers_by_snr(upstream, clean, noises, snrs, batch_size, seed, device)
    out = Path(out)
    table = format_report(report)
    payload = {
        "checkpoint": checkpoint_record(ckpt),
        "tau": upstream.tau,
        "strategy": upstream.config.strategy,
        "report": report,
    }
    atomic_write_json(out / "noise_report.json", payload)
    atomic_write_text(out / "noise_report.txt", table + "\n")
    _violin(report, upstream.num_layers, out / "exit_layers_by_snr.png")
    return {**payload, "table": table}
