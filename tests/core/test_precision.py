"""The frozen forward's precision: autocast inside, float32 out, TF32 only for fp32 on CUDA, the
CPU bf16 guard from the compat module, and ``precision`` in the upstream config of every family."""

from __future__ import annotations

import pytest
import torch

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.core import precision as precision_module
from daisy_upstream.core.policy import DaisyConfig, make_plan
from daisy_upstream.core.precision import frozen_forward
from daisy_upstream.integration import compat
from daisy_upstream.integration.hubconf import daisy_local
from daisy_upstream.testing import make_random_family_checkpoint, sharpen_branches, waves


def test_the_compat_guard_is_registered_by_importing_the_module():
    assert precision_module.FORWARD_GUARDS.count(compat.cpu_bf16_conv_guard) == 1
    compat.guard_frozen_forward(precision_module)  # idempotent
    assert precision_module.FORWARD_GUARDS.count(compat.cpu_bf16_conv_guard) == 1


def test_cpu_bf16_grouped_convolution_is_right_under_frozen_forward():
    """torch 2.8's oneDNN bf16 conv1d with 16 groups and an even kernel >= 8 is wrong on the CPU
    (the positional convolution: kernel 128, 16 groups); the guard switches oneDNN off."""
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(64, 64, 16, padding=8, groups=16)
    x = torch.randn(2, 64, 100)
    with torch.no_grad():
        ref = conv(x)
        with frozen_forward("bf16", "cpu"):
            assert not torch.backends.mkldnn.enabled
            low = conv(x)
    assert low.dtype == torch.bfloat16
    assert float((low.float() - ref).norm() / ref.norm()) < 0.01  # bf16 rounding (oneDNN: > 1)
    assert torch.backends.mkldnn.enabled  # on again after the forward


def test_fp32_is_plain_autocast_otherwise_and_tf32_only_inside_a_cuda_forward():
    with frozen_forward("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with frozen_forward("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")
    flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)  # noqa: E731
    saved = flags()
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        with frozen_forward("fp32", "cpu"):
            assert flags() == (False, False)
        with frozen_forward("fp32", "cuda:0"):  # only sets flags: no GPU needed
            assert flags() == (True, True)
        assert flags() == (False, False)  # restored after the forward
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    with pytest.raises(ValueError, match="unknown precision 'fp8'; choose one of fp32, bf16, fp16"):
        with frozen_forward("fp8", "cpu"):
            pass


def test_tf32_flags_come_back_when_threads_forwards_interleave():
    """DataParallel runs one forward per replica in threads. Interleaved as A enters, B enters, A
    leaves, B leaves, a save / restore per forward would hand B's saved (True, True) back last."""
    import threading

    flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)  # noqa: E731
    saved = flags()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    inside = {}

    def replica(name, before, then, after=None):
        with frozen_forward("fp32", "cuda:0"):  # only sets flags: no GPU needed
            before.set()
            assert then.wait(10)
            inside[name] = flags()
        if after is not None:
            after.set()

    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        a = threading.Thread(target=replica, args=("a", a_in, b_in, a_out))
        a.start()
        assert a_in.wait(10)
        b = threading.Thread(target=replica, args=("b", b_in, a_out))
        b.start()
        a.join(10)
        b.join(10)
        assert inside == {"a": (True, True), "b": (True, True)}  # TF32 in both, also after A left
        assert flags() == (False, False)  # the caller's flags, once the last forward ended
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_the_upstream_config_validates_precision():
    assert DaisyConfig().precision == "fp32"
    with pytest.raises(
        ValueError, match=r"upstream config: precision='half' is unknown; choose one of fp32, bf16, fp16"
    ):
        DaisyConfig.from_mapping({"precision": "half"})


