"""DAISY against a fixed exit of equal average compute on the mixed-noise set (the paper's Fig. 5).

The mixed set is the one ``daisy make-corpus`` writes under ``noisy/mixed`` (task ``noisy``):
the ASR test split with 40% of the utterances clean, 30% at 10 dB, 20% at 5 dB and 10% at
0 dB SNR. It carries transcripts and ASR-split speakers only, so the downstream comparison
is for ASR (``-d asr``): WER per SNR group and overall. The fixed layer is
``round(mean DAISY exit layer)`` on the mixed set; both evaluations run s3prl's runner
(``-m evaluate -e CKPT``) with the upstream config replaced
(``-o args.upstream_model_config=...``).
"""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import soundfile as sf
import torch
import yaml

from daisy_upstream.atomic import atomic_save_figure, atomic_write_json, atomic_write_text
from daisy_upstream.audio.io import load_audio, read_scp
from daisy_upstream.audio.librispeech import LibriUtterance, write_librispeech_text
from daisy_upstream.core.checkpoint import checkpoint_record
from daisy_upstream.evaluation.loading import load_upstream
from daisy_upstream.integration.hubconf import DEFAULT_CHECKPOINT
from daisy_upstream.integration.runner_io import (
    Runner,
    exit_counts,
    load_runner_checkpoint,
    read_ark,
    runner_args,
    runner_command,
    subprocess_runner,
    word_errors,
)

__all__ = [
    "CONDITION_LABELS",
    "CONDITION_ORDER",
    "fixed_layer_of_equal_compute",
    "mixed_set_comparison",
    "mixed_set_exits",
    "read_mixed_set",
    "wer_by_condition",
    "write_asr_layout",
]

PathLike = Union[str, Path]

CONDITION_ORDER = ("clean", "snr10", "snr5", "snr0")
CONDITION_LABELS = {"clean": "clean", "snr10": "SNR 10 dB", "snr5": "SNR 5 dB", "snr0": "SNR 0 dB"}
FIG5_TITLE = "DAISY vs fixed exit of equal average compute"


def read_mixed_set(noisy_root: Path) -> List[Dict[str, str]]:
    """The mixed set's utterances: ``utt``, ``condition``, ``path``, ``transcript``.

    Reads ``noisy_root/mixed/wav.scp`` and ``meta.tsv`` as written by ``daisy make-corpus``.
    """
    mixed = Path(noisy_root) / "mixed"
    scp, meta = mixed / "wav.scp", mixed / "meta.tsv"
    for path in (scp, meta):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: make the corpus with the 'noisy' task")
    paths = read_scp(scp)
    lines = meta.read_text().splitlines()
    header = lines[0].split("\t")
    items = []
    for line in lines[1:]:
        row = dict(zip(header, line.split("\t")))
        utt = row["utt"]
        if utt not in paths:
            raise ValueError(f"{meta} lists {utt}, which {scp} does not")
        items.append(
            {"utt": utt, "condition": row["condition"], "path": str(paths[utt]), "transcript": row["transcript"]}
        )
    if not items:
        raise ValueError(f"{meta} lists no utterances")
    return items


def write_asr_layout(items: List[Dict[str, str]], out: Path, split: str = "test-clean") -> Dict[str, str]:
    """The mixed set as a LibriSpeech split for s3prl's ASR dataset.

    ``out/LibriSpeech/<split>/<spk>/<ch>/<utt>.wav`` (symlinks to the mixed files),
    ``<spk>-<ch>.trans.txt`` and ``out/len_for_bucket/<split>.csv``. Utterance ids must be
    LibriSpeech-style ``<spk>-<ch>-<n>``.
    """
    libri = Path(out) / "LibriSpeech"
    utterances = []
    for item in items:
        if len(item["utt"].split("-")) != 3:
            raise ValueError(f"utterance id {item['utt']!r} is not LibriSpeech-style <spk>-<ch>-<n>")
        spk, ch, _ = item["utt"].split("-")
        rel = f"{split}/{spk}/{ch}/{item['utt']}.wav"
        link = libri / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(item["path"]).resolve())
        utterances.append(
            LibriUtterance(split, item["utt"], rel, sf.info(str(link)).frames, item["transcript"].upper())
        )
    return write_librispeech_text(Path(out), utterances)


