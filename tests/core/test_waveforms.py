"""The waveform policy (issue 18, daisy_upstream/core/waveforms.py): floats of any precision are
converted to the model's dtype, anything else is a ValueError naming the utterance, and
non-finite hidden states are a ValueError naming the utterance, never returned."""

from __future__ import annotations

import pytest
import torch

from daisy_upstream.integration.hubconf import daisy_hubert_local
from daisy_upstream.testing import waves


@pytest.fixture
def upstream(tiny_ckpt):
    return daisy_hubert_local(str(tiny_ckpt), model_config={"tau": 0.74}).eval()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_any_float_precision_is_converted_to_the_model_dtype(upstream, dtype):
    wavs = waves(8000, 12000, seed=3)
    with torch.no_grad():
        reference = upstream(wavs)
        out = upstream([w.to(dtype) for w in wavs])
    assert all(h.dtype == torch.float32 for h in out["hidden_states"])
    expected = upstream([w.to(dtype).float() for w in wavs])  # the conversion the policy promises
    for got, want in zip(out["hidden_states"], expected["hidden_states"]):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    if dtype == torch.float64:  # nothing lost going down to the model's float32
        for got, want in zip(out["hidden_states"], reference["hidden_states"]):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda w: (w * 32767).to(torch.int16), r"utterance 1 has dtype torch.int16; expected float"),
        (lambda w: w.to(torch.complex64), r"utterance 1 has dtype torch.complex64"),
        (lambda w: torch.empty(w.shape, device="meta"), r"utterance 1 is on the meta device"),
        (lambda w: w.unsqueeze(0), r"utterance 1 has shape \(1, 12000\); expected a 1-D"),
        (lambda w: w[:100], r"utterance 1 has 100 samples; the model needs at least"),
        (lambda w: w.index_fill(0, torch.tensor([5]), float("nan")), r"utterance 1 contains NaN or infinite"),
        (lambda w: w.tolist(), r"utterance 1 is a list, expected a torch.Tensor"),
    ],
)
def test_anything_else_names_the_utterance(upstream, bad, message):
    wavs = waves(8000, 12000, seed=3)
    with pytest.raises(ValueError, match=message), torch.no_grad():
        upstream([wavs[0], bad(wavs[1])])


def test_huge_finite_amplitude_is_refused_not_returned_as_nan(upstream):
    wavs = waves(8000, 12000, seed=3)
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"utterance 1: hidden state \d+ holds NaN/inf \(peak input amplitude"):
            # finite (peak about 4e37) but the CNN's first convolution overflows float32; the padded
            # CNN's row-wise GroupNorm (core/padded_cnn.py) still takes 1e37, which s3prl's does not
            upstream([wavs[0], wavs[1] * 1e38])
        out = upstream([wavs[0], wavs[1] * 1e3])  # loud but representable: fine
    assert all(bool(torch.isfinite(h).all()) for h in out["hidden_states"])
