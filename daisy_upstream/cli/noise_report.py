"""``daisy noise-report``: where utterances exit as the SNR falls (the paper's Fig. 4), and,
given a trained ASR downstream, DAISY against a fixed exit of equal average compute on the
mixed-noise set (the paper's Fig. 5).

The mixed set is the one ``daisy make-corpus`` writes under ``noisy/mixed`` (task ``noisy``):
the ASR test split with 40% of the utterances clean, 30% at 10 dB, 20% at 5 dB and 10% at
0 dB SNR. It carries transcripts and ASR-split speakers only, so the downstream comparison
is for ASR (``-d asr``): WER per SNR group and overall.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from daisy_upstream.atomic import atomic_save_figure, atomic_write_json, atomic_write_text

__all__ = [
    "add_arguments",
    "exit_layers_by_snr",
    "fixed_layer_of_equal_compute",
    "read_mixed_set",
    "run",
    "wer_by_condition",
    "write_asr_layout",
]

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
    mixed = parser.add_argument_group(
        "DAISY vs a fixed exit on the mixed-noise set (Fig. 5; ASR only)",
        "The mixed set (40%% clean, 30%% 10 dB, 20%% 5 dB, 10%% 0 dB) is the ASR test split of a "
        "'daisy make-corpus' corpus (task 'noisy'); it has transcripts, so the comparison is an ASR "
        "WER. The fixed layer is round(mean DAISY exit layer on the mixed set): equal average compute. "
        "Both evaluations run s3prl's runner (-m evaluate -e CKPT) on the same downstream checkpoint "
        "with the upstream config replaced (-o args.upstream_model_config=...); the fixed exit thus "
        "reuses the DAISY-trained head unless --fixed-downstream-ckpt gives one trained with that "
        "fixed exit.")
    mixed.add_argument("--downstream-ckpt", help="s3prl runner checkpoint of an ASR downstream trained "
                       "with -u daisy_hubert* (e.g. from 'daisy table1': runs/asr/train_rho1.0/states-N.ckpt)")
    mixed.add_argument("--corpus", help="a 'daisy make-corpus' directory with the 'noisy' layout")
    mixed.add_argument("--daisy-config", help="upstream config of the DAISY evaluation (default: the one the "
                       "downstream was trained with, from its checkpoint)")
    mixed.add_argument("--fixed-downstream-ckpt", help="a downstream trained with the fixed exit (optional)")
    mixed.add_argument("--no-sweep", action="store_true", help="skip the per-SNR exit sweep (Fig. 4)")


def _clean_clips(args) -> List:
    import numpy as np

    from daisy_upstream.evaluation.speech_sets import pocketsphinx_recordings, segment

    if args.clean:
        from daisy_upstream.audio.corpus import AudioCorpus

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
    from daisy_upstream.audio.write import read_audio
    from daisy_upstream.audio.noise import NOISE_COLOURS, sox_noise

    if args.noise:
        return [read_audio(p) for p in args.noise]
    return [sox_noise(colour, seconds, seed=args.seed + i) for i, colour in enumerate(NOISE_COLOURS)]


def exit_layers_by_snr(upstream, clean: List, noises: List, snrs: List[Optional[float]],
                       batch_size: int = 8, seed: int = 0, device: str = "cpu") -> Dict[str, Dict]:
    """Exit layers and per-layer entropies of every clip at every SNR (same clips, same noise)."""
    import numpy as np
    import torch

    from daisy_upstream.audio.noise import fit_length, measure_snr, mix_at_snr

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
    atomic_save_figure(fig, path)


def run(args: argparse.Namespace) -> int:
    if args.downstream_ckpt is None and (args.corpus or args.fixed_downstream_ckpt or args.daisy_config):
        raise ValueError("--corpus / --daisy-config / --fixed-downstream-ckpt only apply with --downstream-ckpt")
    if args.downstream_ckpt is not None and not args.corpus:
        raise ValueError("--downstream-ckpt needs --corpus (a 'daisy make-corpus' directory with the mixed set)")
    if not args.no_sweep:
        _snr_sweep(args)
    if args.downstream_ckpt is not None:
        mixed_set_comparison(args)
    return 0


def _snr_sweep(args: argparse.Namespace) -> None:
    from daisy_upstream.core.expert import load_config
    from daisy_upstream.integration.hubconf import DEFAULT_CHECKPOINT, daisy_hubert_local

    snrs = [None if s == "clean" else float(s) for s in args.snrs]
    overrides = {k: v for k, v in (("rho", args.rho), ("tau", args.tau)) if v is not None}
    config = load_config(args.config, **overrides)
    values = config.to_dict()
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
    atomic_write_json(out / "noise_report.json", payload)
    (out / "noise_report.txt").write_text(table + "\n")
    _violin(report, upstream.num_layers, out / "exit_layers_by_snr.png")
    print(f"[noise-report] wrote {out}/noise_report.json, noise_report.txt, exit_layers_by_snr.png", file=sys.stderr)


# ---------------------------------------------------------------------------------------
# Fig. 5: DAISY vs a fixed exit of equal average compute, ASR WER on the mixed set
# ---------------------------------------------------------------------------------------
CONDITION_ORDER = ("clean", "snr10", "snr5", "snr0")
CONDITION_LABELS = {"clean": "clean", "snr10": "SNR 10 dB", "snr5": "SNR 5 dB", "snr0": "SNR 0 dB"}


def read_mixed_set(noisy_root: Path) -> List[Dict[str, str]]:
    """The mixed set's utterances: ``utt``, ``condition``, ``path``, ``transcript``.

    Reads ``noisy_root/mixed/wav.scp`` and ``meta.tsv`` as written by ``daisy make-corpus``.
    """
    mixed = Path(noisy_root) / "mixed"
    scp, meta = mixed / "wav.scp", mixed / "meta.tsv"
    for path in (scp, meta):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: make the corpus with the 'noisy' task")
    paths = dict(line.split(maxsplit=1) for line in scp.read_text().splitlines() if line.strip())
    lines = meta.read_text().splitlines()
    header = lines[0].split("\t")
    items = []
    for line in lines[1:]:
        row = dict(zip(header, line.split("\t")))
        utt = row["utt"]
        if utt not in paths:
            raise ValueError(f"{meta} lists {utt}, which {scp} does not")
        items.append({"utt": utt, "condition": row["condition"], "path": paths[utt].strip(),
                      "transcript": row["transcript"]})
    if not items:
        raise ValueError(f"{meta} lists no utterances")
    return items


def write_asr_layout(items: List[Dict[str, str]], out: Path, split: str = "test-clean") -> Dict[str, str]:
    """The mixed set as a LibriSpeech split for s3prl's ASR dataset.

    ``out/LibriSpeech/<split>/<spk>/<ch>/<utt>.wav`` (symlinks to the mixed files),
    ``<spk>-<ch>.trans.txt`` and ``out/len_for_bucket/<split>.csv``. Utterance ids must be
    LibriSpeech-style ``<spk>-<ch>-<n>``.
    """
    import soundfile as sf


    libri, buckets = Path(out) / "LibriSpeech", Path(out) / "len_for_bucket"
    chapters: Dict[Tuple[str, str], List[str]] = {}
    rows = []
    for item in items:
        parts = item["utt"].split("-")
        if len(parts) != 3:
            raise ValueError(f"utterance id {item['utt']!r} is not LibriSpeech-style <spk>-<ch>-<n>")
        spk, ch, _ = parts
        rel = f"{split}/{spk}/{ch}/{item['utt']}.wav"
        link = libri / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(item["path"]).resolve())
        rows.append((rel, sf.info(str(link)).frames))
        chapters.setdefault((spk, ch), []).append(f"{item['utt']} {item['transcript'].upper()}")
    for (spk, ch), lines in chapters.items():
        atomic_write_text(libri / split / spk / ch / f"{spk}-{ch}.trans.txt", "\n".join(sorted(lines)) + "\n")
    rows.sort(key=lambda r: -r[1])
    atomic_write_text(buckets / f"{split}.csv", "file_path,length\n" + "".join(f"{r},{n}\n" for r, n in rows))
    return {"libri_root": str(libri), "bucket_file": str(buckets)}


def fixed_layer_of_equal_compute(exit_layers: List[int]) -> int:
    """``round(mean exit layer)`` (halves round up): the fixed exit with DAISY's average depth."""
    import math

    if not exit_layers:
        raise ValueError("no exit layers")
    return max(1, int(math.floor(sum(exit_layers) / len(exit_layers) + 0.5)))


