"""Reading a pickled checkpoint so that no code in it runs: torch's own ``weights_only``
unpickler, told the few classes fairseq files pickle as inert stand-ins of ours.

A fairseq original pickles, besides tensors and plain containers (fairseq/trainer.py
``state_dict``, fairseq/checkpoint_utils.py ``save_state``):

* ``argparse.Namespace``: the older ``args`` (files written before fairseq moved to Hydra);
* omegaconf's ``DictConfig`` / ``ListConfig`` with their value nodes and metadata
  (``omegaconf.nodes.*Node``, ``omegaconf.base.{Metadata,ContainerMetadata}``, ``typing.Any``,
  ``collections.defaultdict``): ``cfg`` as ``save_state`` pickled it from 2020-10 (3b27ed79)
  until the trainer stored ``OmegaConf.to_container`` (6d23cc7e / 62ccebaf, 2021-03 / 05);
  the metadata may name a fairseq config dataclass as ``object_type``;
* ``fairseq.data.dictionary.Dictionary``: HuBERT's label sets in ``task_state["dictionaries"]``.

Each is unpickled as a stand-in that only holds the pickled state (``NEWOBJ`` + ``BUILD``; no
method of the real class exists to be called), and :func:`to_plain` turns the result into
dicts, lists and tensors. omegaconf and fairseq need not be installed. Anything else the file
names is refused by torch's unpickler before it is built: :class:`RefusedPickle`, one line.
"""

from __future__ import annotations

import argparse
import collections
import pickletools
import re
import typing
import zipfile
from pathlib import Path
from typing import Any, List, Set, Tuple

import torch
from torch import Tensor

__all__ = ["FairseqDictionary", "RefusedPickle", "load_restricted", "pickle_globals", "to_plain"]


class RefusedPickle(ValueError):
    """The file is not readable under the allow-list (one line, naming what was refused)."""


class _State:
    """An allow-listed pickled object, as its pickled ``__dict__`` only."""


class _Container(_State):
    """omegaconf's ``DictConfig`` / ``ListConfig``: the value is ``_content``."""


class _Node(_State):
    """An omegaconf value node (``AnyNode``, ``StringNode``, ...): the value is ``_val``."""


class _Metadata(_State):
    """omegaconf's ``Metadata`` / ``ContainerMetadata`` (types and flags: not kept)."""


class _ConfigType(_State):
    """A fairseq config dataclass named in omegaconf's metadata (``object_type``): a name only."""


class FairseqDictionary(_State):
    """fairseq's ``Dictionary`` as pickled (fairseq/data/dictionary.py:20-42: ``symbols``,
    ``count``, ``indices``, ``{bos,pad,eos,unk}_word`` / ``_index``, ``nspecial``)."""

    @property
    def symbols(self) -> List[str]:
        symbols = self.__dict__.get("symbols")
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            raise RefusedPickle(f"a fairseq Dictionary without a list of string symbols ({type(symbols).__name__})")
        return symbols


_NODES = ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "EnumNode", "BytesNode", "PathNode")
_ALLOWED: List[Tuple[Any, str]] = [
    (_Container, "omegaconf.dictconfig.DictConfig"),
    (_Container, "omegaconf.listconfig.ListConfig"),
    *[(_Node, f"omegaconf.nodes.{node}") for node in (*_NODES, "ValueNode", "UnionNode")],
    (_Metadata, "omegaconf.base.Metadata"),
    (_Metadata, "omegaconf.base.ContainerMetadata"),
    (typing.Any, "typing.Any"),
    (collections.defaultdict, "collections.defaultdict"),
    (argparse.Namespace, "argparse.Namespace"),
    (FairseqDictionary, "fairseq.data.dictionary.Dictionary"),
    # types omegaconf's metadata names (object_type, key_type, element_type)
    *[(t, f"builtins.{t.__name__}") for t in (dict, list, tuple, set, str, int, float, bool)],
]
#: fairseq config dataclasses (``fairseq.models.hubert.hubert.HubertConfig``, ...) as metadata names them
_CONFIG_TYPE = re.compile(r"^fairseq(\.[A-Za-z_][A-Za-z0-9_]*)+\.[A-Za-z0-9_]*Config$")
_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL (\S+)")


def pickle_globals(path: Path) -> Set[str]:
    """``module.name`` of every class or function the pickle of a torch zip file names (read
    with :mod:`pickletools`, nothing built); empty for a file in torch's legacy format."""
    if not zipfile.is_zipfile(path):
        return set()
    with zipfile.ZipFile(path) as archive:
        member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
        if member is None:
            return set()
        data = archive.read(member)
    names, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            names.add(str(arg).replace(" ", "."))
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            names.add(f"{strings[-2]}.{strings[-1]}")
        if isinstance(arg, str) and "UNICODE" in op.name:
            strings.append(arg)
    return names


def load_restricted(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` with fairseq's pickled classes as stand-ins.

    Raises:
        RefusedPickle: the file names a class or function outside the allow-list, or is no
            torch file at all (one line).
    """
    extra = [(_ConfigType, name) for name in pickle_globals(path) if _CONFIG_TYPE.match(name)]
    try:
        with torch.serialization.safe_globals(_ALLOWED + extra):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - every reason a file cannot be read: one line
        text = str(error)
        refused = _UNSUPPORTED.search(text)
        if refused:
            raise RefusedPickle(
                f"{path}: refused without running it: its pickle names {refused.group(1)}, which no "
                "checkpoint format daisy_upstream reads contains"
            ) from None
        line = next((ln for ln in text.splitlines() if "WeightsUnpickler error" in ln), None)
        line = line or (text.strip().splitlines() or [""])[0]
        raise RefusedPickle(f"{path}: not a readable torch checkpoint ({type(error).__name__}: {line[:200]})") from None


def to_plain(value: Any) -> Any:
    """Stand-ins, ``Namespace``s and containers -> dicts and lists (tensors and fairseq
    ``Dictionary`` stand-ins as they are). omegaconf interpolations (``${...}``) stay strings,
    as s3prl's converter leaves them (``OmegaConf.to_container`` without ``resolve``)."""
    if isinstance(value, Tensor) or isinstance(value, FairseqDictionary):
        return value
    if isinstance(value, _Container):
        return to_plain(value.__dict__.get("_content"))
    if isinstance(value, _Node):
        return to_plain(value.__dict__.get("_val"))
    if isinstance(value, argparse.Namespace):
        return {k: to_plain(v) for k, v in vars(value).items()}
    if isinstance(value, _State):
        return None  # metadata and type names carry no config values
    if isinstance(value, collections.OrderedDict):
        return collections.OrderedDict((k, to_plain(v)) for k, v in value.items())
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v) for v in value)
    return value
