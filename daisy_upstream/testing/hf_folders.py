"""Tiny random transformers models saved as the hub publishes them: ``save_pretrained`` of the
model (``config.json`` + ``model.safetensors``) and of its ``Wav2Vec2FeatureExtractor``
(``preprocessor_config.json``), written by transformers' own classes.

Variants (``HF_VARIANTS``) follow the published configs' shapes of what differs: Base models
have the group-norm CNN without conv bias and post-LN (``facebook/hubert-base-ls960``,
``facebook/wav2vec2-base``, ``microsoft/wavlm-base-plus``); Large / XLS-R the layer-norm CNN
with conv bias and pre-LN (``do_stable_layer_norm``: ``facebook/hubert-large-ll60k``,
``facebook/wav2vec2-large-xlsr-53``, ``microsoft/wavlm-large``); data2vec the layer-norm CNN
with a stack of positional convs (``facebook/data2vec-audio-base``: 5 of kernel 19); the
pretraining wav2vec 2.0 keeps its quantizer (``Wav2Vec2ForPreTraining``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

import torch

__all__ = ["HF_VARIANTS", "hf_hidden_states", "make_hf_folder"]

_TINY = dict(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16,) * 7,
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)
_LARGE = dict(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True)

#: name -> (transformers class, config class, config keyword arguments)
HF_VARIANTS: Dict[str, Tuple[str, str, Dict[str, Any]]] = {
    "hubert-base": ("HubertModel", "HubertConfig", {}),
    "hubert-large": ("HubertModel", "HubertConfig", _LARGE),
    "wav2vec2-base": ("Wav2Vec2Model", "Wav2Vec2Config", {}),
    "wav2vec2-xlsr": ("Wav2Vec2Model", "Wav2Vec2Config", _LARGE),
    "wav2vec2-pretraining": (
        "Wav2Vec2ForPreTraining",
        "Wav2Vec2Config",
        dict(num_codevectors_per_group=8, num_codevector_groups=2, codevector_dim=16, proj_codevector_dim=16),
    ),
    "wavlm-base-plus": ("WavLMModel", "WavLMConfig", dict(num_buckets=16, max_bucket_distance=40)),
    "wavlm-large": ("WavLMModel", "WavLMConfig", dict(num_buckets=16, max_bucket_distance=40, **_LARGE)),
    "data2vec-base": (
        "Data2VecAudioModel",
        "Data2VecAudioConfig",
        dict(num_conv_pos_embeddings=3, conv_pos_kernel_size=5),
    ),
}


def make_hf_folder(variant: str, folder: Path, do_normalize: bool = False, seed: int = 0, **overrides: Any):
    """Save a random tiny ``variant`` model and its feature extractor into ``folder``.

    Returns the model (eval mode, eager attention: the reference the tests compare with).
    The caller's RNG is left as it was.
    """
    import transformers

    model_class, config_class, kwargs = HF_VARIANTS[variant]
    config = getattr(transformers, config_class)(**{**_TINY, **kwargs, **overrides})
    config._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, model_class)(config).eval()
        for parameter in model.parameters():  # non-trivial norms and biases
            if parameter.dim() == 1:
                parameter.data.add_(torch.randn_like(parameter) * 0.1)
    model.save_pretrained(str(folder), safe_serialization=True)
    extractor = transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=do_normalize, return_attention_mask=True
    )
    extractor.save_pretrained(str(folder))
    return model


def hf_hidden_states(model: Any, input_values: Any) -> tuple:
    """A transformers model's ``output_hidden_states`` in the stock s3prl upstream's meaning.

    ``input_values``: ``(1, S)`` (a ``*ForPreTraining`` model is read through its base model).
    The last entry is the model's ``last_hidden_state``: after the final LayerNorm of a pre-LN
    (``do_stable_layer_norm``) model, as s3prl's upstreams give it. transformers 4.x returns that
    tensor as ``hidden_states[-1]`` too; transformers 5 (its hook-based output capturing) returns
    the last layer's output before that LayerNorm there, and the normed one only as
    ``last_hidden_state``. For post-LN models the two are the same tensor in both releases.
    """
    base = getattr(model, "wav2vec2", model)
    out = base(input_values, output_hidden_states=True)
    return (*out.hidden_states[:-1], out.last_hidden_state)
