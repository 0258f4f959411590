"""The early-exit loop on a CUDA device: what the CPU tests check, where the GPU path differs.

On CUDA a GroupNorm front end runs as one padded pass (``cnn_pass="auto"``), ``fp32`` uses TF32
inside the forward, and the host reads the exit decisions across the device boundary. Skipped
without a GPU (CI has none); run on one with ``pytest tests/core/test_cuda.py``. Fixtures as in
``test_families.py``: random tiny models built from s3prl's own classes
(:func:`daisy_upstream.testing.make_random_family_checkpoint`), in the format each stock
upstream loads.
"""

from __future__ import annotations

import contextlib

import pytest
import s3prl.hub as hub
import torch

from daisy_upstream.core import precision
from daisy_upstream.integration import hubconf
from daisy_upstream.testing import FAMILY_VARIANTS as VARIANTS
from daisy_upstream.testing import (
    assert_exits_independent_of_batch_mates,
    assert_one_host_read_per_checked_layer,
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
    stock = getattr(hub, f"{family}_local")(ckpt=str(path)).eval().to(CUDA)
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