def fixed_layer_of_equal_compute(exit_layers: List[int]) -> int:
    """``round(mean exit layer)`` (halves round up): the fixed exit with DAISY's average depth."""
    if not exit_layers:
        raise ValueError("no exit layers")
    return max(1, int(math.floor(sum(exit_layers) / len(exit_layers) + 0.5)))


def wer_by_condition(hyp_ark: Path, ref_ark: Path, condition_of: Dict[str, str]) -> Dict[str, Dict[str, float]]:
    """WER (%) per condition and ``overall`` (word errors / reference words, as s3prl)."""
    utts = list(read_ark(ref_ark))
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


def _check_downstream(ckpt: Path) -> Dict[str, Any]:
    """The runner arguments and exit counts of an ASR downstream trained on a DAISY upstream."""
    state = load_runner_checkpoint(ckpt)
    args = runner_args(state)
    if args.get("downstream") != "asr":
        raise ValueError(
            f"{ckpt} is a {args.get('downstream')!r} downstream; the mixed-set comparison needs "
            "an ASR one (-d asr): the mixed set is the ASR test split with transcripts"
        )
    if not str(args.get("upstream", "")).startswith("daisy_hubert"):
        raise ValueError(f"{ckpt} was trained with -u {args.get('upstream')}, not a daisy_hubert upstream")
    counts = exit_counts(state) if "exit_counts" in (state.get("Featurizer") or {}) else None
    return {"args": args, "exit_counts": counts}


def _daisy_exit_layers(
    upstream_ckpt: str, config: Dict[str, Any], counts: Optional[List[int]], files: List[str], device: str = "cpu"
) -> List[int]:
    upstream = load_upstream(upstream_ckpt, config, stats=counts, device=device).upstream
    exits = []
    with torch.no_grad():
        for path in files:
            exits.append(int(upstream.run([load_audio(path).to(device)]).exit_layers[0]))
    return exits


def mixed_set_exits(
    corpus: PathLike, downstream_ckpt: PathLike, daisy_config: Optional[PathLike] = None, device: str = "cpu"
) -> Dict[str, Any]:
    """DAISY's exit layer on each utterance of the mixed set, and the fixed layer of equal compute.

    Args:
        corpus: a ``daisy make-corpus`` folder with the ``noisy`` layout.
        downstream_ckpt: runner checkpoint of an ASR downstream trained with ``-u daisy_hubert*``
            (its exit counts and, unless ``daisy_config`` is given, its upstream config).

    Returns:
        ``items`` (:func:`read_mixed_set`), ``exits`` (one per item), ``fixed_layer``
        (:func:`fixed_layer_of_equal_compute`), ``daisy_config`` (the values), ``upstream_ckpt``.
    """
    corpus = Path(corpus).resolve()
    manifest = json.loads((corpus / "corpus.json").read_text()) if (corpus / "corpus.json").is_file() else None
    if manifest is None:
        raise FileNotFoundError(f"corpus {corpus}: no corpus.json (make one with 'daisy make-corpus')")
    if "noisy" not in manifest["layouts"]:
        raise ValueError(f"{corpus} has no 'noisy' layout (the mixed set); remake it with the 'noisy' task")
    items = read_mixed_set(Path(manifest["layouts"]["noisy"]["root"]))
    ckpt = Path(downstream_ckpt).resolve()
    trained = _check_downstream(ckpt)
    upstream_ckpt = trained["args"].get("upstream_ckpt") or str(DEFAULT_CHECKPOINT)
    daisy_config_path = daisy_config or trained["args"].get("upstream_model_config")
    if not daisy_config_path or not Path(daisy_config_path).is_file():
        raise FileNotFoundError(
            f"the DAISY upstream config {daisy_config_path!r} (from {ckpt}) is not there; "
            "give the DAISY upstream config"
        )
    daisy_values = yaml.safe_load(Path(daisy_config_path).read_text()) or {}
    if daisy_values.get("strategy") in ("fixed", "full"):
        raise ValueError(
            f"{daisy_config_path} has strategy {daisy_values['strategy']!r}: the DAISY side needs "
            "an early-exit strategy (give another DAISY upstream config)"
        )
    exits = _daisy_exit_layers(upstream_ckpt, daisy_values, trained["exit_counts"], [i["path"] for i in items], device)
    return {
        "items": items,
        "exits": exits,
        "fixed_layer": fixed_layer_of_equal_compute(exits),
        "daisy_config": daisy_values,
        "upstream_ckpt": upstream_ckpt,
    }


