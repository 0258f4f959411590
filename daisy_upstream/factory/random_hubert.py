"""Randomly initialised HuBERT-architecture checkpoints (tests, timing of a Base-size model)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch

from daisy_upstream.core.branches import ExitBranches
from daisy_upstream.core.checkpoint import FAIRSEQ_SPECIALS, build_hubert
from daisy_upstream.training.checkpoint_write import with_branches

__all__ = ["make_random_checkpoint"]


def make_random_checkpoint(
    *,
    num_layers: int = 2,
    embed_dim: int = 32,
    ffn_dim: int = 64,
    num_heads: int = 2,
    conv_channels: int = 32,
    conv_layers: Optional[List[Tuple[int, int, int]]] = None,
    extractor_mode: str = "default",
    layer_norm_first: bool = False,
    num_clusters: int = 20,
    final_dim: int = 16,
    conv_pos: int = 16,
    conv_pos_groups: int = 4,
    normalize: bool = False,
    branches: bool = True,
    layer_entropy: Optional[List[float]] = None,
    seed: int = 0,
) -> Dict[str, Any]:
    """A randomly initialised HuBERT-architecture checkpoint in s3prl's converted format.

    With the defaults it is tiny (for tests); ``num_layers=12, embed_dim=768, ffn_dim=3072,
    num_heads=12, conv_channels=512, conv_pos=128, conv_pos_groups=16, final_dim=256,
    num_clusters=500`` is HuBERT Base (for timing). The CNN strides always give 320x
    downsampling (HuBERT's kernels ``(10,5) (3,2)x4 (2,2)x2``).
    """
    if conv_layers is None:
        conv_layers = [(conv_channels, 10, 5)] + [(conv_channels, 3, 2)] * 4 + [(conv_channels, 2, 2)] * 2
    model_cfg = {
        "label_rate": 50,
        "extractor_mode": extractor_mode,
        "encoder_layers": num_layers,
        "encoder_embed_dim": embed_dim,
        "encoder_ffn_embed_dim": ffn_dim,
        "encoder_attention_heads": num_heads,
        "layer_norm_first": layer_norm_first,
        "conv_feature_layers": repr(conv_layers),
        "conv_pos": conv_pos,
        "conv_pos_groups": conv_pos_groups,
        "final_dim": final_dim,
        "encoder_layerdrop": 0.0,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "dropout_input": 0.0,
        "dropout_features": 0.0,
        "logit_temp": 0.1,
    }
    task_cfg = {"label_rate": 50, "sample_rate": 16000, "normalize": normalize, "labels": ["km"]}
    symbols = [FAIRSEQ_SPECIALS + [str(i) for i in range(num_clusters)]]
    state = {"task_cfg": task_cfg, "model_cfg": model_cfg, "dictionaries_symbols": symbols}
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model, _ = build_hubert({**state, "model_weight": {}})
        state["model_weight"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if branches:
            exit_branches = ExitBranches(num_layers, embed_dim, num_clusters)
            calibration = None
            if layer_entropy is not None:
                calibration = {"layer_entropy": [float(v) for v in layer_entropy], "dataset": "given"}
            state = with_branches(state, exit_branches, calibration)
    finally:
        torch.random.set_rng_state(generator_state)
    return state
