"""``daisy noise-report``: where utterances exit as the SNR falls (the paper's Fig. 4)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional

__all__ = ["add_arguments", "exit_layers_by_snr", "run"]

DEFAULT_SNRS = ("clean", "10", "5", "0")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", help="DAISY checkpoint (default: the embedded tiny model)")
    parser.add_argument("-g", "--config", help="upstream config YAML (rho, tau, strategy, ...)")
    parser.add_argument("--rho", type=float)
    parser.add_argument("--tau", type=float)
    parser.add_argument("--clean", help="clean speech: a directory of wav/flac or a list file "
                        "(default: pocketsphinx-testdata's real recordings cut into 2-6 s clips)")
    parser.add_argument("--noise", nargs="*", help="noise files (default: sox white/pink/brown noise)")
    parser.add_argument("--snrs", nargs="+", default=list(DEFAULT_SNRS), help="'clean' or dB values")
    parser.add_argument("--max-clips", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/noise_report")


def _clean_clips(args) -> List:
    import numpy as np

    from daisy_upstream.speech_sets import pocketsphinx_recordings, segment

    if args.clean:
        from daisy_upstream.audio import AudioCorpus

        corpus = AudioCorpus.from_source(args.clean)
        wavs, _ = corpus.load_batch(range(min(len(corpus), args.max_clips)))
        wavs = [w.numpy() for w in wavs]
        if corpus.problems.num_skipped:
            print(f"[noise-report] {corpus.problems.summary()}", file=sys.stderr)
    else:
        rng = np.random.default_rng(args.seed)
        recordings = pocketsphinx_recordings()
        total = sum(len(r) for r in recordings) / 16000
        lengths, used = [], 0.0
        while used < total * 0.9 and len(lengths) < args.max_clips:
            lengths.append(float(rng.uniform(2.0, 6.0)))
            used += lengths[-1]
        wavs = segment(recordings, lengths[:-1])
    return wavs[: args.max_clips]


def _noises(args, seconds: float) -> List:
    from daisy_upstream.corpus.audio_io import read_audio
    from daisy_upstream.corpus.noise import NOISE_COLOURS, sox_noise

    if args.noise:
        return [read_audio(p) for p in args.noise]
    return [sox_noise(colour, seconds, seed=args.seed + i) for i, colour in enumerate(NOISE_COLOURS)]


def exit_layers_by_snr(upstream, clean: List, noises: List, snrs: List[Optional[float]],
                       batch_size: int = 8, seed: int = 0, device: str = "cpu") -> Dict[str, Dict]:
    """Exit layers and per-layer entropies of every clip at every SNR (same clips, same noise)."""
    import numpy as np
    import torch

    from daisy_upstream.corpus.noise import fit_length, measure_snr, mix_at_snr

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


def _violin(report: Dict, num_layers: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(report)
    fig, ax = plt.subplots(figsize=(1.6 * len(keys) + 2, 4))
    data = [report[k]["exit_layers"] for k in keys]
    # a violin needs spread: jitter-free fallback to a flat line when every clip exits at one layer
    parts = ax.violinplot([d if len(set(d)) > 1 else d + [d[0] + 1e-3] for d in data],
                          showmeans=True, showextrema=True)
    for body in parts["bodies"]:
        body.set_alpha(0.5)
    ax.set_xticks(range(1, len(keys) + 1))
    ax.set_xticklabels([k if k == "clean" else f"SNR {k} dB" for k in keys])
    ax.set_ylabel("exit layer")
    ax.set_ylim(0.5, num_layers + 0.5)
    ax.set_title("DAISY exit layer by noise level")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    import torch

    from daisy_upstream.expert import load_config
    from daisy_upstream.hubconf import DEFAULT_CHECKPOINT, daisy_hubert_local

    snrs = [None if s == "clean" else float(s) for s in args.snrs]
    overrides = {k: v for k, v in (("rho", args.rho), ("tau", args.tau)) if v is not None}
    config = load_config(args.config, **overrides)
    values = {k: getattr(config, k) for k in config.__dataclass_fields__}
    ckpt = args.ckpt or str(DEFAULT_CHECKPOINT)
    upstream = daisy_hubert_local(ckpt, model_config=values).to(args.device).eval()
    clean = _clean_clips(args)
    if not clean:
        raise SystemExit("no clean clips: check --clean")
    noises = _noises(args, seconds=max(len(w) for w in clean) / 16000 + 1)
    report = exit_layers_by_snr(upstream, clean, noises, snrs, args.batch_size, args.seed, args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"{'condition':<10} {'clips':>5} {'measured SNR':>12} {'mean exit':>9} {'min':>4} {'max':>4}"]
    for key, r in report.items():
        measured = "-" if r["measured_snr_db"] is None else f"{r['measured_snr_db']:.2f} dB"
        lines.append(f"{key:<10} {len(r['exit_layers']):>5} {measured:>12} {r['mean']:>9.2f} {r['min']:>4} {r['max']:>4}")
    table = "\n".join(lines)
    print(table)
    payload = {"checkpoint": ckpt, "tau": upstream.tau, "strategy": config.strategy, "report": report}
    tmp = out / ".noise_report.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, out / "noise_report.json")
    (out / "noise_report.txt").write_text(table + "\n")
    _violin(report, upstream.num_layers, out / "exit_layers_by_snr.png")
    print(f"[noise-report] wrote {out}/noise_report.json, noise_report.txt, exit_layers_by_snr.png", file=sys.stderr)
    return 0