def wer_by_condition(hyp_ark: Path, ref_ark: Path, condition_of: Dict[str, str]) -> Dict[str, Dict[str, float]]:
    """WER (%) per condition and ``overall`` (word errors / reference words, as s3prl)."""
    from daisy_upstream.evaluation.table1 import _read_ark, word_errors

    utts = list(_read_ark(ref_ark))
    missing = [u for u in utts if u not in condition_of]
    if missing:
        raise ValueError(f"{ref_ark} holds utterances outside the mixed set: {missing[:3]}")
    out = {}
    groups = [c for c in CONDITION_ORDER if c in condition_of.values()]
    groups += sorted(set(condition_of.values()) - set(groups))
    for group in groups + ["overall"]:
        keys = [u for u in utts if group == "overall" or condition_of[u] == group]
        if not keys:
            continue
        errors, words = word_errors(hyp_ark, ref_ark, keys)
        out[group] = {"wer": 100.0 * errors / max(words, 1), "utterances": len(keys), "words": words}
    return out


def _runner_args(ckpt: Path) -> Dict:
    from daisy_upstream.evaluation.table1 import load_runner_checkpoint

    state = load_runner_checkpoint(ckpt)
    args = vars(state["Args"]) if "Args" in state else {}
    if args.get("downstream") != "asr":
        raise ValueError(f"{ckpt} is a {args.get('downstream')!r} downstream; the mixed-set comparison needs "
                         "an ASR one (-d asr): the mixed set is the ASR test split with transcripts")
    if not str(args.get("upstream", "")).startswith("daisy_hubert"):
        raise ValueError(f"{ckpt} was trained with -u {args.get('upstream')}, not a daisy_hubert upstream")
    counts = (state.get("Featurizer") or {}).get("exit_counts")
    return {"args": args, "exit_counts": None if counts is None else [int(c) for c in counts.tolist()]}


