"""A small deterministic k-means (k-means++ initialisation, Lloyd iterations) in torch."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["fit_kmeans", "assign"]


def _sqdist(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(1, keepdim=True) - 2 * x @ c.T + (c * c).sum(1)[None, :]


def assign(x: np.ndarray, centroids: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Index of the nearest centroid for every row of ``x``; ``(N,)`` int64."""
    c = torch.from_numpy(np.asarray(centroids, dtype=np.float32))
    out = []
    for i in range(0, len(x), chunk):
        xb = torch.from_numpy(np.asarray(x[i:i + chunk], dtype=np.float32))
        out.append(_sqdist(xb, c).argmin(1))
    return torch.cat(out).numpy().astype(np.int64) if out else np.zeros(0, np.int64)


def fit_kmeans(x: np.ndarray, k: int, seed: int, iters: int = 40) -> np.ndarray:
    """Cluster the rows of ``x`` into ``k`` groups; returns ``(k, D)`` float32 centroids.

    Deterministic for ``seed``. Empty clusters are re-seeded with the farthest points.
    """
    if x.ndim != 2 or len(x) < k:
        raise ValueError(f"need a 2-D array with at least k={k} rows, got {x.shape}")
    g = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    n = xt.shape[0]
    # k-means++
    cent = [xt[torch.randint(n, (1,), generator=g)].squeeze(0)]
    d2 = _sqdist(xt, cent[0][None]).squeeze(1).clamp_min(0)
    for _ in range(1, k):
        p = d2 / d2.sum()
        idx = torch.multinomial(p, 1, generator=g)
        cent.append(xt[idx].squeeze(0))
        d2 = torch.minimum(d2, _sqdist(xt, cent[-1][None]).squeeze(1).clamp_min(0))
    c = torch.stack(cent)
    for _ in range(iters):
        dist = _sqdist(xt, c)
        a = dist.argmin(1)
        sums = torch.zeros_like(c).index_add_(0, a, xt)
        counts = torch.bincount(a, minlength=k).float()
        new = sums / counts.clamp_min(1)[:, None]
        empty = counts == 0
        if empty.any():
            far = dist.min(1).values.argsort(descending=True)[: int(empty.sum())]
            new[empty] = xt[far]
        if torch.allclose(new, c):
            c = new
            break
        c = new
    return c.numpy().astype(np.float32)
