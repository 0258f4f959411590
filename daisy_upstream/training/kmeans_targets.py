"""Stage-1 targets from k-means on layer ``K`` of the frozen model (``--targets kmeans``).

As HuBERT's second iteration made its labels: the frozen model runs over the *training*
audio (unmasked, eval mode), the valid frames of ``hidden_states[K]`` stream into
:class:`~daisy_upstream.training.kmeans.StreamedKMeans` in the stage-1 batch order of epoch 0
(a seeded permutation; ``passes`` > 1 streams it again in the next epochs' orders, for
audio too small for one pass to make enough mini-batch updates), and each frame's target is
its nearest centroid. Works for every
family, including those without a pretraining head (WavLM, data2vec).

The centroids and their provenance are stored in the output checkpoint under
``daisy.targets`` (``kind: kmeans``, ``centroids (N, D)``, ``layer``, ``clusters``, ``audio``,
``seed``, ``inertia``, ...) and, while training, in ``<work_dir>/kmeans.pt`` so that a resumed
run uses the same targets without clustering again.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.core.branches import valid_frame_mask
from daisy_upstream.core.policy import make_plan

from .batch_feed import EpochSampler, PaddedBatches, batch_loader, unpad
from .kmeans import DEFAULT_BATCH_FRAMES, assign, fit_kmeans

__all__ = ["KMEANS_FILE", "KMeansTargets", "layer_frames", "load_or_fit_kmeans"]

log = logging.getLogger(__name__)

KMEANS_FILE = "kmeans.pt"


class KMeansTargets(nn.Module):
    """Nearest-centroid targets on ``hidden_states[layer]``.

    Args:
        centroids: ``(N, D)`` k-means centroids.
        layer: ``K`` (1..L): the hidden state that was clustered.
        record: plain-type provenance stored with the centroids (``daisy.targets``).
    """

    kind = "kmeans"
    groups = 1

    def __init__(self, centroids: Tensor, layer: int, record: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        if centroids.dim() != 2 or centroids.size(0) < 2:
            raise ValueError(f"k-means centroids must be (N >= 2, D), got {tuple(centroids.shape)}")
        self.register_buffer("centroids", centroids.float())
        self.layer = layer
        self.facts = dict(record or {})

    @property
    def num_classes(self) -> int:
        return int(self.centroids.size(0))

    def labels(self, features: Tensor, wavs: List[Tensor], lengths: Tensor) -> Tensor:
        """``features (L, N, D)`` valid frames of ``hidden_states[1..L]`` -> ``(N, 1)`` targets."""
        return assign(features[self.layer - 1], self.centroids).unsqueeze(-1)

    def record(self) -> Dict[str, Any]:
        """``daisy.targets``: the kind, the centroids and their provenance."""
        return {"kind": self.kind, "layer": self.layer, **self.facts, "centroids": self.centroids.detach().cpu()}


def layer_frames(
    backbone: nn.Module,
    corpus: AudioCorpus,
    layer: int,
    batch_seconds: float,
    seed: int,
    device: torch.device,
    passes: int = 1,
    workers: int = 0,
    prefetch: int = 2,
) -> Iterator[np.ndarray]:
    """Valid frames ``(n, D)`` float32 of ``hidden_states[layer]``, one batch at a time.

    Pass ``p`` (0-based) takes the batches in stage 1's epoch-``p`` order for ``seed``; the
    forward stops at ``layer``. The audio is decoded by stage 1's loader (``workers``
    processes, ``prefetch`` batches ahead each); the frames do not depend on ``workers``.
    """
    batches = corpus.batches(batch_seconds)
    plan = make_plan([layer], None)
    keys = itertools.islice(EpochSampler(len(batches), seed, rank=0, world=1), passes * len(batches))
    loader = batch_loader(PaddedBatches(corpus, batches), keys, workers, prefetch, pin_memory=device.type == "cuda")
    for item in loader:
        wavs = unpad(item, corpus, device)
        if not wavs:
            continue
        with torch.no_grad():
            out = backbone(wavs, plan)
            mask = valid_frame_mask(out.lengths, out.hidden_states[layer].size(1))
            yield out.hidden_states[layer][mask].float().cpu().numpy()


def load_or_fit_kmeans(
    work_dir: Path,
    backbone: nn.Module,
    corpus: AudioCorpus,
    *,
    layer: int,
    clusters: int,
    seed: int,
    batch_seconds: float,
    device: torch.device,
    batch_frames: int = DEFAULT_BATCH_FRAMES,
    max_frames: Optional[int] = None,
    passes: int = 1,
    fit: bool = True,
    workers: int = 0,
    prefetch: int = 2,
) -> KMeansTargets:
    """The k-means targets of a stage-1 run: read from ``work_dir/kmeans.pt`` or fitted now.

    ``fit=False`` (DDP ranks other than 0) only reads the file rank 0 wrote. The file is
    reused only if it was made with the same settings and audio; otherwise it is an error
    (another ``--work-dir`` or the same settings). ``workers`` and ``prefetch``: the audio
    loader's (:func:`layer_frames`), not settings (the centroids do not depend on them).
    """
    num_layers = backbone.num_layers
    if not 1 <= layer <= num_layers:
        raise ValueError(f"kmeans_layer must be in 1..{num_layers} for this {num_layers}-layer model, got {layer}")
    settings = {
        "layer": layer,
        "clusters": clusters,
        "seed": seed,
        "batch_frames": batch_frames,
        "max_frames": max_frames,
        "passes": passes,
        "batch_seconds": batch_seconds,
        "audio_fingerprint": corpus.fingerprint(),
    }
    precision = getattr(backbone, "precision", "fp32")
    if precision != "fp32":  # the frames come from a lower-precision forward (absent for fp32: older files)
        settings["precision"] = precision
    path = Path(work_dir) / KMEANS_FILE
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        differ = sorted(k for k in settings if saved.get("settings", {}).get(k) != settings[k])
        if differ:
            raise ValueError(
                f"{path} holds k-means made with other settings or audio ({', '.join(differ)}); "
                "use another --work-dir, or the same settings to resume"
            )
        log.info("k-means targets from %s", path)
        return KMeansTargets(saved["centroids"], layer, saved["record"])
    if not fit:
        raise ValueError(f"{path} is missing: rank 0 writes it before training")
    log.info(
        "k-means: %d clusters of layer %d over %s (batches of %d frames, %d pass(es), seed %d)",
        clusters,
        layer,
        corpus.name,
        batch_frames,
        passes,
        seed,
    )
    result = fit_kmeans(
        layer_frames(backbone, corpus, layer, batch_seconds, seed, device, passes, workers, prefetch),
        clusters,
        seed,
        batch_frames,
        max_frames,
    )
    record = {**result.provenance(), "audio": corpus.name, "audio_seconds": round(corpus.seconds, 3), "passes": passes}
    log.info(
        "k-means done: %d frames, %d partial_fit calls, inertia per frame %.4g",
        result.frames,
        result.batches,
        record["inertia_per_frame"],
    )
    centroids = torch.from_numpy(result.centroids)
    atomic_torch_save({"settings": settings, "centroids": centroids, "record": record}, path)
    return KMeansTargets(centroids, layer, record)