@pytest.mark.parametrize("family", ["hubert", "wav2vec2", "data2vec", "wavlm"])
def test_a_bf16_upstream_returns_float32_close_to_fp32(family, tmp_path):
    """Every family: hidden states and entropies leave a bf16 forward as float32, within bf16's
    rounding of the fp32 forward; the positional convolution here has 16 groups and an even
    kernel (the case oneDNN gets wrong on the CPU)."""
    path = tmp_path / f"{family}.pt"
    state = make_random_family_checkpoint(family, num_layers=3, embed_dim=64, conv_pos=16, conv_pos_groups=16)
    atomic_torch_save(sharpen_branches(state, 2.0), path)
    wavs = waves(8000, 12000, 6000, seed=3)
    runs = {}
    for precision in ("fp32", "bf16"):
        upstream = daisy_local(str(path), model_config={"tau": 0.0, "precision": precision}).eval()
        assert upstream.net.precision == precision
        with torch.no_grad():
            runs[precision] = (upstream(wavs), upstream.run(wavs, make_plan([1, 2, 3], 0.0)).entropies)
    (ref, ref_entropy), (low, low_entropy) = runs["fp32"], runs["bf16"]
    for a, b in zip(ref["hidden_states"], low["hidden_states"]):
        assert b.dtype == torch.float32 and b.shape == a.shape
        assert float((b - a).norm() / a.norm()) < 0.05
    assert not torch.equal(low["hidden_states"][-1], ref["hidden_states"][-1])  # it did run in bf16
    assert low_entropy.dtype == torch.float32 and not torch.isnan(low_entropy[:, :2]).any()
    assert torch.allclose(low_entropy[:, :2], ref_entropy[:, :2], atol=0.05)


def _to_copies(upstream, batch, plan):
    """``aten._to_copy`` calls (casts) in one forward of ``upstream``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Casts(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if str(func) == "aten._to_copy.default":
                Casts.count += 1
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Casts():
        out = upstream.run(batch, plan)
    return out, Casts.count


@pytest.mark.parametrize("cuda_graphs", ["off", "static"])
def test_bf16_weights_casts_once_and_stays_within_bf16_rounding(tmp_path, cuda_graphs):
    """``bf16-weights``: a copy of the model cast to bf16 once, no autocast: far fewer casts per
    forward than bf16 autocast, float32 states within bf16's rounding of fp32's, the user's model
    untouched, the copy reused."""
    path = tmp_path / "m.pt"
    state = sharpen_branches(make_random_family_checkpoint("hubert", num_layers=3, layer_entropy=[3, 2, 1]), 4.0)
    atomic_torch_save(state, path)
    batch = waves(16000, 7777, 12000, seed=2)
    plan = make_plan([1, 2, 3], 0.0)  # every branch checked, none fires
    runs = {}
    for precision in ("fp32", "bf16", "bf16-weights"):
        upstream = daisy_local(str(path), model_config={"strategy": "none", "tau": 0.0, "precision": precision})
        upstream.eval().net.cuda_graphs = cuda_graphs
        _to_copies(upstream, batch, plan)  # the first forward (bf16-weights: makes the copy)
        copy = upstream.net._cast.model
        runs[precision] = _to_copies(upstream, batch, plan)
        assert upstream.net._cast.model is copy  # cast once, reused
        assert next(upstream.net.model.parameters()).dtype == torch.float32  # the user's model is left as is
    assert next(copy.parameters()).dtype == torch.bfloat16
    (reference, _), (autocast, autocast_casts), (weights, weight_casts) = runs.values()
    assert weight_casts < autocast_casts / 2, (weight_casts, autocast_casts)
    assert weights.entropies.dtype == torch.float32
    for ref, got in zip(reference.hidden_states, weights.hidden_states):
        assert got.dtype == torch.float32
        scale = ref.abs().max()
        assert (got - ref).abs().max() <= 0.05 * scale, (float((got - ref).abs().max()), float(scale))
    torch.testing.assert_close(weights.entropies, reference.entropies, atol=0.05, rtol=0.02, equal_nan=True)
