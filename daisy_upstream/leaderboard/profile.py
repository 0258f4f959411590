"""``daisy profile``: MACs of the upstream forward per utterance, DAISY vs the full model.

Every clip runs alone (batch 1, as the SUPERB challenge measured), once with the DAISY exit
policy and once at full depth, each under :func:`daisy_upstream.leaderboard.macs.count_macs`.
DAISY's count includes the exit branches it evaluated; utterances that exit skip the later
layers, so its compute depends on the audio (hence ``--snr``).

Output (``profile.json``)::

    params   {"upstream": N (branches included), "branches": M}
    models   {"daisy"|"full": {"macs": {"all", "short", "medium", "long", "longer"},
                               "utterances": [{"path", "seconds", "exit_layer", "macs"}],
                               "mean_exit_layer": float}}
    spent    {"mean": mean over clips of DAISY's MACs / the full model's, "total": summed MACs ratio,
              "budget": the config's budget or null}
    layer    ``--layer k`` (``-l k``): DAISY's forward stopped at layer k (null: every layer may run)
    buckets  {name: {"clips", "min_seconds", "max_seconds"}}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from daisy_upstream.atomic import atomic_save_figure, atomic_write_json, atomic_write_text
from daisy_upstream.audio.io import SAMPLE_RATE, find_audio, load_audio
from daisy_upstream.core.checkpoint import checkpoint_record
from daisy_upstream.evaluation.loading import load_upstream, span_note
from daisy_upstream.evaluation.speech_sets import POCKETSPHINX_DATA, noisy_copies
from daisy_upstream.leaderboard.buckets import (
    BUCKETS,
    bucket_of,
    bucket_ranges,
    bucket_sums,
    describe,
    librispeech_challenge_sample,
)
from daisy_upstream.leaderboard.macs import COUNTER_NOTE, count_macs
from daisy_upstream.outputs import check_output_folder, output_folder

__all__ = ["Clip", "add_noise", "bundled_clip_paths", "load_clips", "profile_upstream", "format_table", "plot_profile"]


@dataclass
class Clip:
    """One profiled utterance: ``wav`` is ``(num_samples,)`` float32 at 16 kHz."""

    path: str
    wav: Tensor

    @property
    def seconds(self) -> float:
        return self.wav.numel() / SAMPLE_RATE


def bundled_clip_paths() -> List[Path]:
    """The real recordings the other tools use: pocketsphinx-testdata's LibriVox and cards wavs."""

    paths = sorted((POCKETSPHINX_DATA / "librivox").glob("*.wav")) + sorted((POCKETSPHINX_DATA / "cards").glob("*.wav"))
    if not paths:
        raise FileNotFoundError(
            f"no recordings under {POCKETSPHINX_DATA}: install Debian's pocketsphinx-testdata "
            "(apt-get install pocketsphinx-testdata) or pass --audio / --librispeech"
        )
    return paths


def load_clips(paths: Sequence[Path]) -> List[Clip]:
    """Load every path as a 16 kHz mono clip (another rate is resampled)."""

    return [Clip(str(p), load_audio(p)) for p in paths]


def add_noise(clips: Sequence[Clip], snr_db: float, seed: int = 0) -> List[Clip]:
    """The same clips with sox noise (white, pink, brown in turn) mixed in at exactly ``snr_db``."""

    noisy = noisy_copies([c.wav.numpy() for c in clips], [float(snr_db)], seed=seed)
    return [Clip(c.path, torch.from_numpy(n.wav)) for c, n in zip(clips, noisy)]


def _count(upstream: Any, wav: Tensor, span: Optional[List[int]], layer: Optional[int] = None) -> Dict[str, Any]:
    upstream.read_up_to(layer)

    def forward():
        if span is None:
            return upstream([wav])
        with upstream.span_override(span):
            return upstream([wav])

    macs, per_op, out = count_macs(forward)
    return {"macs": macs, "exit_layer": int(out["exit_layers"][0]), "ops": per_op}


def _model_summary(rows: List[Dict[str, Any]], buckets: Sequence[str]) -> Dict[str, Any]:
    exits = [r["exit_layer"] for r in rows]
    return {
        "macs": bucket_sums([r["macs"] for r in rows], buckets),
        "mean_exit_layer": sum(exits) / len(exits),
        "mean_exit_layer_per_bucket": {
            name: sum(e for e, b in zip(exits, buckets) if b == name) / max(1, sum(b == name for b in buckets))
            for name in BUCKETS
        },
        "utterances": rows,
    }


