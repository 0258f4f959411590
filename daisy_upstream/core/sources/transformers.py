"""transformers folders (``config.json`` + ``model.safetensors`` + ``preprocessor_config.json``,
as ``save_pretrained`` writes them) mapped onto s3prl's classes, in s3prl's converted format.

transformers' audio models are ports of fairseq's / unilm's, layer for layer, so each
parameter has one fairseq name (the names s3prl's classes use); the mapping below is that
correspondence and nothing else (transformers' modeling_{hubert,wav2vec2,wavlm,data2vec_audio}.py
against s3prl's hubert_model.py, wav2vec2_model.py, WavLM.py / modules.py, data2vec_model.py):

* CNN layer ``i``: ``conv`` -> ``.0``; its norm -> ``.2`` (GroupNorm, ``feat_extract_norm
  "group"``) or ``.2.1`` (LayerNorm inside fairseq's TransposeLast block, ``"layer"``);
* ``feature_projection.layer_norm`` / ``.projection`` -> ``layer_norm`` / ``post_extract_proj``;
  ``masked_spec_embed`` -> ``mask_emb``;
* the positional conv: ``pos_conv_embed.conv`` (weight norm: ``parametrizations.weight.original0/1``
  or ``weight_g/_v``) -> ``pos_conv.0``; data2vec's stack ``pos_conv_embed.layers.j.conv`` ->
  ``pos_conv.j.0`` (kernel ``conv_pos_kernel_size``, so fairseq's ``conv_pos`` is kernel x depth);
* layer ``i``: ``attention.{q,k,v,out}_proj`` -> ``self_attn.*``, ``layer_norm`` ->
  ``self_attn_layer_norm``, ``feed_forward.intermediate_dense`` / ``output_dense`` -> ``fc1`` /
  ``fc2``; WavLM's ``gru_rel_pos_const`` / ``gru_rel_pos_linear`` / ``rel_attn_embed`` ->
  ``grep_a`` / ``grep_linear`` / ``relative_attention_bias``;
* ``Wav2Vec2ForPreTraining``: ``quantizer.codevectors`` -> ``quantizer.vars``,
  ``quantizer.weight_proj``, ``project_q``, ``project_hid`` -> ``final_proj`` (kept for
  ``--targets model``).

The hidden states match: transformers' ``output_hidden_states`` are each layer's input and
the encoder's output, s3prl's stock upstream's too; for pre-LN models (``do_stable_layer_norm``)
both apply the encoder's final LayerNorm to the last state only. The waveform is normalised
iff the feature extractor's ``do_normalize`` (transformers divides by ``sqrt(var + 1e-7)``,
s3prl's ``F.layer_norm`` by ``sqrt(var + 1e-5)``: a relative difference below 1e-3 for speech
at ordinary levels). Parameters a headless model lacks (HuBERT's ``final_proj`` and
``label_embs_concat``, wav2vec 2.0's quantizer, ``project_q``, ``final_proj``) are listed in
``source["absent"]``: such a model takes ``--targets kmeans``. transformers itself is imported
only here, to read the config with its class defaults.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
from torch import Tensor

__all__ = ["ARCHITECTURES", "from_transformers", "map_weights"]

#: transformers class -> (s3prl family, prefix of the backbone's weights in its state dict)
ARCHITECTURES = {
    "HubertModel": ("hubert", "hubert."),
    "Wav2Vec2Model": ("wav2vec2", "wav2vec2."),
    "Wav2Vec2ForPreTraining": ("wav2vec2", "wav2vec2."),
    "WavLMModel": ("wavlm", "wavlm."),
    "Data2VecAudioModel": ("data2vec", "data2vec_audio."),
}
_LAYER = r"encoder\.layers\.(\d+)\."
_RULES: List[Tuple[str, str]] = [
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
    (r"feature_projection\.layer_norm\.", "layer_norm."),
    (r"feature_projection\.projection\.", "post_extract_proj."),
    (r"masked_spec_embed$", "mask_emb"),
    (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0$", "encoder.pos_conv.0.weight_g"),
    (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1$", "encoder.pos_conv.0.weight_v"),
    (r"encoder\.pos_conv_embed\.conv\.", "encoder.pos_conv.0."),
    (r"encoder\.pos_conv_embed\.layers\.(\d+)\.conv\.", r"encoder.pos_conv.\1.0."),
    (r"encoder\.layer_norm\.", "encoder.layer_norm."),
    (_LAYER + r"attention\.(q|k|v|out)_proj\.", r"encoder.layers.\1.self_attn.\2_proj."),
    (_LAYER + r"attention\.gru_rel_pos_const$", r"encoder.layers.\1.self_attn.grep_a"),
    (_LAYER + r"attention\.gru_rel_pos_linear\.", r"encoder.layers.\1.self_attn.grep_linear."),
    (_LAYER + r"attention\.rel_attn_embed\.", r"encoder.layers.\1.self_attn.relative_attention_bias."),
    (_LAYER + r"layer_norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
    (_LAYER + r"feed_forward\.intermediate_dense\.", r"encoder.layers.\1.fc1."),
    (_LAYER + r"feed_forward\.output_dense\.", r"encoder.layers.\1.fc2."),
    (_LAYER + r"final_layer_norm\.", r"encoder.layers.\1.final_layer_norm."),
    (r"quantizer\.codevectors$", "quantizer.vars"),
    (r"quantizer\.weight_proj\.", "quantizer.weight_proj."),
    (r"project_q\.", "project_q."),
    (r"project_hid\.", "final_proj."),
]
_RULES_COMPILED = [(re.compile("^" + pattern), target) for pattern, target in _RULES]
_CNN_NORM = re.compile(r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.")
#: parameters of s3prl's class that a headless transformers model does not have
_HEADS = {
    "hubert": ("final_proj.weight", "final_proj.bias", "label_embs_concat"),
    "wav2vec2": ("project_q.weight", "project_q.bias", "final_proj.weight", "final_proj.bias"),
}


def map_weights(weights: Dict[str, Tensor], prefix: str, layer_norm_cnn: bool, name: str) -> Dict[str, Tensor]:
    """transformers state dict -> s3prl (fairseq) names; ``prefix``: the backbone's (stripped
    when present). Raises ValueError naming the first parameter no rule maps."""
    out: Dict[str, Tensor] = {}
    for key, value in weights.items():
        hf = key[len(prefix) :] if key.startswith(prefix) else key
        norm = _CNN_NORM.match(hf)
        if norm:  # fairseq: Sequential(conv, dropout, GroupNorm | Sequential(TransposeLast, LayerNorm, ..), GELU)
            place = "2.1" if layer_norm_cnn else "2"
            out[f"feature_extractor.conv_layers.{norm.group(1)}.{place}.{hf[norm.end() :]}"] = value
            continue
        for pattern, target in _RULES_COMPILED:
            match = pattern.match(hf)
            if match:
                out[match.expand(target) + hf[match.end() :]] = value
                break
        else:
            raise ValueError(f"{name}: parameter {key!r} has no counterpart in s3prl's model (a head of another task?)")
    return out


def _read_weights(folder: Path) -> Dict[str, Tensor]:
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        return load_file(str(folder / "model.safetensors"))
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(str(folder / shard)).items()}
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise ValueError(f"{folder}: no model.safetensors (or its index, or pytorch_model.bin) next to config.json")


def _do_normalize(folder: Path) -> bool:
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        raise ValueError(
            f"{folder}: no preprocessor_config.json, so whether the waveform is normalised (do_normalize) "
            "is unknown; copy the model's preprocessor_config.json into the folder"
        )
    extractor = json.loads(path.read_text())
    if int(extractor.get("sampling_rate", 16000)) != 16000:
        raise ValueError(f"{path}: sampling_rate {extractor['sampling_rate']}; the s3prl upstreams take 16 kHz")
    return bool(extractor.get("do_normalize", True))  # Wav2Vec2FeatureExtractor's default


def _cnn_norm(config: Any) -> str:
    """``feat_extract_norm``; data2vec's CNN has a LayerNorm in every layer (no such setting)."""
    return str(getattr(config, "feat_extract_norm", "layer"))


