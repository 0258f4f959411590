"""The tiny HuBERT architecture, built from s3prl's own HuBERT classes."""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional

from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig
from s3prl.upstream.utils import merge_with_parent

from daisy_upstream.audio.io import SAMPLE_RATE

__all__ = [
    "TINY_MODEL_CFG",
    "TINY_TASK_CFG",
    "SPECIAL_SYMBOLS",
    "cluster_symbols",
    "build_model",
    "FRAME_SAMPLES",
    "RECEPTIVE_FIELD",
]

#: fairseq's four special symbols; cluster ``c`` has dictionary index ``c + 4``.
SPECIAL_SYMBOLS = ("<s>", "<pad>", "</s>", "<unk>")
#: Samples per output frame (CNN stride) and receptive field of the CNN.
FRAME_SAMPLES = 320
RECEPTIVE_FIELD = 400

#: ~3.3 M parameters: 7 conv layers x 128 channels (stride 320, GroupNorm first layer), 6 pre-LN transformer
#: layers of width 192 with 4 heads and FFN 768. ``layer_norm_first`` trains from scratch
#: where HuBERT Base's post-LN did not (measured here). No layerdrop: DAISY needs every layer.
TINY_MODEL_CFG: Dict[str, Any] = {
    "label_rate": 50.0,
    "extractor_mode": "default",
    "conv_feature_layers": "[(128,10,5)] + [(128,3,2)] * 4 + [(128,2,2)] * 2",
    "conv_bias": False,
    "encoder_layers": 6,
    "encoder_embed_dim": 192,
    "encoder_ffn_embed_dim": 768,
    "encoder_attention_heads": 4,
    "activation_fn": "gelu",
    "layer_norm_first": True,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.1,
    "dropout_features": 0.1,
    "final_dim": 64,
    "untie_final_proj": False,
    "logit_temp": 0.1,
    "feature_grad_mult": 1.0,
    "mask_prob": 0.8,
    "mask_length": 10,
    "skip_masked": False,
    "skip_nomask": True,
}
#: Task config: 16 kHz, per-utterance waveform normalisation (``F.layer_norm``) so the
#: model does not depend on the recording level.
TINY_TASK_CFG: Dict[str, Any] = {
    "label_rate": 50.0,
    "sample_rate": SAMPLE_RATE,
    "normalize": True,
    "enable_padding": False,
}


def cluster_symbols(num_clusters: int) -> List[str]:
    """fairseq dictionary symbols for ``num_clusters`` k-means classes (specials first)."""
    if num_clusters < 2:
        raise ValueError(f"need at least 2 clusters, got {num_clusters}")
    return list(SPECIAL_SYMBOLS) + [str(i) for i in range(num_clusters)]


def build_model(
    num_clusters: int, model_cfg: Optional[Dict[str, Any]] = None, task_cfg: Optional[Dict[str, Any]] = None
) -> HubertModel:
    """Build a randomly initialised s3prl ``HubertModel`` predicting ``num_clusters`` classes.

    Args:
        num_clusters: k-means classes (the label embedding has ``num_clusters + 4`` rows).
        model_cfg: ``HubertConfig`` fields (default :data:`TINY_MODEL_CFG`).
        task_cfg: ``HubertPretrainingConfig`` fields (default :data:`TINY_TASK_CFG`).
    """
    mcfg = merge_with_parent(HubertConfig, copy.deepcopy(model_cfg or TINY_MODEL_CFG))
    tcfg = merge_with_parent(HubertPretrainingConfig, copy.deepcopy(task_cfg or TINY_TASK_CFG))
    return HubertModel(mcfg, tcfg, [cluster_symbols(num_clusters)])
