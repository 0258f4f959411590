"""The waveform policy of the DAISY upstream: what goes in, and that what comes out is finite.

* In: a non-empty list of 1-D tensors, one per utterance, 16 kHz samples nominally in
  ``[-1, 1]``. A floating waveform of any precision (float16, bfloat16, float32, float64) is
  converted to the model's dtype (a float32 model computes in float32 whatever the input
  precision; fp64 input loses nothing audible). Anything else, an integer or complex tensor, a
  tensor on the meta device or on another device than the model, a non-1-D tensor, or one
  shorter than the CNN's receptive field, is a ``ValueError`` naming the utterance (its index
  in the batch), before any work.
* Out: an utterance with NaN / inf samples, or whose hidden states hold NaN / inf (e.g. finite
  input of huge amplitude overflowing the CNN, which has no input normalisation in HuBERT
  Base), is a ``ValueError`` naming the utterance, never returned. Both are read in one host
  sync per batch, after the forward (:func:`check_finite`): a forward costs one sync for this
  plus one per checked layer, whatever the batch size.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor

__all__ = ["check_finite", "prepare_waveforms"]

#: the sample rate the message's milliseconds assume (``daisy_upstream.audio.io.SAMPLE_RATE``;
#: core imports nothing else of ours)
_SAMPLE_RATE = 16000


def prepare_waveforms(
    wavs: Sequence[Tensor], min_samples: int, dtype: torch.dtype, device: torch.device
) -> List[Tensor]:
    """The batch checked (no host sync) and converted to the model's ``dtype``.

    Raises:
        ValueError: see the module docstring; the first bad utterance is named.
    """
    if isinstance(wavs, Tensor) or not isinstance(wavs, Sequence) or len(wavs) == 0:
        raise ValueError("expected a non-empty list of 1-D waveforms (16 kHz, float), one tensor per utterance")
    prepared = []
    for i, wav in enumerate(wavs):
        if not isinstance(wav, Tensor):
            raise ValueError(f"utterance {i} is a {type(wav).__name__}, expected a torch.Tensor")
        if wav.dim() != 1:
            raise ValueError(
                f"utterance {i} has shape {tuple(wav.shape)}; expected a 1-D mono waveform "
                "(mix or pick a channel first; a batch is a list of 1-D tensors)"
            )
        if not wav.is_floating_point():
            raise ValueError(f"utterance {i} has dtype {wav.dtype}; expected float samples in [-1, 1]")
        if wav.device.type == "meta":
            raise ValueError(f"utterance {i} is on the meta device (no samples); expected real samples")
        if wav.device != device:
            raise ValueError(
                f"utterance {i} is on {wav.device} but the model is on {device}; move it with .to('{device}')"
            )
        if wav.numel() < min_samples:
            raise ValueError(
                f"utterance {i} has {wav.numel()} samples; the model needs at least {min_samples} "
                f"({1000 * min_samples / _SAMPLE_RATE:.0f} ms at 16 kHz) to produce one frame"
            )
        prepared.append(wav.to(dtype))
    return prepared


def check_finite(wavs: Sequence[Tensor], hidden_states: Sequence[Tensor]) -> None:
    """Raise if an utterance's samples or hidden states hold NaN / inf (one host sync for the batch).

    Args:
        wavs: the batch's waveforms as the model took them (named in the message with their
            peak amplitude).
        hidden_states: ``L + 1`` tensors ``(B, T, D)``.
    """
    bad_input = torch.stack([~torch.isfinite(w).all() for w in wavs])  # (B,)
    bad_states = torch.stack([~torch.isfinite(h).flatten(1).all(dim=1) for h in hidden_states])  # (L+1, B)
    bad = torch.cat([bad_input.unsqueeze(0), bad_states])  # (L+2, B), row 0: the input
    if not bool(bad.any()):  # the one host sync
        return
    where, row = (int(v) for v in bad.nonzero()[0])
    if where == 0 or bool(bad_input[row]):
        raise ValueError(f"utterance {row} contains NaN or infinite samples")
    peak = float(wavs[row].abs().max())
    raise ValueError(
        f"utterance {row}: hidden state {where - 1} holds NaN/inf (peak input amplitude {peak:.3g}; "
        "expected samples in [-1, 1]: scale the waveform)"
    )
