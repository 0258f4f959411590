"""fairseq original checkpoints, written without fairseq, to the facts of fairseq's own code
(facebookresearch/fairseq at 3d262bb2, 2025-09; older layouts at the commits named).

* Top-level keys (fairseq/trainer.py ``Trainer.state_dict``, lines 401-445): ``args`` (None,
  "legacy"), ``cfg``, ``model`` (``self.model.state_dict()``), ``criterion`` (None without
  parameters), ``optimizer_history`` (a list of ``{criterion_name, optimizer_name,
  lr_scheduler_state, num_updates}``), ``task_state`` (``self.task.state_dict()``),
  ``extra_state`` (``{metrics, previous_training_time}``), ``last_optimizer_state``.
* ``cfg`` forms (``cfg_form``): ``"container"``: ``OmegaConf.to_container(cfg, resolve=True,
  enum_to_str=True)``, a plain dict (trainer.py since 62ccebaf, 2021-05-31; HuBERT, XLS-R,
  data2vec releases); ``"dictconfig"``: the ``DictConfig`` itself, as ``save_state`` pickled
  it (checkpoint_utils.py at 3b27ed79, 2020-10-20, ``"cfg": cfg``); written with the real
  omegaconf installed here (fairseq pinned omegaconf 2.0, whose pickled fields are the same
  classes); ``"args"``: the flat ``argparse.Namespace`` of pre-Hydra fairseq, ``cfg`` absent
  (checkpoint_utils.py ``_upgrade_state_dict`` converts it, fairseq/dataclass/utils.py
  ``convert_namespace_to_omegaconf``: fields by name, ``arch`` / ``task`` as ``_name``), in
  torch's legacy (non-zip) serialization as files from torch < 1.6 are.
* ``task_state`` of HuBERT (fairseq/tasks/hubert_pretraining.py 123-153 and
  fairseq_task.py ``StatefulContainer``): ``{"dictionaries": [Dictionary, ...]}``, one per
  label set, each ``Dictionary.load(dict.{label}.txt)``: the four specials then the cluster ids.
* ``Dictionary``'s pickled fields (fairseq/data/dictionary.py 20-42 ``__init__``, 127-138
  ``add_symbol``; no ``__getstate__``): ``bos_word``, ``unk_word``, ``pad_word``, ``eos_word``,
  ``symbols``, ``count``, ``indices``, ``bos_index``, ``pad_index``, ``eos_index``,
  ``unk_index``, ``nspecial``. It pickles as ``fairseq.data.dictionary.Dictionary``: a
  stand-in class is registered under that module in ``sys.modules`` while the file is written.
* ``model`` / ``cfg["model"]`` / ``cfg["task"]``: exactly what s3prl's converters take as
  ``model_weight`` / ``model_cfg`` / ``task_cfg`` (s3prl upstream/*/convert.py), so the
  weights come from s3prl's own classes (:func:`make_random_family_checkpoint`), whose
  parameter names are fairseq's.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import types
from pathlib import Path
from typing import Any, Dict, Iterator, List

import torch

__all__ = ["CFG_FORMS", "fairseq_dictionary_module", "write_fairseq_original"]

CFG_FORMS = ("container", "dictconfig", "args")


@contextlib.contextmanager
def fairseq_dictionary_module() -> Iterator[type]:
    """A stand-in ``fairseq.data.dictionary.Dictionary`` importable while the block runs (then removed)."""
    names = ("fairseq", "fairseq.data", "fairseq.data.dictionary")
    if any(name in sys.modules for name in names):
        raise RuntimeError("fairseq is imported: the stand-in would shadow it")
    modules = {name: types.ModuleType(name) for name in names}

    class Dictionary:
        def __init__(self, symbols: List[str], counts: List[int]) -> None:
            # dictionary.py 29-42: the specials first, via add_symbol (127-138)
            self.bos_word, self.unk_word, self.pad_word, self.eos_word = "<s>", "<unk>", "<pad>", "</s>"
            self.symbols, self.count, self.indices = [], [], {}
            for word, n in zip(symbols, counts):
                self.indices[word] = len(self.symbols)
                self.symbols.append(word)
                self.count.append(n)
            self.bos_index, self.pad_index, self.eos_index, self.unk_index = 0, 1, 2, 3
            self.nspecial = 4

    Dictionary.__module__, Dictionary.__qualname__ = "fairseq.data.dictionary", "Dictionary"
    modules["fairseq.data.dictionary"].Dictionary = Dictionary
    sys.modules.update(modules)
    try:
        yield Dictionary
    finally:
        for name in names:
            sys.modules.pop(name, None)


def _file_state(converted: Dict[str, Any], dictionary: type) -> Dict[str, Any]:
    symbols = converted.get("dictionaries_symbols", [])
    # cfg.model._name / cfg.task._name: the registered names (hubert.py @register_model("hubert"),
    # hubert_pretraining.py @register_task("hubert_pretraining"), wav2vec2.py "wav2vec2")
    model_cfg = {"_name": "hubert" if symbols else "wav2vec2", **converted["model_cfg"]}
    task_cfg = {"_name": "hubert_pretraining" if symbols else "audio_pretraining", **converted["task_cfg"]}
    return {
        "args": None,
        "cfg": {
            "_name": None,
            "common": {"fp16": True, "seed": 1337},
            "model": model_cfg,
            "task": task_cfg,
            "criterion": {"_name": "hubert" if symbols else "wav2vec"},
            "optimization": {"max_update": 400000, "lr": [0.0005]},
        },
        "model": dict(converted["model_weight"]),
        "criterion": None,
        "optimizer_history": [
            {
                "criterion_name": "HubertCriterion" if symbols else "Wav2vecCriterion",
                "optimizer_name": "FairseqAdam",
                "lr_scheduler_state": {"best": 5.3},
                "num_updates": 400000,
            }
        ],
        "task_state": {"dictionaries": [dictionary(s, [1] * 4 + [100] * (len(s) - 4)) for s in symbols]}
        if symbols
        else {},
        "extra_state": {"metrics": {}, "previous_training_time": 123.0},
        "last_optimizer_state": {"state": {}, "param_groups": [{"lr": 0.0005, "params": [0, 1]}]},
    }


def write_fairseq_original(converted: Dict[str, Any], path: Path, cfg_form: str = "container") -> Path:
    """Write the fairseq original that s3prl's converter turns into ``converted`` (a dict of
    :func:`daisy_upstream.testing.make_random_family_checkpoint` without branches)."""
    if cfg_form not in CFG_FORMS:
        raise ValueError(f"cfg_form {cfg_form!r}: one of {CFG_FORMS}")
    with fairseq_dictionary_module() as dictionary:
        state = _file_state(converted, dictionary)
        legacy = False
        if cfg_form == "dictconfig":
            from omegaconf import OmegaConf

            state["cfg"] = OmegaConf.create(state["cfg"])
        elif cfg_form == "args":
            cfg = state.pop("cfg")
            flat = {**cfg["task"], **cfg["model"], "arch": cfg["model"]["_name"], "task": cfg["task"]["_name"]}
            flat.pop("_name")
            state["args"] = argparse.Namespace(**flat)
            legacy = True
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path