def profile_upstream(
    upstream: Any, clips: Sequence[Clip], device: str = "cpu", layer: Optional[int] = None
) -> Dict[str, Any]:
    """MACs of every clip at batch 1 under the upstream's exit policy and at full depth.

    Args:
        upstream: a :class:`daisy_upstream.core.expert.DaisyUpstream` in eval mode on ``device``.
        clips: at least 4 clips (the four length buckets).
        layer: DAISY's forward as a consumer reading only ``hidden_states[layer]`` runs it
            (``-l k``: it stops there); the full model runs every layer either way.

    Returns:
        ``{"params", "models", "buckets", "counted_ops", "counter"}`` (see the module doc).
    """
    buckets = bucket_of([c.seconds for c in clips])
    num_layers = upstream.num_layers
    rows: Dict[str, List[Dict[str, Any]]] = {"daisy": [], "full": []}
    ops: Dict[str, int] = {}
    for clip in clips:
        wav = clip.wav.to(device)
        for model, span in (("daisy", None), ("full", [num_layers])):
            counted = _count(upstream, wav, span, layer if model == "daisy" else None)
            for op, value in counted["ops"].items():
                ops[op] = ops.get(op, 0) + value
            rows[model].append(
                {
                    "path": clip.path,
                    "seconds": round(clip.seconds, 4),
                    "exit_layer": counted["exit_layer"],
                    "macs": counted["macs"],
                }
            )
    upstream.read_up_to(None)
    branches = upstream.net.branches
    shares = [d["macs"] / f["macs"] for d, f in zip(rows["daisy"], rows["full"])]
    ranges = bucket_ranges([c.seconds for c in clips], buckets)
    return {
        "params": {
            "upstream": sum(p.numel() for p in upstream.parameters()),
            "branches": 0 if branches is None else sum(p.numel() for p in branches.parameters()),
        },
        "num_layers": num_layers,
        "layer": layer,
        "models": {name: _model_summary(r, buckets) for name, r in rows.items()},
        "spent": {
            "mean": sum(shares) / len(shares),
            "total": sum(r["macs"] for r in rows["daisy"]) / sum(r["macs"] for r in rows["full"]),
            "budget": upstream.config.budget,
        },
        "buckets": {name: {"clips": n, "min_seconds": lo, "max_seconds": hi} for name, (n, lo, hi) in ranges.items()},
        "counted_ops": ops,
        "counter": COUNTER_NOTE,
    }


def format_table(profile: Dict[str, Any]) -> str:
    """The per-bucket table: clips, seconds, GMACs full and DAISY, saving, mean exit layer."""
    full, daisy = profile["models"]["full"], profile["models"]["daisy"]
    seconds: Dict[str, float] = {}
    for row, name in zip(full["utterances"], _labels(profile)):
        seconds[name] = seconds.get(name, 0.0) + row["seconds"]
    seconds["all"] = sum(seconds.values())
    lines = [
        f"{'bucket':<7} {'clips':>5} {'seconds':>8} {'full GMACs':>11} {'DAISY GMACs':>12} "
        f"{'saved':>6} {'mean exit':>9}"
    ]
    for name in ("all",) + BUCKETS:
        f, d = full["macs"][name], daisy["macs"][name]
        clips = (
            sum(b["clips"] for b in profile["buckets"].values()) if name == "all" else profile["buckets"][name]["clips"]
        )
        exit_ = daisy["mean_exit_layer"] if name == "all" else daisy["mean_exit_layer_per_bucket"][name]
        saved = f"{100 * (1 - d / f):5.1f}%" if f else "    -"
        lines.append(
            f"{name:<7} {clips:>5} {seconds.get(name, 0):>8.2f} {f / 1e9:>11.3f} {d / 1e9:>12.3f} "
            f"{saved:>6} {exit_:>9.2f}"
        )
    lines.append(
        f"full model: every clip runs all {profile['num_layers']} layers; params {profile['params']['upstream']:,} "
        f"(branches {profile['params']['branches']:,})"
    )
    spent = profile["spent"]
    budget = "" if spent["budget"] is None else f"; the config's budget: {spent['budget']:g}"
    lines.append(
        f"DAISY spends {spent['mean']:.3f} of the full model's MACs (mean over clips of each clip's share; "
        f"{spent['total']:.3f} of the summed MACs){budget}"
    )
    if profile.get("layer") is not None:
        lines.append(f"-l {profile['layer']}: DAISY's forward stops at layer {profile['layer']}")
    return "\n".join(lines)