def _check(config: Any, family: str, name: str) -> None:
    problems = []
    if getattr(config, "hidden_act", "gelu") != "gelu" or getattr(config, "feat_extract_activation", "gelu") != "gelu":
        problems.append("activations other than gelu")
    if abs(float(getattr(config, "layer_norm_eps", 1e-5)) - 1e-5) > 1e-12:
        problems.append(f"layer_norm_eps {config.layer_norm_eps} (s3prl's LayerNorms use 1e-5)")
    if getattr(config, "add_adapter", False):
        problems.append("an adapter (add_adapter)")
    if getattr(config, "conv_pos_batch_norm", False):
        problems.append("conv_pos_batch_norm")
    if family == "hubert" and not getattr(config, "feat_proj_layer_norm", True):
        problems.append("feat_proj_layer_norm off (s3prl's HubertModel always has it)")
    if _cnn_norm(config) not in ("group", "layer"):
        problems.append(f"feat_extract_norm {config.feat_extract_norm!r}")
    if problems:
        raise ValueError(f"{name}: {', '.join(problems)}: s3prl's classes have no such variant")


def _encoder_cfg(config: Any, family: str) -> Dict[str, Any]:
    depth = int(getattr(config, "num_conv_pos_embeddings", 1)) if family == "data2vec" else 1
    kernel = int(config.conv_pos_kernel_size) if family == "data2vec" else int(config.num_conv_pos_embeddings)
    cfg = {
        "extractor_mode": "layer_norm" if _cnn_norm(config) == "layer" else "default",
        "conv_feature_layers": str(list(zip(config.conv_dim, config.conv_kernel, config.conv_stride))),
        "conv_bias": bool(config.conv_bias),
        "encoder_layers": config.num_hidden_layers,
        "encoder_embed_dim": config.hidden_size,
        "encoder_ffn_embed_dim": config.intermediate_size,
        "encoder_attention_heads": config.num_attention_heads,
        "activation_fn": "gelu",
        "layer_norm_first": bool(getattr(config, "do_stable_layer_norm", False)),
        "conv_pos": kernel * depth,
        "conv_pos_groups": config.num_conv_pos_embedding_groups,
        "dropout": config.hidden_dropout,
        "attention_dropout": config.attention_dropout,
        "activation_dropout": config.activation_dropout,
        "dropout_input": config.feat_proj_dropout,
        "encoder_layerdrop": config.layerdrop,
        "feature_grad_mult": 0.0,
    }
    if family == "data2vec":
        cfg["pos_conv_depth"] = depth
    if family == "wavlm":  # every transformers WavLM has layer 0's gated relative position bias
        cfg.update(relative_position_embedding=True, gru_rel_pos=True, num_buckets=config.num_buckets)
        cfg["max_distance"] = config.max_bucket_distance
    return cfg


