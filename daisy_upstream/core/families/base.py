"""What every family shares: s3prl's fairseq-style model run layer by layer.

A family adapter answers, for one kind of s3prl model, the questions the early-exit loop
(:mod:`daisy_upstream.core.early_exit`) asks; the loop itself, the branch checks and the
removal of rows that exited are not repeated per family.

The defaults here are s3prl's ``TransformerEncoder`` with ``TransformerSentenceEncoderLayer``
(``wav2vec2/wav2vec2_model.py``, shared by wav2vec 2.0, data2vec and, as a copy, HuBERT).
Shapes: ``B`` rows, ``T`` frames, ``C`` CNN channels, ``D`` model width.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from daisy_upstream.core.padded_cnn import padded_cnn

__all__ = ["Family"]


class Family:
    """One SSL family as s3prl 0.4.18 builds and runs it (subclass per family).

    Attributes:
        name: the family's short name (``hubert``, ``wav2vec2``, ``data2vec``, ``wavlm``).
        stock_upstream: s3prl's own upstream for the same checkpoint file.
        required_keys: top-level keys of the checkpoint file that stock upstream loads.
        checkpoint_format: one line describing that file.
        exposes_ffn_output: whether a layer returns its FFN output (``layer_result``).
    """

    name = ""
    stock_upstream = ""
    required_keys: Tuple[str, ...] = ("task_cfg", "model_cfg", "model_weight")
    checkpoint_format = "s3prl's converted {task_cfg, model_cfg, model_weight}"
    exposes_ffn_output = True

    @property
    def upstream(self) -> str:
        """The DAISY upstream name of this family (``-u``)."""
        return f"daisy_{self.name}_local"

    # -- the checkpoint file ----------------------------------------------------------
    def build(self, state: Dict[str, Any]) -> Tuple[nn.Module, Any]:
        """``(model with random weights, config with .normalize)`` for a checkpoint dict."""
        raise NotImplementedError

    def weights(self, state: Dict[str, Any]) -> Dict[str, Tensor]:
        """The model's state dict as stored in the file."""
        return state["model_weight"]

    def loadable(self, weights: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """What the stock upstream actually loads of the stored weights (strictly)."""
        return weights

    def check_supported(self, model: nn.Module, name: str) -> None:
        """Raise ValueError (one line) for a variant the loop cannot reproduce exactly."""
        layers = model.encoder.layers
        kind = type(layers[0]).__name__ if len(layers) else ""
        if "Conformer" in type(model.encoder).__name__ or "Conformer" in kind:
            raise ValueError(
                f"{name}: conformer layers (layer_type: conformer) are not supported: their "
                "convolution mixes padded frames into valid ones, so rows cannot leave the batch "
                "exactly; use s3prl's stock upstream for this model"
            )

    # -- running it -------------------------------------------------------------------
    def cnn(self, model: nn.Module, wav: Tensor, num_samples: Optional[Sequence[int]] = None) -> Tensor:
        """``(B, S)`` waveforms -> ``(B, T, C)`` CNN features after ``model.layer_norm``.

        Under ``torch.no_grad()`` when ``feature_grad_mult`` is 0, as every stock expert sets it.
        This is also what wav2vec 2.0's quantizer reads (``unmasked_features``). With
        ``num_samples`` (each row's own samples of the zero-padded ``wav``), GroupNorms take
        their statistics over each row's valid frames only (:func:`~daisy_upstream.core.padded_cnn.padded_cnn`;
        the caller checked :func:`~daisy_upstream.core.padded_cnn.supports_padded_cnn`).
        """
        context = torch.no_grad() if getattr(model, "feature_grad_mult", 0.0) == 0 else contextlib.nullcontext()
        with context:
            features = None
            if num_samples is not None:
                features = padded_cnn(model.feature_extractor, wav, num_samples)
            if features is None:
                features = model.feature_extractor(wav)
        return model.layer_norm(features.transpose(1, 2))

    def frame_padding(self, model: nn.Module, features: Tensor, wav_padding: Tensor) -> Optional[Tensor]:
        """The stock rule for which frames of a zero-padded batch are padding.

        Args:
            features: ``(B, T, C)`` CNN output of the padded batch.
            wav_padding: ``(B, S)`` True on padded samples.

        Returns:
            ``(B, T)`` True on padding, or None when the stock model builds no mask.
        """
        raise NotImplementedError

    def front(self, model: nn.Module, features: Tensor, padding: Tensor, stock_batch: bool = False) -> Tensor:
        """``hidden_states[0]`` ``(B, T, D)`` from ``cnn``'s features; ``padding`` ``(B, T)``.

        ``post_extract_proj`` -> padded frames zeroed -> + positional conv -> the encoder's
        LayerNorm for post-LN models (w2v2m:2679-2686 and 3061-3071; WavLM:371-378, 602-610).

        A stack of positional conv blocks (``pos_conv_depth`` > 1, data2vec Base; w2v2m:2995-3023)
        would carry the first block's output on padded frames into valid ones in later blocks,
        which a row run alone never sees (its blocks pad with zeros): padded frames are zeroed
        before every block, unless ``stock_batch`` asks for exactly the stock batched forward.
        """
        x = features
        if model.post_extract_proj is not None:
            x = model.post_extract_proj(x)
        x = model.dropout_input(x)
        pad = padding.unsqueeze(-1)
        x = x.masked_fill(pad, 0.0)
        encoder = model.encoder
        if encoder.pos_conv is not None:
            blocks = list(encoder.pos_conv.children())
            if stock_batch or not all(isinstance(block, nn.Sequential) for block in blocks):
                x = x + encoder.pos_conv(x.transpose(1, 2)).transpose(1, 2)
            else:
                y = x
                for block in blocks:
                    y = block(y.masked_fill(pad, 0.0).transpose(1, 2)).transpose(1, 2)
                x = x + y
        if not encoder.layer_norm_first:
            x = encoder.layer_norm(x)
        return x

    def layer(
        self, model: nn.Module, index: int, x: Tensor, padding: Optional[Tensor], carry: Any
    ) -> Tuple[Tensor, Optional[Tensor], Any]:
        """Run encoder layer ``index`` (0-based) on ``x`` ``(T, B, D)``.

        Args:
            padding: ``(B, T)`` True on padded keys, or None.
            carry: what the previous layer passed on (None before layer 0).

        Returns:
            ``(output (T, B, D), FFN output (T, B, D) or None, carry for the next layer)``.
        """
        x, (_, ffn) = model.encoder.layers[index](x, self_attn_padding_mask=padding, need_weights=False)
        return x, ffn, None

    def keep_rows(self, carry: Any, keep: Tensor, rows: int, frames: int) -> Any:
        """``carry`` of ``rows`` rows for the rows ``keep`` (long indices), time cut to the first ``frames``."""
        return carry

    def final_norm(self, model: nn.Module) -> Optional[nn.Module]:
        """The norm applied to the last layer's output only (pre-LN models), else None."""
        encoder = model.encoder
        return encoder.layer_norm if encoder.layer_norm_first else None


def conv_formula_padding(model: nn.Module, features: Tensor, wav_padding: Tensor) -> Optional[Tensor]:
    """wav2vec 2.0 / data2vec: lengths by the conv formula, only if any sample is padding.

    w2v2m:2652-2671, d2vm:455-474 (``_get_feat_extract_output_lengths``).
    """
    if not bool(wav_padding.any()):
        return None
    lengths = model._get_feat_extract_output_lengths((~wav_padding).sum(-1))
    return torch.arange(features.size(1), device=features.device).unsqueeze(0) >= lengths.unsqueeze(1)