def _daisy_exit_layers(upstream_ckpt: str, config: Dict, counts, files: List[str]) -> List[int]:
    import torch

    from daisy_upstream.audio.io import load_audio
    from daisy_upstream.integration.hubconf import daisy_hubert_local

    upstream = daisy_hubert_local(upstream_ckpt, model_config=config).eval()
    if counts is not None:
        upstream.set_exit_statistics(counts)
    exits = []
    with torch.no_grad():
        for path in files:
            exits.append(int(upstream.run([load_audio(path)]).exit_layers[0]))
    return exits


def _fig5_plot(results: Dict[str, Dict[str, Dict[str, float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results)
    groups = [g for g in list(CONDITION_ORDER) + ["overall"] if g in results[names[0]]]
    x = np.arange(len(groups))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(1.4 * len(groups) + 2.5, 4))
    for i, name in enumerate(names):
        values = [results[name][g]["wer"] for g in groups]
        bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{CONDITION_LABELS.get(g, g)}\n({results[names[0]][g]['utterances']} utt.)" for g in groups])
    ax.set_ylabel("WER (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_save_figure(fig, path)


def mixed_set_comparison(args: argparse.Namespace, runner=None) -> Dict:
    """Fig. 5: evaluate the ASR downstream on the mixed set with DAISY and with the fixed exit."""
    import functools

    import yaml

    from daisy_upstream.integration.hubconf import DEFAULT_CHECKPOINT
    from daisy_upstream.evaluation.table1 import RUNNER_CODE, subprocess_runner

    runner = runner or functools.partial(subprocess_runner, threads=1)
    out = Path(args.out).resolve() / "mixed_set"
    out.mkdir(parents=True, exist_ok=True)
    corpus = Path(args.corpus).resolve()
    manifest = json.loads((corpus / "corpus.json").read_text()) if (corpus / "corpus.json").is_file() else None
    if manifest is None:
        raise FileNotFoundError(f"--corpus {corpus}: no corpus.json (make one with 'daisy make-corpus')")
    if "noisy" not in manifest["layouts"]:
        raise ValueError(f"{corpus} has no 'noisy' layout (the mixed set); remake it with the 'noisy' task")
    items = read_mixed_set(Path(manifest["layouts"]["noisy"]["root"]))
    condition_of = {i["utt"]: i["condition"] for i in items}
    layout = write_asr_layout(items, out / "asr")

    ckpt = Path(args.downstream_ckpt).resolve()
    trained = _runner_args(ckpt)
    upstream_ckpt = trained["args"].get("upstream_ckpt") or str(DEFAULT_CHECKPOINT)
    daisy_config_path = args.daisy_config or trained["args"].get("upstream_model_config")
    if not daisy_config_path or not Path(daisy_config_path).is_file():
        raise FileNotFoundError(f"the DAISY upstream config {daisy_config_path!r} (from {ckpt}) is not there; "
                                "pass --daisy-config")
    daisy_config = yaml.safe_load(Path(daisy_config_path).read_text()) or {}
    if daisy_config.get("strategy") in ("fixed", "full"):
        raise ValueError(f"{daisy_config_path} has strategy {daisy_config['strategy']!r}: the DAISY side needs "
                         "an early-exit strategy (pass --daisy-config)")
    exits = _daisy_exit_layers(upstream_ckpt, daisy_config, trained["exit_counts"], [i["path"] for i in items])
    fixed_layer = fixed_layer_of_equal_compute(exits)
    fixed_config = {"strategy": "fixed", "fixed_layer": fixed_layer}
    configs = {"daisy": out / "daisy_upstream.yaml", "fixed": out / "fixed_upstream.yaml"}
    atomic_write_text(configs["daisy"], yaml.safe_dump(daisy_config, sort_keys=False))
    atomic_write_text(configs["fixed"], yaml.safe_dump(fixed_config, sort_keys=False))
    label = {"daisy": f"DAISY ({daisy_config.get('strategy', 'none')}, mean exit {sum(exits) / len(exits):.2f})",
             "fixed": f"fixed exit at layer {fixed_layer}"}
    results = {}
    for name in ("daisy", "fixed"):
        expdir = out / f"eval_{name}"
        expdir.mkdir(parents=True, exist_ok=True)
        used = Path(args.fixed_downstream_ckpt).resolve() if name == "fixed" and args.fixed_downstream_ckpt else ckpt
        override = ",,".join([
            f"args.upstream_model_config={configs[name]}", f"args.expdir={expdir}",
            f"config.downstream_expert.datarc.libri_root={layout['libri_root']}",
            f"config.downstream_expert.datarc.bucket_file={layout['bucket_file']}",
            "config.downstream_expert.datarc.test-clean=['test-clean']",
            "config.downstream_expert.datarc.eval_batch_size=1",
        ])
        log = out / f"eval_{name}.log"
        if log.exists():
            log.unlink()
        print(f"[noise-report] evaluating {used.name} on the mixed set: {label[name]}", file=sys.stderr, flush=True)
        runner([sys.executable, "-c", RUNNER_CODE, "-m", "evaluate", "-e", str(used), "-t", "test-clean",
                "--device", args.device, "-o", override], log)
        results[label[name]] = wer_by_condition(expdir / "test-clean-noLM-hyp.ark",
                                                expdir / "test-clean-noLM-ref.ark", condition_of)
    exits_by_condition = {c: [e for e, i in zip(exits, items) if i["condition"] == c] for c in CONDITION_ORDER}
    lines = [f"{'method':<44} " + " ".join(f"{CONDITION_LABELS.get(g, g):>10}" for g in list(CONDITION_ORDER) + ["overall"])]
    for name, by in results.items():
        lines.append(f"{name:<44} " + " ".join(
            f"{by[g]['wer']:>9.2f}%" if g in by else f"{'-':>10}" for g in list(CONDITION_ORDER) + ["overall"]))
    lines.append(f"{'DAISY mean exit layer':<44} " + " ".join(
        f"{sum(v) / len(v):>10.2f}" if v else f"{'-':>10}" for v in list(exits_by_condition.values()) + [exits]))
    counts = {c: sum(1 for i in items if i["condition"] == c) for c in CONDITION_ORDER}
    lines.append(f"{'utterances':<44} " + " ".join(f"{counts[c]:>10}" for c in CONDITION_ORDER) + f" {len(items):>10}")
    table = "\n".join(lines)
    print(table)
    payload = {"downstream_ckpt": str(ckpt), "fixed_downstream_ckpt": args.fixed_downstream_ckpt,
               "upstream_ckpt": upstream_ckpt, "daisy_config": daisy_config, "fixed_layer": fixed_layer,
               "daisy_exit_layers": dict(zip([i["utt"] for i in items], exits)),
               "conditions": condition_of, "wer": results}
    atomic_write_json(out / "mixed_set.json", payload)
    atomic_write_text(out / "mixed_set.txt", table + "\n")
    _fig5_plot(results, out / "wer_by_snr.png",
               f"ASR WER on the mixed set ({len(items)} utt.): DAISY vs fixed exit of equal average compute")
    print(f"[noise-report] wrote {out}/mixed_set.json, mixed_set.txt, wer_by_snr.png", file=sys.stderr)
    return payload
