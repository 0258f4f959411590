"""WavLM (s3prl ``wavlm_local``): ``upstream/wavlm/{expert,WavLM,modules}.py``."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from torch import Tensor, nn

from daisy_upstream.core.families.base import Family

__all__ = ["WAVLM", "WavLMFamily"]


class WavLMFamily(Family):
    """``{cfg, model}``: ``WavLMConfig(cfg)``, strict load of ``model`` (wavlm/expert.py:37-40);
    the waveform is normalised iff ``cfg.normalize``.

    Padding: ``forward_padding_mask``, the chunk rule (WavLM:339-349). Layers return
    ``(x, attn, pos_bias)`` and no FFN output: layer 0 computes the relative position bias
    ``(B*H, T, T)`` (ungated, the batch repeated) and every later layer takes it
    (WavLM:622-632, modules:511-517); it depends on ``B`` and ``T`` only, so rows that leave
    are cut out of it.
    """

    name = "wavlm"
    stock_upstream = "wavlm_local"
    required_keys = ("cfg", "model")
    checkpoint_format = "{cfg, model} (WavLM's own release format)"
    exposes_ffn_output = False

    def build(self, state: Dict[str, Any]) -> Tuple[nn.Module, Any]:
        from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

        cfg = WavLMConfig(dict(state["cfg"]))
        return WavLM(cfg), cfg

    def weights(self, state: Dict[str, Any]) -> Dict[str, Tensor]:
        return state["model"]

    def frame_padding(self, model: nn.Module, features: Tensor, wav_padding: Tensor) -> Optional[Tensor]:
        return model.forward_padding_mask(features, wav_padding)

    def layer(
        self, model: nn.Module, index: int, x: Tensor, padding: Optional[Tensor], carry: Any
    ) -> Tuple[Tensor, Optional[Tensor], Any]:
        x, _, pos_bias = model.encoder.layers[index](
            x, self_attn_padding_mask=padding, need_weights=False, pos_bias=carry
        )
        return x, None, pos_bias

    def keep_rows(self, carry: Any, keep: Tensor, rows: int, frames: int) -> Any:
        if carry is None:  # no relative position embedding
            return None
        t = carry.size(-1)
        bias = carry.view(rows, -1, t, t).index_select(0, keep)[:, :, :frames, :frames]
        return bias.reshape(-1, frames, frames)


WAVLM = WavLMFamily()
