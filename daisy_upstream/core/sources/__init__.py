"""Every checkpoint source ``-k`` takes, read into s3prl's converted format of its family.

:func:`read_source` detects the format from the path itself (never from its name):

* a folder with ``config.json``: a transformers model (:mod:`.transformers`);
* a file, unpickled under an allow-list (:mod:`.pickled`, no code in it runs), then
  a fairseq original (:mod:`.fairseq`), or already a dict the families load: s3prl's converted
  ``{task_cfg, model_cfg, model_weight[, dictionaries_symbols]}``, unilm's WavLM ``{cfg, model}``
  (s3prl's ``wavlm_local`` loads the release file as it is), the authors' DAISY layout, or a
  DAISY checkpoint made from any of them.

What comes back is what :func:`daisy_upstream.core.families.family_of_state` recognises; a
source without some of its family's pretraining parameters lists them under
``source["absent"]`` (the loader sets those modules to None). :func:`stock_checkpoint` makes
the file s3prl's stock upstream loads (``daisy convert``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Union

from daisy_upstream.core.sources.fairseq import from_fairseq, is_fairseq
from daisy_upstream.core.sources.pickled import RefusedPickle, load_restricted, to_plain
from daisy_upstream.core.sources.stock import drop_filled, stock_checkpoint

__all__ = ["ACCEPTED", "RefusedPickle", "read_source", "source_format", "stock_checkpoint"]

log = logging.getLogger(__name__)

#: the formats -k accepts, as one line for refusals
ACCEPTED = (
    "accepted: s3prl's converted file of HuBERT / wav2vec 2.0 / data2vec, unilm's WavLM {cfg, model}, "
    "the authors' DAISY layout, a DAISY checkpoint made from any of these, a fairseq original "
    "(hubert, wav2vec2, data2vec_audio pretraining .pt), or a transformers folder (config.json + "
    "model.safetensors of HubertModel, Wav2Vec2Model, Wav2Vec2ForPreTraining, WavLMModel, Data2VecAudioModel)"
)


def source_format(state: Dict[str, Any]) -> str:
    """How a dict :func:`read_source` returned was stored: ``transformers``, ``fairseq`` or ``s3prl``."""
    source = state.get("source")
    return str(source.get("format", "s3prl")) if isinstance(source, dict) else "s3prl"


def read_source(path: Union[str, Path]) -> Dict[str, Any]:
    """The checkpoint at ``path`` (file or transformers folder) as its family's converted dict.

    Raises:
        FileNotFoundError: nothing at ``path``.
        RefusedPickle: a pickle naming anything outside the allow-list (nothing of it ran).
        ValueError: a format it is not, one line ending with :data:`ACCEPTED`.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is a folder without config.json, so not a transformers model; {ACCEPTED}")
        from daisy_upstream.core.sources.transformers import from_transformers

        state = from_transformers(path)
        absent = ", ".join(state["source"]["absent"]) or "nothing"
        log.info("%s: transformers %s mapped onto s3prl's classes (absent: %s)", path, state["source"]["class"], absent)
        return state
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = to_plain(load_restricted(path))
    if is_fairseq(state):
        converted = from_fairseq(state, str(path))
        converted["source"] = {"format": "fairseq", "name": path.name}
        log.info("%s: fairseq original %s read without fairseq", path, converted["model_cfg"].get("_name"))
        return converted
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a checkpoint dict; {ACCEPTED}")
    return drop_filled(state)  # a file 'daisy convert' wrote: its zero-filled head is absent again
