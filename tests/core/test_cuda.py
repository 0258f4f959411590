"""The early-exit loop on a CUDA device: what the CPU tests check, where the GPU path differs.

On CUDA a GroupNorm front end runs as one padded pass (``cnn_pass="auto"``), ``fp32`` uses TF32
inside the forward, the host reads the exit decisions across the device boundary, and without
gradients the per-layer steps run as CUDA graphs on bucketed shapes (``cuda_graphs: auto``, the
default; the tests below without a ``cuda_graphs`` key take that path). Skipped
without a GPU (CI has none); run on one with ``pytest tests/core/test_cuda.py``. Fixtures as in
``test_families.py``: random tiny models built from s3prl's own classes
(:func:`daisy_upstream.testing.make_random_family_checkpoint`), in the format each stock
upstream loads.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from daisy_upstream.core import precision
from daisy_upstream.core.buckets import LENGTH_BUCKETS
from daisy_upstream.core.families import get_family
from daisy_upstream.core.graphs import MAX_GROUPS
from daisy_upstream.core.policy import make_plan
from daisy_upstream.evaluation.bench_subject import stock_upstream
from daisy_upstream.integration import hubconf
from daisy_upstream.testing import FAMILY_VARIANTS as VARIANTS
from daisy_upstream.testing import (
    assert_exits_independent_of_batch_mates,
    assert_one_host_read_per_checked_layer,
    spread_plan,
    varied_waves,
    waves,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")
LENGTHS = (16000, 4000, 11111, 16000, 800, 9000, 13000, 6400)


@contextlib.contextmanager
def strict_fp32():
    """No TF32 anywhere (ours sets it inside its fp32 forward; cuDNN allows it by default), so
    that the GPU path can be held to the CPU tests' 1e-5."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = False
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precision, "_tf32", contextlib.nullcontext)
        try:
            yield
        finally:
            matmul.allow_tf32, cudnn.allow_tf32 = saved


def _ours(path, family, config):
    return getattr(hubconf, f"daisy_{family}_local")(str(path), model_config=config).eval().to(CUDA)


