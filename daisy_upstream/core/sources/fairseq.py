"""fairseq originals (``hubert_base_ls960.pt``, ``wav2vec_small.pt``, ``xlsr2_300m.pt``, data2vec
``.pt``) read without fairseq, into s3prl's converted format.

The file is what fairseq's trainer saves (fairseq/trainer.py ``state_dict``; before 2021-03
fairseq/checkpoint_utils.py ``save_state``): ``model`` (the model's state dict), the config as
``cfg`` (``{"model": ..., "task": ..., ...}``: a plain dict since 2021-05, omegaconf's
``DictConfig`` before) or, in older files, as ``args`` (an ``argparse.Namespace``, ``cfg``
absent or None), plus ``optimizer_history``, ``extra_state``, ``last_optimizer_state``,
``criterion`` and ``task_state`` (HuBERT: ``{"dictionaries": [Dictionary, ...]}``). The
unpickling is :mod:`daisy_upstream.core.sources.pickled` (no code in the file runs).

The result is what s3prl's converters write (``upstream/{hubert,wav2vec2,data2vec}/convert.py``
``load_and_convert_fairseq_ckpt``): ``task_cfg = cfg["task"]``, ``model_cfg = cfg["model"]``,
``model_weight = state["model"]`` and, for HuBERT, ``dictionaries_symbols`` = each
dictionary's ``symbols``; s3prl's model classes use fairseq's parameter names, so the
weights are taken as they are. An ``args`` file gets the config fairseq's
``convert_namespace_to_omegaconf`` (fairseq/dataclass/utils.py) builds from it: every model
and task field from the flat namespace by name, ``model._name = args.arch``,
``task._name = args.task``.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

__all__ = ["FAIRSEQ_MODELS", "from_fairseq", "is_fairseq"]

#: fairseq ``model._name`` -> the family s3prl's converter of that name serves
FAIRSEQ_MODELS = {"hubert": "hubert", "wav2vec2": "wav2vec2", "data2vec_audio": "data2vec"}


def is_fairseq(state: Any) -> bool:
    """Whether a loaded dict is a fairseq original: ``model`` with ``args`` or a nested ``cfg``
    (unilm's WavLM ``{cfg, model}`` has a flat ``cfg``)."""
    if not isinstance(state, Mapping) or "model" not in state:
        return False
    cfg = state.get("cfg")
    return state.get("args") is not None or (isinstance(cfg, Mapping) and isinstance(cfg.get("model"), Mapping))


def _config(state: Mapping[str, Any]) -> Dict[str, Any]:
    cfg = state.get("cfg")
    if isinstance(cfg, Mapping) and isinstance(cfg.get("model"), Mapping):
        return dict(cfg)
    args = state["args"]
    if not isinstance(args, Mapping):
        raise ValueError(f"args is a {type(args).__name__}, not a Namespace of fields")
    task = args.get("task")
    if task == "speech_pretraining":  # renamed by checkpoint_utils._upgrade_state_dict
        task = "audio_pretraining"
    return {"model": {**args, "_name": args.get("arch")}, "task": {**args, "_name": task}}


def from_fairseq(state: Mapping[str, Any], name: str) -> Dict[str, Any]:
    """A fairseq original (plain dicts, see :func:`~daisy_upstream.core.sources.pickled.to_plain`)
    -> s3prl's converted dict of its family.

    Raises:
        ValueError: a model other than a HuBERT / wav2vec 2.0 / data2vec pretraining one
            (fine-tuned CTC models included), or a HuBERT without its dictionaries.
    """
    cfg = _config(state)
    model_cfg, task_cfg = dict(cfg["model"]), dict(cfg.get("task") or {})
    model_name = str(model_cfg.get("_name"))
    if model_name not in FAIRSEQ_MODELS:
        raise ValueError(
            f"{name} is a fairseq {model_name!r} model; daisy_upstream reads fairseq's pretraining "
            f"checkpoints of {', '.join(FAIRSEQ_MODELS)} (a fine-tuned model: pass the pretrained one)"
        )
    weights = state["model"]
    if not isinstance(weights, Mapping):
        raise ValueError(f"{name}: the fairseq 'model' entry is a {type(weights).__name__}, not a state dict")
    out: Dict[str, Any] = {"task_cfg": task_cfg, "model_cfg": model_cfg, "model_weight": dict(weights)}
    if FAIRSEQ_MODELS[model_name] == "hubert":
        dictionaries = (state.get("task_state") or {}).get("dictionaries")
        if not isinstance(dictionaries, (list, tuple)) or not dictionaries:
            raise ValueError(
                f"{name} is a fairseq HuBERT without task_state['dictionaries'] (its label sets); "
                "pass the pretraining checkpoint fairseq's hubert_pretraining task saved"
            )
        out["dictionaries_symbols"] = [list(d.symbols) for d in dictionaries]
    return out