def _check_fixed_downstream(ckpt: Path, fixed_layer: int) -> None:
    """Refuse a 'fixed' downstream that was not trained with the fixed exit at ``fixed_layer``."""
    args = runner_args(load_runner_checkpoint(ckpt))
    config_path = args.get("upstream_model_config")
    values = yaml.safe_load(Path(config_path).read_text()) if config_path and Path(config_path).is_file() else None
    if not values or values.get("strategy") != "fixed" or int(values.get("fixed_layer", -1)) != fixed_layer:
        raise ValueError(
            f"{ckpt} was not trained with the fixed exit at layer {fixed_layer} (upstream config "
            f"{config_path!r}: {values}); train one with strategy 'fixed', fixed_layer {fixed_layer}"
        )


def _fig5_plot(results: Dict[str, Dict[str, Dict[str, float]]], path: Path, title: str) -> None:
    import matplotlib  # only where a figure is drawn: a heavy import, and it needs its backend chosen first

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def mixed_set_comparison(
    out: PathLike,
    corpus: PathLike,
    downstream_ckpt: PathLike,
    daisy_config: Optional[PathLike] = None,
    fixed_downstream_ckpt: Optional[PathLike] = None,
    device: str = "cpu",
    threads: Optional[int] = 1,
    runner: Optional[Runner] = None,
    prepared: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Fig. 5: evaluate the ASR downstream on the mixed set with DAISY and with the fixed exit.

    Args:
        out: results go to ``out/mixed_set/`` (``mixed_set.{json,txt}``, ``wer_by_snr.png``,
            the two upstream configs, the runner's experiment folders and logs).
        corpus: a ``daisy make-corpus`` folder with the ``noisy`` layout.
        downstream_ckpt: runner checkpoint of an ASR downstream trained with ``-u daisy_hubert*``.
        daisy_config: upstream config of the DAISY evaluation (default: the one the downstream
            was trained with).
        fixed_downstream_ckpt: a downstream trained with the fixed exit at the layer of equal
            compute (default: the DAISY one, evaluated with that fixed exit); refused when it was
            trained with another upstream config.
        device, threads: of the runner's evaluations and of the exit-layer pass.
        runner: runs one runner command (default :func:`subprocess_runner`).
        prepared: :func:`mixed_set_exits` of the same corpus, checkpoint and config, when the
            caller has it already (the exits are not computed again).

    Returns:
        the ``mixed_set.json`` payload, plus ``table`` (the text table) and ``out``.

    Raises:
        FileNotFoundError / ValueError: no mixed set, not an ASR / DAISY downstream, no DAISY config.
    """
    runner = runner or functools.partial(subprocess_runner, threads=threads)
    out = Path(out).resolve() / "mixed_set"
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Path(downstream_ckpt).resolve()
    exits_found = prepared or mixed_set_exits(corpus, ckpt, daisy_config, device)
    items, exits = exits_found["items"], exits_found["exits"]
    daisy_values, fixed_layer = exits_found["daisy_config"], exits_found["fixed_layer"]
    if fixed_downstream_ckpt is not None:
        _check_fixed_downstream(Path(fixed_downstream_ckpt), fixed_layer)
    fixed = Path(fixed_downstream_ckpt).resolve() if fixed_downstream_ckpt else ckpt
    daisy_label = f"DAISY ({daisy_values.get('strategy', 'none')}, mean exit {sum(exits) / len(exits):.2f})"
    evaluations = {  # label -> (downstream checkpoint, upstream config)
        daisy_label: (ckpt, daisy_values),
        f"fixed exit at layer {fixed_layer}": (fixed, {"strategy": "fixed", "fixed_layer": fixed_layer}),
    }
    condition_of = {i["utt"]: i["condition"] for i in items}
    layout = write_asr_layout(items, out / "asr")
    results = {
        label: wer_by_condition(*_evaluate(runner, out, name, used, values, layout, device, label), condition_of)
        for (label, (used, values)), name in zip(evaluations.items(), ("daisy", "fixed"))
    }
    table = _comparison_table(results, items, exits)
    payload = {
        "downstream_ckpt": checkpoint_record(ckpt),
        "fixed_downstream_ckpt": None if fixed_downstream_ckpt is None else checkpoint_record(fixed),
        "upstream_ckpt": checkpoint_record(exits_found["upstream_ckpt"]),
        "daisy_config": daisy_values,
        "fixed_layer": fixed_layer,
        "daisy_exit_layers": dict(zip([i["utt"] for i in items], exits)),
        "conditions": condition_of,
        "wer": results,
    }
    atomic_write_json(out / "mixed_set.json", payload)
    atomic_write_text(out / "mixed_set.txt", table + "\n")
    _fig5_plot(results, out / "wer_by_snr.png", f"ASR WER on the mixed set ({len(items)} utt.): {FIG5_TITLE}")
    return {**payload, "table": table, "out": str(out)}


def _evaluate(
    runner: Runner,
    out: Path,
    name: str,
    downstream: Path,
    upstream_values: Dict[str, Any],
    layout: Dict[str, str],
    device: str,
    label: str,
) -> Tuple[Path, Path]:
    """Evaluate ``downstream`` on the mixed set's ASR layout with the upstream config
    ``upstream_values`` (written to ``out/<name>_upstream.yaml``); the hypotheses and references
    it wrote (``test-clean-noLM-{hyp,ref}.ark``)."""
    config = out / f"{name}_upstream.yaml"
    atomic_write_text(config, yaml.safe_dump(upstream_values, sort_keys=False))
    expdir = out / f"eval_{name}"
    expdir.mkdir(parents=True, exist_ok=True)
    override = ",,".join(
        [
            f"args.upstream_model_config={config}",
            f"args.expdir={expdir}",
            f"config.downstream_expert.datarc.libri_root={layout['libri_root']}",
            f"config.downstream_expert.datarc.bucket_file={layout['bucket_file']}",
            "config.downstream_expert.datarc.test-clean=['test-clean']",
            "config.downstream_expert.datarc.eval_batch_size=1",
        ]
    )
    log = out / f"eval_{name}.log"
    log.unlink(missing_ok=True)
    print(f"[noise-report] evaluating {downstream.name} on the mixed set: {label}", file=sys.stderr, flush=True)
    args = ["-m", "evaluate", "-e", str(downstream), "-t", "test-clean", "--device", device, "-o", override]
    runner(runner_command(args), log)
    return expdir / "test-clean-noLM-hyp.ark", expdir / "test-clean-noLM-ref.ark"


def _comparison_table(
    results: Dict[str, Dict[str, Dict[str, float]]], items: List[Dict[str, str]], exits: List[int]
) -> str:
    """The text table: WER per condition of each evaluation, DAISY's mean exit layer, utterances."""
    groups = list(CONDITION_ORDER) + ["overall"]
    lines = [f"{'method':<44} " + " ".join(f"{CONDITION_LABELS.get(g, g):>10}" for g in groups)]
    for name, by in results.items():
        lines.append(f"{name:<44} " + " ".join(f"{by[g]['wer']:>9.2f}%" if g in by else f"{'-':>10}" for g in groups))
    exits_by_condition = [[e for e, i in zip(exits, items) if i["condition"] == c] for c in CONDITION_ORDER]
    lines.append(
        f"{'DAISY mean exit layer':<44} "
        + " ".join(f"{sum(v) / len(v):>10.2f}" if v else f"{'-':>10}" for v in exits_by_condition + [exits])
    )
    counts = {c: sum(1 for i in items if i["condition"] == c) for c in CONDITION_ORDER}
    lines.append(f"{'utterances':<44} " + " ".join(f"{counts[c]:>10}" for c in CONDITION_ORDER) + f" {len(items):>10}")
    return "\n".join(lines)
