"""HuBERT (s3prl ``hubert_local``): ``upstream/hubert/{convert,expert,hubert_model}.py``."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from torch import Tensor, nn

from daisy_upstream.core.families.base import Family

__all__ = ["HUBERT", "HubertFamily", "build_hubert"]


def build_hubert(state: Dict[str, Any]):
    """An s3prl ``HubertModel`` (random weights) for a converted checkpoint's configs."""
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig
    from s3prl.upstream.utils import merge_with_parent

    task_cfg = merge_with_parent(HubertPretrainingConfig, dict(state["task_cfg"]))
    model_cfg = merge_with_parent(HubertConfig, dict(state["model_cfg"]))
    return HubertModel(model_cfg, task_cfg, state["dictionaries_symbols"]), task_cfg


class HubertFamily(Family):
    """Converted ``{task_cfg, model_cfg, model_weight, dictionaries_symbols}`` (hubert/convert.py:40-55).

    Padding: ``forward_padding_mask``, a frame is padding only if its whole sample chunk is
    (hubm:454-464). Layers: s3prl's ``TransformerSentenceEncoderLayer``.
    """

    name = "hubert"
    stock_upstream = "hubert_local"
    required_keys = ("task_cfg", "model_cfg", "model_weight", "dictionaries_symbols")
    checkpoint_format = "s3prl's converted {task_cfg, model_cfg, model_weight, dictionaries_symbols}"

    def build(self, state: Dict[str, Any]) -> Tuple[nn.Module, Any]:
        return build_hubert(state)

    def frame_padding(self, model: nn.Module, features: Tensor, wav_padding: Tensor) -> Optional[Tensor]:
        return model.forward_padding_mask(features, wav_padding)


HUBERT = HubertFamily()
