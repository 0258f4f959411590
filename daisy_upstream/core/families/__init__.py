"""One adapter per SSL family that s3prl serves (HuBERT, wav2vec 2.0 / XLS-R, data2vec, WavLM).

An adapter (:class:`Family`) says how a family's checkpoint file is built and loaded, which
frames its stock upstream treats as padding, how to call layer ``k`` (WavLM passes its
relative position bias on) and which norm applies to the last layer only. The early-exit
loop, the branch checks and the removal of rows that exited are one piece of code,
:class:`daisy_upstream.core.early_exit.EarlyExitModel`.

* :func:`family_of_state`: the family of a checkpoint dict (its keys; for the shared
  ``{task_cfg, model_cfg, model_weight}`` format, ``model_cfg._name``, ``_ema`` or
  data2vec-only config keys).
* :func:`family_of_model`: the family of an s3prl model object (its class).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from torch import nn

from daisy_upstream.core.families.base import Family
from daisy_upstream.core.families.data2vec import DATA2VEC, DATA2VEC_ONLY_KEYS
from daisy_upstream.core.families.hubert import HUBERT
from daisy_upstream.core.families.wav2vec2 import WAV2VEC2
from daisy_upstream.core.families.wavlm import WAVLM

__all__ = ["FAMILIES", "Family", "family_of_model", "family_of_state", "get_family"]

FAMILIES: Dict[str, Family] = {f.name: f for f in (HUBERT, WAV2VEC2, DATA2VEC, WAVLM)}

#: s3prl model class name -> family
_MODEL_CLASSES = {"HubertModel": HUBERT, "Wav2Vec2Model": WAV2VEC2, "Data2VecAudioModel": DATA2VEC, "WavLM": WAVLM}


def get_family(name: str) -> Family:
    """The adapter called ``name``; ValueError naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; one of {', '.join(FAMILIES)}") from None


def family_of_model(model: nn.Module) -> Family:
    """The adapter for an s3prl model object (``HubertModel``, ``Wav2Vec2Model``, ...)."""
    for cls in type(model).__mro__:
        if cls.__name__ in _MODEL_CLASSES:
            return _MODEL_CLASSES[cls.__name__]
    raise ValueError(
        f"{type(model).__name__} is not a model family daisy_upstream runs (s3prl's {', '.join(_MODEL_CLASSES)})"
    )


def family_of_state(state: Any, name: str = "checkpoint") -> Family:
    """The family of a checkpoint dict, by the format its stock upstream loads.

    Raises:
        ValueError: a dict in none of the formats, naming what each family expects.
    """
    if isinstance(state, Mapping):
        if "cfg" in state and "model" in state:
            return WAVLM
        if all(key in state for key in HUBERT.required_keys):
            return HUBERT
        if all(key in state for key in WAV2VEC2.required_keys):
            model_cfg = state["model_cfg"] if isinstance(state["model_cfg"], Mapping) else {}
            declared = str(model_cfg.get("_name", ""))
            if declared.startswith("data2vec"):
                return DATA2VEC
            if declared.startswith("hubert"):
                raise ValueError(
                    f"{name} is a HuBERT checkpoint without 'dictionaries_symbols'; "
                    "convert it with s3prl's s3prl.upstream.hubert.convert"
                )
            weights = state["model_weight"] if isinstance(state["model_weight"], Mapping) else {}
            if "_ema" in weights or DATA2VEC_ONLY_KEYS & set(model_cfg):
                return DATA2VEC
            return WAV2VEC2
    formats = "; ".join(f"{f.name}: {f.checkpoint_format}" for f in FAMILIES.values())
    if not isinstance(state, Mapping):
        raise ValueError(
            f"{name} holds a {type(state).__name__}, in no checkpoint format daisy_upstream reads; "
            f"expected a dict, {formats}"
        )
    closest = max(FAMILIES.values(), key=lambda f: sum(key in state for key in f.required_keys))
    missing = [key for key in closest.required_keys if key not in state]
    raise ValueError(
        f"{name} is in no checkpoint format daisy_upstream reads: missing {missing} for "
        f"{closest.name}'s {closest.checkpoint_format} (formats: {formats})"
    )
