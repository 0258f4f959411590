"""Streamed k-means: scikit-learn's ``MiniBatchKMeans`` fed frame batches with ``partial_fit``.

Used for stage-1 targets (``daisy train-branches --targets kmeans``: k-means on layer ``K``
of the frozen model over the training audio, as HuBERT's own second iteration made its
labels) and for the embedded model's pretraining labels (MFCCs, then its own layer).

Frames arrive in any chunks (one utterance, one batch); :class:`StreamedKMeans` cuts them
into batches of exactly ``batch_frames`` rows and calls ``partial_fit`` on each, so memory
stays bounded by one batch plus one chunk (960 h of frames never sit in memory), and the
result depends only on the frames, their order, ``clusters``, ``batch_frames`` and ``seed``:
the same stream gives the same centroids whatever the chunking. The first batch (k-means++
initialisation) needs at least ``clusters`` frames.

Inertia is *streamed*: the sum, over batches, of each batch's squared distances to its
nearest centroid right after that batch's update (what ``MiniBatchKMeans`` itself reports
per batch); ``inertia_per_frame`` divides it by the frames seen. A full second pass would
cost another forward over the training audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional

import numpy as np
import torch
from torch import Tensor

__all__ = ["KMeansFit", "StreamedKMeans", "assign", "fit_kmeans"]

#: rows per ``partial_fit`` call (scikit-learn's own default mini-batch is 1024; larger
#: batches give steadier centroid updates at the same cost per frame)
DEFAULT_BATCH_FRAMES = 10000


@dataclass
class KMeansFit:
    """Fitted centroids and how they were made.

    Attributes:
        centroids: ``(clusters, D)`` float32.
        inertia: streamed inertia (see the module doc).
        frames: frames fed.
        batches: ``partial_fit`` calls.
        seed / batch_frames: the settings.
    """

    centroids: np.ndarray
    inertia: float
    frames: int
    batches: int
    seed: int
    batch_frames: int

    @property
    def clusters(self) -> int:
        return int(self.centroids.shape[0])

    def provenance(self) -> Dict[str, Any]:
        """Plain-type facts for a checkpoint (the centroids are stored beside them)."""
        import sklearn

        return {
            "clusters": self.clusters,
            "seed": self.seed,
            "inertia": self.inertia,
            "inertia_per_frame": self.inertia / max(self.frames, 1),
            "frames": self.frames,
            "batch_frames": self.batch_frames,
            "partial_fit_calls": self.batches,
            "library": f"scikit-learn {sklearn.__version__} MiniBatchKMeans.partial_fit",
        }


class StreamedKMeans:
    """``MiniBatchKMeans`` fed through :meth:`add` in chunks of any size.

    Args:
        clusters: ``k``.
        seed: ``random_state`` (initialisation and re-assignment of small clusters).
        batch_frames: rows per ``partial_fit`` call (>= ``clusters``).

    Attributes:
        peak_buffered: the most rows held at once (one batch plus one chunk at most).
    """

    def __init__(self, clusters: int, seed: int, batch_frames: int = DEFAULT_BATCH_FRAMES) -> None:
        if clusters < 2:
            raise ValueError(f"k-means needs at least 2 clusters, got {clusters}")
        if batch_frames < clusters:
            raise ValueError(
                f"k-means batches of {batch_frames} frames cannot seed {clusters} clusters; "
                "use at least as many frames per batch as clusters"
            )
        from sklearn.cluster import MiniBatchKMeans

        self.clusters, self.seed, self.batch_frames = clusters, seed, batch_frames
        self._kmeans = MiniBatchKMeans(
            n_clusters=clusters, random_state=seed, batch_size=batch_frames, n_init=1, compute_labels=True
        )
        self._pending: list = []
        self._pending_rows = 0
        self.frames = self.batches = self.peak_buffered = 0
        self.inertia = 0.0

    def add(self, frames: np.ndarray) -> None:
        """Queue ``(n, D)`` frames; every full batch is fitted at once."""
        frames = np.asarray(frames, dtype=np.float32)
        if frames.ndim != 2:
            raise ValueError(f"k-means frames must be (n, D), got shape {frames.shape}")
        if not len(frames):
            return
        self._pending.append(frames)
        self._pending_rows += len(frames)
        self.peak_buffered = max(self.peak_buffered, self._pending_rows)
        while self._pending_rows >= self.batch_frames:
            stacked = np.concatenate(self._pending)
            self._fit(stacked[: self.batch_frames])
            rest = stacked[self.batch_frames :]
            self._pending, self._pending_rows = ([rest] if len(rest) else []), len(rest)

    def _fit(self, batch: np.ndarray) -> None:
        self._kmeans.partial_fit(np.ascontiguousarray(batch))
        self.inertia += float(self._kmeans.inertia_)
        self.frames += len(batch)
        self.batches += 1

    def finish(self) -> KMeansFit:
        """Fit what is left and return the centroids.

        Raises:
            ValueError: fewer frames than clusters in all.
        """
        if self._pending_rows:
            rest = np.concatenate(self._pending)
            self._pending, self._pending_rows = [], 0
            if self.batches == 0 and len(rest) < self.clusters:
                raise ValueError(
                    f"only {len(rest)} frames for {self.clusters} k-means clusters: use more audio or fewer --clusters"
                )
            self._fit(rest)
        if self.batches == 0:
            raise ValueError("no frames for k-means: the audio gave none")
        centroids = self._kmeans.cluster_centers_.astype(np.float32)
        return KMeansFit(centroids, self.inertia, self.frames, self.batches, self.seed, self.batch_frames)


def fit_kmeans(
    chunks: Iterable[np.ndarray],
    clusters: int,
    seed: int,
    batch_frames: int = DEFAULT_BATCH_FRAMES,
    max_frames: Optional[int] = None,
) -> KMeansFit:
    """Stream ``chunks`` of ``(n, D)`` frames into k-means; stop after ``max_frames`` if given."""
    kmeans = StreamedKMeans(clusters, seed, batch_frames)
    taken = 0
    for chunk in chunks:
        if max_frames is not None:
            chunk = chunk[: max_frames - taken]
        kmeans.add(chunk)
        taken += len(chunk)
        if max_frames is not None and taken >= max_frames:
            break
    return kmeans.finish()


def assign(frames: Tensor, centroids: Tensor, chunk: int = 65536) -> Tensor:
    """Index of the nearest centroid (squared Euclidean) of every row: ``(N, D) -> (N,)`` long.

    Computed in float32 on ``frames``' device.
    """
    centroids = centroids.to(frames.device, torch.float32)
    c_sq = (centroids * centroids).sum(dim=1)
    out = []
    for start in range(0, frames.size(0), chunk):
        x = frames[start : start + chunk].float()
        # ||c||^2 - 2 x.c (||x||^2 is the same for every centroid of a row)
        out.append((c_sq.unsqueeze(0) - 2.0 * x @ centroids.t()).argmin(dim=1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=frames.device)