def from_transformers(folder: Path) -> Dict[str, Any]:
    """A transformers folder -> its family's s3prl converted dict (plus ``source``).

    Raises:
        ValueError: a class other than :data:`ARCHITECTURES`, a variant s3prl's classes lack,
            a parameter with no counterpart, or no weights / preprocessor config (one line each).
    """
    from transformers import AutoConfig

    name = str(folder)
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    architecture = next((a for a in (getattr(config, "architectures", None) or []) if a in ARCHITECTURES), None)
    if architecture is None:
        raise ValueError(
            f"{name}: transformers architectures {getattr(config, 'architectures', None)}; daisy_upstream maps "
            f"{', '.join(ARCHITECTURES)} onto s3prl's classes"
        )
    family, prefix = ARCHITECTURES[architecture]
    _check(config, family, name)
    normalize = _do_normalize(folder)
    cfg = _encoder_cfg(config, family)
    weights = map_weights(_read_weights(folder), prefix, cfg["extractor_mode"] == "layer_norm", name)
    absent = [] if architecture == "Wav2Vec2ForPreTraining" else list(_HEADS.get(family, ()))
    if "mask_emb" not in weights:  # transformers builds it only when masking is configured
        absent.append("mask_emb")
    source = {"format": "transformers", "name": folder.name, "class": architecture, "absent": absent}
    if family == "wavlm":
        return {"cfg": {**cfg, "normalize": normalize}, "model": weights, "source": source}
    task_cfg: Dict[str, Any] = {"sample_rate": 16000, "normalize": normalize}
    model_cfg = {**cfg, "_name": {"hubert": "hubert", "wav2vec2": "wav2vec2", "data2vec": "data2vec_audio"}[family]}
    state: Dict[str, Any] = {"task_cfg": task_cfg, "model_cfg": model_cfg, "model_weight": weights, "source": source}
    if family == "hubert":
        state["dictionaries_symbols"] = []  # no label sets: no pretraining head
        model_cfg["label_rate"] = task_cfg["label_rate"] = 50  # a required field, unused without labels
    if architecture == "Wav2Vec2ForPreTraining":
        model_cfg.update(
            quantize_targets=True,
            latent_vars=config.num_codevectors_per_group,
            latent_groups=config.num_codevector_groups,
            latent_dim=config.codevector_dim,
            final_dim=config.proj_codevector_dim,
        )
    elif family == "wav2vec2":
        model_cfg["quantize_targets"] = False
    return state
