"""data2vec audio (s3prl ``data2vec_local``): ``upstream/data2vec/{convert,expert,data2vec_model}.py``."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from torch import Tensor, nn

from daisy_upstream.core.families.base import Family, conv_formula_padding

__all__ = ["DATA2VEC", "DATA2VEC_ONLY_KEYS", "Data2VecFamily"]

#: ``Data2VecAudioConfig`` fields that ``Wav2Vec2Config`` lacks (d2vm:169+): they tell the
#: two converted formats apart when ``model_cfg._name`` and ``_ema`` are absent
DATA2VEC_ONLY_KEYS = frozenset(
    {
        "average_top_k_layers",
        "ema_decay",
        "ema_end_decay",
        "ema_transformer_only",
        "ema_layers_only",
        "loss_beta",
        "layer_norm_target_layer",
        "instance_norm_target_layer",
        "instance_norm_targets",
    }
)


class Data2VecFamily(Family):
    """Converted ``{task_cfg, model_cfg, model_weight}``; the stock loader builds
    ``Data2VecAudioModel``, calls ``remove_pretraining_modules()`` and drops ``_ema`` before a
    strict load, so ``final_proj.*`` keys are ignored (data2vec/convert.py:29-45). Real files
    carry ``_ema``; one without it is accepted here too.

    Padding: the conv formula, no mask when nothing is padding (d2vm:455-474).
    """

    name = "data2vec"
    stock_upstream = "data2vec_local"

    def build(self, state: Dict[str, Any]) -> Tuple[nn.Module, Any]:
        from s3prl.upstream.data2vec.data2vec_model import Data2VecAudioConfig, Data2VecAudioModel
        from s3prl.upstream.utils import merge_with_parent
        from s3prl.upstream.wav2vec2.wav2vec2_model import AudioPretrainingConfig

        task_cfg = merge_with_parent(AudioPretrainingConfig, dict(state["task_cfg"]))
        model_cfg = merge_with_parent(Data2VecAudioConfig, dict(state["model_cfg"]))
        model = Data2VecAudioModel(model_cfg)
        model.remove_pretraining_modules()
        return model, task_cfg

    def loadable(self, weights: Dict[str, Tensor]) -> Dict[str, Tensor]:
        return {k: v for k, v in weights.items() if k != "_ema" and not k.startswith("final_proj.")}

    def frame_padding(self, model: nn.Module, features: Tensor, wav_padding: Tensor) -> Optional[Tensor]:
        return conv_formula_padding(model, features, wav_padding)


DATA2VEC = Data2VecFamily()
