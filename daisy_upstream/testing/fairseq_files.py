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
  classes); ``"structured"``: the same with ``cfg.model`` a structured config of the model's
  dataclass (Hydra composes it from the registered dataclass), so omegaconf's metadata names
  ``fairseq.models.hubert.hubert.HubertConfig`` as ``object_type``; ``"args"``: the flat ``argparse.Namespace`` of pre-Hydra fairseq, ``cfg`` absent
  (checkpoint_utils.py ``_upgrade_state_dict`` converts it, fairseq/dataclass/utils.py
  ``convert_namespace_to_omegaconf``: fields by name, ``arch`` / ``task`` as ``_name``), in
  torch's legacy (non-zip) serialization as files from torch < 1.6 are.
* ``task_state`` of HuBERT (fairseq/tasks/hubert_pretraining.py 123-153 and
  fairseq_task.py ``StatefulContainer``): ``{"dictionaries": [Dictionary, ...]}``, one per
  label set, each ``Dictionary.load(dict.{label}.txt)``: the four specials then the cluster ids.
* ``Dictionary``'s pickled fields (fairseq/data/dictionary.py 20-42 ``__init__``, 127-138
  ``add_symbol``; no ``__getstate__``): ``bos_word``, ``unk_word``, ``pad_word``, ``eos_word``,
  ``symbols``, ``count``, ``indices``, ``bos_index``, ``pad_index``, ``eos_index``,
  ``unk_index``, ``nspecial``. It pickles as ``fairseq.data.dictionary.Dictionary``: stand-in
  classes are registered under fairseq's module names in ``sys.modules`` while the file is
  written (:func:`stand_in_modules`), then removed.
* ``model`` / ``cfg["model"]`` / ``cfg["task"]``: exactly what s3prl's converters take as
  ``model_weight`` / ``model_cfg`` / ``task_cfg`` (s3prl upstream/*/convert.py), so the
  weights come from s3prl's own classes (:func:`make_random_family_checkpoint`), whose
  parameter names are fairseq's.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import sys
import types
from pathlib import Path
from typing import Any, Dict, Iterator, List

import torch

__all__ = ["CFG_FORMS", "CONFIG_CLASSES", "Dictionary", "stand_in_modules", "write_fairseq_original"]

CFG_FORMS = ("container", "dictconfig", "structured", "args")


@contextlib.contextmanager
def stand_in_modules(classes: Dict[str, type]) -> Iterator[None]:
    """``{"package.module.Name": class}`` importable (with their parent packages) while the
    block runs, so that pickle writes those names; removed afterwards."""
    names = sorted({".".join(path.split(".")[:i]) for path in classes for i in range(1, path.count(".") + 1)})
    if any(name in sys.modules for name in names):
        raise RuntimeError(f"{', '.join(n for n in names if n in sys.modules)} is imported: a stand-in would shadow it")
    modules = {name: types.ModuleType(name) for name in names}
    for path, cls in classes.items():
        module, _, name = path.rpartition(".")
        cls.__module__, cls.__qualname__ = module, name
        setattr(modules[module], name, cls)
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in names:
            sys.modules.pop(name, None)


class Dictionary:
    """fairseq's ``Dictionary`` fields as its ``__init__`` and ``add_symbol`` set them."""

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


#: where fairseq defines each model's config dataclass (fairseq/models/hubert/hubert.py
#: ``HubertConfig``, fairseq/models/wav2vec/wav2vec2.py ``Wav2Vec2Config``)
CONFIG_CLASSES = {
    "hubert": "fairseq.models.hubert.hubert.HubertConfig",
    "wav2vec2": "fairseq.models.wav2vec.wav2vec2.Wav2Vec2Config",
}


def _structured(model_cfg: Dict[str, Any]) -> type:
    """A dataclass with ``model_cfg``'s fields: what Hydra built ``cfg.model`` from."""
    fields = [(k, Any, dataclasses.field(default_factory=lambda v=v: copy.deepcopy(v))) for k, v in model_cfg.items()]
    return dataclasses.make_dataclass("Config", fields)


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
    classes: Dict[str, type] = {"fairseq.data.dictionary.Dictionary": Dictionary}
    state = _file_state(converted, Dictionary)
    config_class = None
    if cfg_form == "structured":
        config_class = _structured(state["cfg"]["model"])
        classes[CONFIG_CLASSES[state["cfg"]["model"]["_name"]]] = config_class
    with stand_in_modules(classes):
        if cfg_form in ("dictconfig", "structured"):
            from omegaconf import OmegaConf

            cfg = dict(state["cfg"])
            if config_class is not None:  # the metadata's object_type names fairseq's dataclass
                cfg["model"] = OmegaConf.structured(config_class())
            state["cfg"] = OmegaConf.create(cfg)
        elif cfg_form == "args":
            cfg = state.pop("cfg")
            flat = {**cfg["task"], **cfg["model"], "arch": cfg["model"]["_name"], "task": cfg["task"]["_name"]}
            flat.pop("_name")
            state["args"] = argparse.Namespace(**flat)
        torch.save(state, path, _use_new_zipfile_serialization=cfg_form != "args")
    return path