@pytest.mark.parametrize("variant", ["hubert-base", "wav2vec2-base", "data2vec-base", "wavlm-base-plus", "wavlm-large"])
def test_full_depth_equals_stock_upstream_on_cuda(family_ckpt, variant):
    family, kwargs = VARIANTS[variant]
    path = family_ckpt(family, num_layers=3, layer_entropy=[3.0, 2.9, 2.8], **kwargs)
    stock = stock_upstream(get_family(family))(ckpt=str(path)).eval().to(CUDA)
    ours = _ours(path, family, {"strategy": "none", "rho": 0.0})  # branches checked, none fires
    assert ours.net.cnn_pass == "auto"  # one padded CNN pass on CUDA
    batch = [w.to(CUDA) for w in waves(16000, 7777, 4321, seed=1)]
    with torch.no_grad():
        with strict_fp32():
            together = ours(batch)
            for b, wav in enumerate(batch):
                expected = stock([wav])["hidden_states"]
                got = ours([wav])["hidden_states"]
                n = expected[0].size(1)
                for k, (ours_h, stock_h) in enumerate(zip(got, expected)):
                    torch.testing.assert_close(ours_h, stock_h, atol=1e-5, rtol=0)
                    # the padded batch gives each row what it gives alone
                    torch.testing.assert_close(together["hidden_states"][k][b, :n], stock_h[0], atol=1e-5, rtol=0)
        tf32 = ours(batch)  # the shipped fp32 path: TF32 inside the forward, float32 out
    assert all(h.dtype == torch.float32 for h in tf32["hidden_states"])
    for k, h in enumerate(tf32["hidden_states"]):
        torch.testing.assert_close(h, together["hidden_states"][k], atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("variant", ["hubert-base", "wav2vec2-base", "wavlm-base-plus"])
def test_exits_independent_of_batch_mates_on_cuda(family_ckpt, variant):
    family, kwargs = VARIANTS[variant]
    path = family_ckpt(family, num_layers=4, sharpen=4.0, layer_entropy=[3, 2, 1, 0.5], **kwargs)
    upstream = _ours(path, family, {"strategy": "none", "tau": 1.0})
    with torch.no_grad(), strict_fp32():
        batch = [w.to(CUDA) for w in varied_waves(*LENGTHS)]
        assert_exits_independent_of_batch_mates(upstream, batch, order=[7, 0, 5, 2, 6, 1, 4, 3])


@pytest.mark.parametrize("size", [3, 12])
def test_host_syncs_on_cuda_grow_with_checked_layers_not_with_the_batch(family_ckpt, size):
    path = family_ckpt("hubert", num_layers=4, sharpen=4.0, layer_entropy=[3, 2, 1, 0.5])
    upstream = _ours(path, "hubert", {"strategy": "none", "tau": 1.0})
    with torch.no_grad():
        assert_one_host_read_per_checked_layer(upstream, [w.to(CUDA) for w in varied_waves(*(LENGTHS * 2)[:size])])


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_on_cuda_returns_float32_close_to_fp32(family_ckpt, dtype):
    path = family_ckpt("hubert", num_layers=3, layer_entropy=[3.0, 2.9, 2.8])
    batch = [w.to(CUDA) for w in waves(16000, 7777, seed=2)]
    with torch.no_grad():
        full = _ours(path, "hubert", {"strategy": "full"})(batch)
        half = _ours(path, "hubert", {"strategy": "full", "precision": dtype})(batch)
    for reference, got in zip(full["hidden_states"], half["hidden_states"]):
        assert got.dtype == torch.float32 and torch.isfinite(got).all()
        scale = reference.abs().max()
        assert (got - reference).abs().max() <= 0.1 * scale, (dtype, float((got - reference).abs().max()), float(scale))


@pytest.mark.parametrize("variant", ["hubert-base", "wav2vec2-base", "wavlm-base-plus", "wavlm-large"])
def test_graphed_steps_equal_the_plain_loop_and_are_replayed(family_ckpt, variant):
    family, kwargs = VARIANTS[variant]
    path = family_ckpt(family, num_layers=4, sharpen=4.0, layer_entropy=[3, 2, 1, 0.5], **kwargs)
    graphed = _ours(path, family, {"strategy": "none", "tau": 1.0})
    plain = _ours(path, family, {"strategy": "none", "tau": 1.0, "cuda_graphs": "off"})
    batch = [w.to(CUDA) for w in varied_waves(*LENGTHS)]
    with torch.no_grad(), strict_fp32():
        plan = spread_plan(plain, batch)
        expected = plain.run(batch, plan)
        for attempt in range(2):  # captured on the first forward, replayed on the second
            got = graphed.run(batch, plan)
            assert got.exit_layers.tolist() == expected.exit_layers.tolist()
            for ours, reference in zip(got.hidden_states, expected.hidden_states):
                torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
            torch.testing.assert_close(got.entropies, expected.entropies, atol=1e-5, rtol=0, equal_nan=True)
            torch.testing.assert_close(got.exit_states(), expected.exit_states(), atol=1e-5, rtol=0)
            stats = graphed.net.graph_stats()
            if attempt == 0:
                captured = stats["captures"]
    assert len(set(expected.exit_layers.tolist())) >= 3
    assert captured > 0 and stats["captures"] == captured and stats["replays"] >= captured
    assert plain.net.graph_stats()["captures"] == 0


@pytest.mark.parametrize("read_ahead", [True, False])
def test_graphed_steps_read_one_mask_per_checked_layer(family_ckpt, read_ahead):
    path = family_ckpt("hubert", num_layers=4, sharpen=4.0, layer_entropy=[3, 2, 1, 0.5])
    upstream = _ours(path, "hubert", {"strategy": "none", "tau": 1.0})
    upstream.net.read_ahead = read_ahead
    with torch.no_grad():
        batch = [w.to(CUDA) for w in varied_waves(*LENGTHS)]
        assert_one_host_read_per_checked_layer(upstream, batch)
        assert upstream.net.graph_stats()["captures"] > 0


def test_graph_memory_is_bounded_by_the_group_shapes(family_ckpt):
    path = family_ckpt("hubert", num_layers=2, layer_entropy=[3.0, 2.9])
    upstream = _ours(path, "hubert", {"strategy": "full"})
    half = MAX_GROUPS // 2 + 1
    shapes = [(n, rows) for n in LENGTH_BUCKETS[:half] for rows in (1, 2)]  # a new group shape each
    with torch.no_grad():
        for n, rows in shapes:
            wav = waves(320 * n + 80)[0].to(CUDA)  # exactly n frames
            upstream.run([wav] * rows, make_plan([2], None))
    stats = upstream.net.graph_stats()
    assert stats["shapes"] == MAX_GROUPS and stats["evictions"] == len(shapes) - MAX_GROUPS
    assert stats["captures"] == 2 * len(shapes)  # layer 1 plain, layer 2 last, per shape
