"""How much bf16 / fp16 autocast of the frozen forward changes stage-1 targets and exit layers.

``python -m daisy_upstream.training.precision_report -k CKPT --audio DIR [--audio DIR ...]``
runs every utterance through the frozen model in fp32 and under each lower precision and
prints side by side, per precision: the share of valid frames whose stage-1 target (the
model's own targets, or the checkpoint's k-means) differs from fp32, the largest
difference of a per-utterance layer entropy, and per rho the share of utterances whose exit
layer differs, with the mean exit layer of both (the first layer ``k < L`` that
:func:`~daisy_upstream.core.policy.exits`, the rule the upstream's forward applies).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.core.early_exit import EarlyExitModel
from daisy_upstream.core.policy import compute_tau, exits
from daisy_upstream.core.precision import PRECISIONS

from .calibration import layer_entropies
from .kmeans_targets import KMeansTargets
from .targets import batch_features, load_frozen_model, model_targets

__all__ = ["exit_layers", "main"]


def exit_layers(entropies: torch.Tensor, tau: float) -> torch.Tensor:
    """``(N, L)`` per-utterance layer entropies -> ``(N,)`` exit layer (1..L) for ``tau``."""
    below = torch.cat([exits(entropies[:, :-1], tau), torch.ones_like(entropies[:, :1], dtype=torch.bool)], dim=1)
    return below.float().argmax(dim=1) + 1  # first True; column L always True


def _target_source(loaded, raw_state: Dict, name: str) -> torch.nn.Module:
    """The targets the checkpoint's branches were trained on: its k-means, else the model's own."""
    record = raw_state.get("daisy", {}).get("targets") or {}
    if record.get("kind") == "kmeans":
        return KMeansTargets(record["centroids"], int(record["layer"]), record)
    return model_targets(loaded, raw_state, name)


@torch.no_grad()
def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daisy_upstream.training.precision_report", description=__doc__)
    parser.add_argument("-k", "--ckpt", type=Path, required=True, help="DAISY checkpoint (branches + calibration)")
    parser.add_argument("--audio", type=Path, action="append", required=True, help="audio (repeatable)")
    parser.add_argument("--precisions", nargs="+", default=["bf16"], choices=PRECISIONS[1:])
    parser.add_argument("--rho", type=float, nargs="+", default=[0.7, 0.76, 1.0])
    parser.add_argument("--batch-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    loaded, raw_state = load_frozen_model(args.ckpt, need_head=False)
    backbone = EarlyExitModel(loaded.model, None, normalize_waveform=bool(loaded.task_cfg.normalize)).eval()
    targets = _target_source(loaded, raw_state, str(args.ckpt))
    branches = loaded.branches.eval()
    calibration = loaded.calibration["layer_entropy"]
    for source in args.audio:
        corpus = AudioCorpus.from_source(source)
        runs: Dict[str, Dict] = {}
        for precision in ["fp32", *args.precisions]:
            backbone.precision = precision
            labels: List[torch.Tensor] = []
            for wavs, _ in corpus.iter_batches(args.batch_seconds):
                labels.append(batch_features(backbone, targets, wavs)[1].reshape(-1))
            entropies, _, seconds = layer_entropies(backbone, branches, corpus, args.batch_seconds)
            runs[precision] = {"labels": torch.cat(labels), "entropies": entropies}
        ref = runs["fp32"]
        print(f"{corpus.name}: {entropies.size(0)} utterances, {seconds:.0f} s, {ref['labels'].numel()} frames")
        for precision in args.precisions:
            run = runs[precision]
            flips = float((run["labels"] != ref["labels"]).float().mean())
            delta = float((run["entropies"] - ref["entropies"]).abs().max())
            line = [
                f"  {precision} vs fp32: targets differ on {100 * flips:.2f}% of frames; "
                f"entropy max |diff| {delta:.4f} nats"
            ]
            for rho in args.rho:
                tau = compute_tau(calibration, rho)
                a, b = exit_layers(ref["entropies"], tau), exit_layers(run["entropies"], tau)
                line.append(
                    f"rho {rho:g}: exit layer differs for {100 * float((a != b).float().mean()):.1f}% "
                    f"(mean {float(a.float().mean()):.2f} fp32, {float(b.float().mean()):.2f} {precision})"
                )
            print("; ".join(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
