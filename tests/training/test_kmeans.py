"""Streamed k-means (scikit-learn's MiniBatchKMeans, batches fed with partial_fit)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import MiniBatchKMeans

from daisy_upstream.training.kmeans import StreamedKMeans, assign, fit_kmeans


def blobs(n: int = 3000, k: int = 5, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, (k, dim))
    truth = rng.integers(0, k, n)
    return (centers[truth] + rng.normal(0, 0.5, (n, dim))).astype(np.float32), truth


def chunks_of(x: np.ndarray, sizes):
    start = 0
    for size in sizes:
        yield x[start : start + size]
        start += size
    if start < len(x):
        yield x[start:]


def test_same_frames_same_seed_same_centroids_whatever_the_chunking():
    x, _ = blobs()
    a = fit_kmeans(chunks_of(x, [7] * 500), clusters=5, seed=3, batch_frames=400)
    b = fit_kmeans(chunks_of(x, [1000, 1, 999, 333]), clusters=5, seed=3, batch_frames=400)
    assert np.array_equal(a.centroids, b.centroids) and a.inertia == b.inertia
    assert a.frames == 3000 and a.batches == 8  # 7 full batches of 400 and the rest of 200
    other = fit_kmeans(chunks_of(x, [500] * 6), clusters=5, seed=4, batch_frames=400)
    assert not np.array_equal(a.centroids, other.centroids)


def test_equals_scikit_learn_fed_the_same_batches():
    x, _ = blobs(n=2000)
    mine = fit_kmeans(chunks_of(x, [123] * 20), clusters=5, seed=1, batch_frames=500)
    reference = MiniBatchKMeans(n_clusters=5, random_state=1, batch_size=500, n_init=1)
    for start in range(0, 2000, 500):
        reference.partial_fit(x[start : start + 500])
    assert np.array_equal(mine.centroids, reference.cluster_centers_.astype(np.float32))


def test_streaming_holds_one_batch_and_recovers_the_clusters():
    x, truth = blobs(n=6000)
    kmeans = StreamedKMeans(clusters=5, seed=0, batch_frames=300)
    for chunk in chunks_of(x, [50] * 120):
        kmeans.add(chunk)
        assert kmeans.peak_buffered <= 300 + 50  # never more than one batch plus one chunk
    fit = kmeans.finish()
    assert fit.batches == 20 and fit.frames == 6000
    labels = assign(torch.from_numpy(x), torch.from_numpy(fit.centroids)).numpy()
    # each true blob maps to one cluster (well separated blobs: k-means finds them)
    purity = sum(np.bincount(labels[truth == c]).max() for c in range(5)) / len(x)
    assert purity > 0.99
    facts = fit.provenance()
    assert facts["clusters"] == 5 and facts["seed"] == 0 and facts["frames"] == 6000
    assert 0 < facts["inertia_per_frame"] < 8 * 0.5**2 * 2  # about D * sigma^2 per frame
    assert "MiniBatchKMeans" in facts["library"]


def test_assign_equals_scikit_learn_predict():
    x, _ = blobs(n=1000)
    fit = fit_kmeans([x], clusters=7, seed=0, batch_frames=500)
    reference = MiniBatchKMeans(n_clusters=7).fit(x[:100])  # any fitted estimator; centers replaced
    reference.cluster_centers_ = fit.centroids.astype(np.float32)
    assert np.array_equal(assign(torch.from_numpy(x), torch.from_numpy(fit.centroids)).numpy(), reference.predict(x))


def test_max_frames_and_bad_input():
    x, _ = blobs(n=1000)
    assert fit_kmeans(chunks_of(x, [300] * 4), clusters=5, seed=0, batch_frames=200, max_frames=450).frames == 450
    with pytest.raises(ValueError, match="only 3 frames for 5 k-means clusters"):
        fit_kmeans([x[:3]], clusters=5, seed=0, batch_frames=100)
    with pytest.raises(ValueError, match="cannot seed 50 clusters"):
        StreamedKMeans(clusters=50, seed=0, batch_frames=10)
    with pytest.raises(ValueError, match="no frames"):
        fit_kmeans([], clusters=5, seed=0, batch_frames=100)
