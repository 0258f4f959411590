"""wav2vec 2.0 / XLS-R (s3prl ``wav2vec2_local``): ``upstream/wav2vec2/{convert,expert,wav2vec2_model}.py``."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from torch import Tensor, nn

from daisy_upstream.core.families.base import Family, conv_formula_padding

__all__ = ["WAV2VEC2", "Wav2Vec2Family"]


class Wav2Vec2Family(Family):
    """Converted ``{task_cfg, model_cfg, model_weight}`` loaded strictly with the quantizer,
    ``project_q`` and ``final_proj`` (wav2vec2/convert.py:29-38).

    Padding: the conv formula, and no mask at all when no sample is padding (w2v2m:2652-2671).
    Refused besides conformers: ``quantize_input`` (the quantizer replaces the features) and
    ``crop_seq_to_multiple`` > 1 (the batch's crop would depend on its longest row).
    """

    name = "wav2vec2"
    stock_upstream = "wav2vec2_local"

    def build(self, state: Dict[str, Any]) -> Tuple[nn.Module, Any]:
        from s3prl.upstream.utils import merge_with_parent
        from s3prl.upstream.wav2vec2.wav2vec2_model import AudioPretrainingConfig, Wav2Vec2Config, Wav2Vec2Model

        task_cfg = merge_with_parent(AudioPretrainingConfig, dict(state["task_cfg"]))
        model_cfg = merge_with_parent(Wav2Vec2Config, dict(state["model_cfg"]))
        return Wav2Vec2Model(model_cfg), task_cfg

    def check_supported(self, model: nn.Module, name: str) -> None:
        super().check_supported(model, name)
        if model.input_quantizer is not None:
            raise ValueError(f"{name}: quantize_input models (quantized encoder input) are not supported")
        if model.crop_seq_to_multiple != 1:
            raise ValueError(
                f"{name}: crop_seq_to_multiple={model.crop_seq_to_multiple} is not supported (the stock "
                "model crops the whole batch to its longest row's multiple); only 1 is"
            )

    def frame_padding(self, model: nn.Module, features: Tensor, wav_padding: Tensor) -> Optional[Tensor]:
        return conv_formula_padding(model, features, wav_padding)


WAV2VEC2 = Wav2Vec2Family()