def _labels(profile: Dict[str, Any]) -> List[str]:
    return bucket_of([u["seconds"] for u in profile["models"]["full"]["utterances"]])


def plot_profile(profile: Dict[str, Any], path: Path, title: str = "") -> None:
    """MACs per audio second against clip length, DAISY vs full (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, style in (("full", "s-"), ("daisy", "o-")):
        rows = sorted(profile["models"][name]["utterances"], key=lambda r: r["seconds"])
        ax.plot(
            [r["seconds"] for r in rows],
            [r["macs"] / r["seconds"] / 1e9 for r in rows],
            style,
            label={"full": "full model", "daisy": "DAISY"}[name],
            markersize=4,
        )
    ax.set_xlabel("clip length (s)")
    ax.set_ylabel("GMACs per audio second")
    ax.set_title(title or "upstream MACs per second of audio (batch 1)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_save_figure(fig, path)


def choose_clips(audio: Optional[str] = None, librispeech: Optional[str] = None) -> tuple:
    """``(clips, description)``: ``--audio`` (file, folder, list or LibriSpeech root), the
    challenge's 32 test-clean utterances (``--librispeech``), or the bundled real recordings."""

    if audio and librispeech:
        raise ValueError("give either --audio or --librispeech, not both")
    if librispeech:
        return load_clips(librispeech_challenge_sample(librispeech)), (
            f"the SUPERB challenge's 32 LibriSpeech test-clean utterances of {librispeech}"
        )
    if audio:
        files, kind, _ = find_audio(audio)
        return load_clips(files), f"{len(files)} clips of {audio} ({kind}); buckets are length quartiles"
    paths = bundled_clip_paths()
    return load_clips(paths), (
        f"the {len(paths)} bundled real recordings (pocketsphinx-testdata LibriVox + cards); "
        "buckets are length quartiles"
    )


def run_profile(
    out: Path,
    ckpt: Optional[str] = None,
    config: Optional[str] = None,
    overrides: Optional[Dict[str, Any]] = None,
    stats: Optional[str] = None,
    audio: Optional[str] = None,
    librispeech: Optional[str] = None,
    snr: Optional[float] = None,
    seed: int = 0,
    device: str = "cpu",
    force: bool = False,
    layer: Optional[int] = None,
) -> Dict[str, Any]:
    """Profile (``layer``: as :func:`profile_upstream`), then write ``out/profile.json``,
    ``out/profile.txt`` and ``out/profile.png``.

    Raises:
        OutputRefused: ``out`` is not empty and ``force`` is false, or holds anything but a previous
            profile, or is the current folder or holds an input (:mod:`daisy_upstream.outputs`).

    The three files appear together (one rename of a folder built aside) or not at all.
    """

    inputs = (ckpt, config, stats, audio, librispeech)
    out = check_output_folder(out, "profile", force, inputs)
    clips, source = choose_clips(audio, librispeech)
    if snr is not None:
        clips = add_noise(clips, snr, seed=seed)
        source += f"; sox noise (white/pink/brown in turn) mixed in at {snr:g} dB SNR"
    loaded = load_upstream(ckpt, config, overrides, stats, device)
    upstream, path, values, counts = loaded.upstream, loaded.checkpoint, loaded.config, loaded.exit_counts
    note = span_note(upstream, counts)
    profile = profile_upstream(upstream, clips, device, layer)
    ranges = {k: (v["clips"], v["min_seconds"], v["max_seconds"]) for k, v in profile["buckets"].items()}
    profile = {
        "checkpoint": checkpoint_record(path),
        "upstream_config": values,
        "exit_statistics": counts,
        "policy": note,
        "audio": {
            "source": source,
            "clips": len(clips),
            "seconds": round(sum(c.seconds for c in clips), 3),
            "snr_db": snr,
            "buckets": describe(ranges),
        },
        **profile,
    }
    table = "\n".join(
        [
            f"checkpoint: {path.name}",
            f"audio: {source}",
            f"buckets: {describe(ranges)}",
            f"DAISY: {note}",
            format_table(profile),
            f"counted ops (MACs, both models): {profile['counted_ops']}",
            COUNTER_NOTE,
        ]
    )
    snr_text = "clean" if snr is None else f"{snr:g} dB SNR"
    with output_folder(out, "profile", force, inputs) as tmp:
        atomic_write_json(tmp / "profile.json", profile)
        atomic_write_text(tmp / "profile.txt", table + "\n")
        plot_profile(profile, tmp / "profile.png", title=f"MACs per audio second, batch 1 ({snr_text})")
    profile["table"] = table
    return profile
