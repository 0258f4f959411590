"""The DAISY checkpoint format (the file the family's stock s3prl upstream loads + a ``daisy``
entry): reading, writing and merging, in one place (as torchaudio keeps fairseq's format in
``utils/import_fairseq.py``).

Reading: :func:`read_checkpoint` (the dict, checked, from any source format -k takes:
:mod:`daisy_upstream.core.sources`, docs/checkpoints.md), :func:`load_daisy_state` /
:func:`load_daisy_checkpoint` (model + branches). Writing: :func:`with_branches` (the ``daisy``
entry), :func:`half_precision` (fp16 for shipping). Merging: :func:`with_teacher` (a teacher's
pretraining head onto a backbone, for stage-1 targets). Telling the layouts apart:
:func:`split_authors_heads`.

The model part is exactly what the family's stock upstream loads (see
:mod:`daisy_upstream.core.families`, which builds and loads each): HuBERT as below; wav2vec 2.0
and data2vec ``{task_cfg, model_cfg, model_weight}`` (real data2vec files also carry ``_ema``);
WavLM ``{cfg, model}``. The ``daisy`` entry is the same for every family.

Format for HuBERT (a ``torch.save``'d dict, loadable with ``weights_only=True``)::

    task_cfg             dict   fairseq HubertPretrainingConfig fields (s3prl converted format)
    model_cfg            dict   fairseq HubertConfig fields
    model_weight         dict   HubertModel state dict
    dictionaries_symbols list   one list of label symbols per target set (4 fairseq specials first)
    daisy                dict   (optional; absent = a plain HuBERT checkpoint)
        format_version   int    (optional, absent = 1) the DAISY format; a newer one is refused
        branches         dict   {"0.weight": (C, D), "0.bias": (C,), ..., "{L-1}.bias"}
        num_classes      int    C, classes per output block
        groups           int    (optional, default 1) G output blocks per branch: branch weights
                                are (G*C, D), block g = rows g*C..g*C+C-1, one softmax each; the
                                exit entropy is the mean over the blocks (wav2vec 2.0's codebook
                                groups)
        targets          dict   (optional) what stage 1 trained the branches on: ``kind``
                                ("model" or "kmeans") and its facts; k-means adds
                                ``centroids`` (N, D) and their provenance (layer, clusters,
                                audio, seed, inertia, ...), see training/kmeans.py
        calibration      dict   (optional) {"layer_entropy": [L floats], "dataset": str, ...}
        provenance       dict   (optional) commands and settings that made it; ``backbone``:
                                the pretraining's own record (top-level ``provenance`` of a
                                checkpoint written by ``daisy pretrain-tiny``)

        branch_input     str    (optional, default "hidden_states") what branch k reads, a key
                                of ``branches.BRANCH_INPUTS``; branches trained by us read
                                ``hidden_states[k]``

The authors' release layout (DAISY, Lin et al.) is read as their code loads it (strictly):
``model_weight`` holds per-layer heads ``final_proj.{i}.weight`` ``(C, D)`` / ``.bias``
``(C,)`` for ``i = 0..L-1`` (their ``final_proj`` is a ModuleList, ``final_dim`` = C classes)
and neither HuBERT's single ``final_proj`` nor ``label_embs_concat``; ``model_cfg`` may carry
``cls_pred_position``: ``'before-norm'`` (their class default, also when the key is absent),
head ``i`` reads layer ``i+1``'s FFN output (fc2, before dropout, the residual add and any
LayerNorm), or ``'after-norm'``, it reads the layer's output. Those heads become the
branches with that input; ``hidden_states`` stay s3prl's. Keys of ``model_cfg`` that s3prl's
``HubertConfig`` lacks are ignored when building the model (s3prl's ``merge_with_parent``).
The HuBERT itself is always s3prl's own ``HubertModel``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from daisy_upstream.core.branches import BRANCH_INPUTS, ExitBranches
from daisy_upstream.core.checkpoint_checks import FORMAT_VERSION
from daisy_upstream.core.families import Family, family_of_state
from daisy_upstream.core.families.hubert import HUBERT as HUBERT_FAMILY
from daisy_upstream.core.families.hubert import build_hubert
from daisy_upstream.core.sources import ACCEPTED, read_source
from daisy_upstream.core.sources.stock import sha256_of, source_digests

__all__ = [
    "CLS_PRED_POSITIONS",
    "FAIRSEQ_SPECIALS",
    "REQUIRED_KEYS",
    "DaisyCheckpoint",
    "authors_branch_input",
    "build_hubert",
    "check_family",
    "checkpoint_record",
    "half_precision",
    "load_daisy_checkpoint",
    "load_daisy_state",
    "read_checkpoint",
    "split_authors_heads",
    "with_branches",
    "with_teacher",
    "TEACHER_KEYS",
]

log = logging.getLogger(__name__)

REQUIRED_KEYS = HUBERT_FAMILY.required_keys  # a converted HuBERT file
_AUTHORS_HEAD = re.compile(r"^final_proj\.(\d+)\.(weight|bias)$")
FAIRSEQ_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
#: the authors' ``model_cfg["cls_pred_position"]`` -> what their heads read (BRANCH_INPUTS)
CLS_PRED_POSITIONS = {"before-norm": "ffn_output", "after-norm": "layer_output"}
#: their ``HubertModel``'s default, used when a checkpoint's ``model_cfg`` has no such key
AUTHORS_DEFAULT_POSITION = "before-norm"
#: parameters of s3prl's ``HubertModel`` that the authors' model does not have
_AUTHORS_ABSENT = ("final_proj.weight", "final_proj.bias", "label_embs_concat")


@dataclass
class DaisyCheckpoint:
    """A loaded checkpoint: the s3prl model plus what DAISY adds.

    Attributes:
        model: the frozen model (s3prl's ``HubertModel``, ``Wav2Vec2Model``,
            ``Data2VecAudioModel`` or ``WavLM``).
        task_cfg: its task config (``normalize``: whether the waveform is normalised; WavLM's ``cfg``).
        branches: the exit branches, or None for a plain HuBERT checkpoint.
        calibration: ``{"layer_entropy": [...], "dataset": ...}`` or None.
        layout: ``"daisy"``, ``"authors"`` or ``"plain"``.
        cls_pred_position: the authors' setting the heads follow (authors' layout only).
        family: the model family's adapter.
    """

    model: Any
    task_cfg: Any
    branches: Optional[ExitBranches]
    calibration: Optional[Dict[str, Any]]
    layout: str
    cls_pred_position: Optional[str] = None
    family: Family = HUBERT_FAMILY

    @property
    def num_layers(self) -> int:
        return len(self.model.encoder.layers)

    def describe(self) -> str:
        """One line: the layout and what the branches read."""
        if self.branches is None:
            return f"plain {self.family.name} checkpoint, no exit branches"
        reading = f"branch k reads {BRANCH_INPUTS[self.branches.branch_input]}"
        if self.layout == "authors":
            return f"authors' layout, cls_pred_position {self.cls_pred_position!r}: {reading}"
        return f"DAISY {self.family.name} checkpoint: {reading}"


def read_checkpoint(path: Union[str, Path], family: Optional[str] = None) -> Dict[str, Any]:
    """The checkpoint at ``path`` as its family's converted dict, whatever its source format.

    A file or transformers folder (:func:`daisy_upstream.core.sources.read_source`: s3prl's
    converted files, fairseq originals, unilm WavLM, the authors' layout, DAISY checkpoints,
    transformers folders), read without running any code in it; errors say what is wrong
    and which formats are accepted. ``family``: the family the caller expects (None: any); a
    file of another family is refused naming the upstream that takes it.
    """
    state = read_source(path)
    check_family(state, family, str(path))
    return state


def check_family(state: Mapping[str, Any], family: Optional[str], name: str) -> None:
    """Refuse a checkpoint dict of another family than ``family`` (None: any), naming the upstream that takes it."""
    try:
        found = family_of_state(state, name)
    except ValueError as error:
        raise ValueError(f"{error}; {ACCEPTED}") from None
    if family is not None and found.name != family:
        raise ValueError(
            f"{name} is a {found.name} checkpoint ({found.checkpoint_format}), not {family}; use -u {found.upstream}"
        )


def checkpoint_record(path: Union[str, Path]) -> Dict[str, str]:
    """``{"name": file name, "sha256": hex digest}``: how results name the checkpoint they
    come from (never by a path on the machine that made them). A transformers folder's digest
    is that of its files' ``name digest`` lines (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        lines = "".join(f"{name} {digest}\n" for name, digest in source_digests(path).items())
        return {"name": path.name, "sha256": hashlib.sha256(lines.encode()).hexdigest()}
    return {"name": path.name, "sha256": sha256_of(path)}


def split_authors_heads(weights: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """``model_weight`` -> ``(the rest, heads)``: the authors' per-layer heads
    ``final_proj.{i}.weight/bias`` as an :class:`ExitBranches` state dict ``{"i.weight": ...}``
    (empty when the file is not in their layout)."""
    backbone, heads = {}, {}
    for key, value in weights.items():
        match = _AUTHORS_HEAD.match(key)
        if match:
            heads[f"{match.group(1)}.{match.group(2)}"] = value
        else:
            backbone[key] = value
    return backbone, heads


def authors_branch_input(model_cfg: Dict[str, Any], name: str) -> Tuple[str, str]:
    """``(cls_pred_position, BRANCH_INPUTS key)`` of an authors'-layout checkpoint."""
    position = model_cfg.get("cls_pred_position", AUTHORS_DEFAULT_POSITION)
    if position not in CLS_PRED_POSITIONS:
        raise ValueError(
            f"{name}: model_cfg.cls_pred_position is {position!r}; the authors' heads read "
            f"{' or '.join(map(repr, CLS_PRED_POSITIONS))}"
        )
    return position, CLS_PRED_POSITIONS[position]


def load_daisy_checkpoint(
    source: Union[str, Path, Mapping[str, Any]], family: Optional[str] = None, name: Optional[str] = None
) -> DaisyCheckpoint:
    """Load a DAISY, authors'-layout or plain checkpoint of any family: a file, or the dict
    ``torch.load`` gives for one (built in memory, never written to a file first).

    See :func:`load_daisy_state`; the layout and what the branches read are logged.
    ``family``: the family the caller expects (None: the checkpoint's own). ``name``: what
    messages call it (default: the path, or ``checkpoint`` for a dict).
    """
    if isinstance(source, Mapping):
        name = name or "checkpoint"
        state = dict(source)
        check_family(state, family, name)
    else:
        name = name or str(source)
        state = read_checkpoint(source, family)
    loaded = load_daisy_state(state, name)
    log.info("%s: %s", name, loaded.describe())
    return loaded


def load_daisy_state(state: Dict[str, Any], name: str = "checkpoint") -> DaisyCheckpoint:
    """Build the model and branches of a checkpoint dict (as :func:`read_checkpoint` returns).

    The model is built and loaded as the family's stock upstream does it
    (:mod:`daisy_upstream.core.families`); variants the early-exit loop cannot reproduce
    (conformer layers, ...) are refused. fp16-stored tensors are restored to fp32. The model is returned in eval mode with
    layerdrop off. The state dict is loaded strictly, except that a checkpoint with branches
    may lack HuBERT's pretraining head, ``final_proj.weight/bias`` and ``label_embs_concat``
    (the authors' always do): the model's are then set to None.

    Raises:
        ValueError: on a malformed file (:mod:`daisy_upstream.core.checkpoint_checks`: types,
            NaN / inf tensors, shapes against ``model_cfg``), branches whose count or width does not match the
            model, an unknown ``cls_pred_position`` / ``branch_input``, or a model state dict
            that does not match its config.
    """
    from daisy_upstream.core.checkpoint_checks import check_structure, check_weights_fit

    path = name
    family = family_of_state(state, path)
    where = check_structure(
        state, family.weights(state), name
    )  # types, finiteness, branch shapes: one line naming the key
    model, task_cfg = family.build(state)
    family.check_supported(model, path)
    weights = {
        k: (v.float() if v.is_floating_point() else v) for k, v in family.loadable(family.weights(state)).items()
    }
    check_weights_fit(model, weights, name, where)
    weights, authors_heads = split_authors_heads(weights)
    if authors_heads and family is not HUBERT_FAMILY:
        raise ValueError(f"{path}: per-layer heads final_proj.N.* (the authors' layout) exist for HuBERT only")
    num_layers = len(model.encoder.layers)
    embed_dim = model.encoder.embedding_dim
    calibration = position = None
    if "daisy" in state:
        daisy = state["daisy"]
        if not isinstance(daisy, dict) or "branches" not in daisy:
            raise ValueError(f"{path}: the 'daisy' entry must be a dict with 'branches'")
        branch_input = daisy.get("branch_input", "hidden_states")
        if branch_input not in BRANCH_INPUTS:
            raise ValueError(f"{path}: daisy.branch_input is {branch_input!r}, not one of {', '.join(BRANCH_INPUTS)}")
        if branch_input == "ffn_output" and not family.exposes_ffn_output:
            raise ValueError(f"{path}: daisy.branch_input 'ffn_output' is not available in {family.name} layers")
        groups = daisy.get("groups", 1)
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"{path}: daisy.groups must be an int >= 1, got {groups!r}")
        branches = ExitBranches.from_state_dict(daisy["branches"], num_layers, embed_dim, branch_input, groups)
        calibration = daisy.get("calibration")
        layout = "daisy"
    elif authors_heads:
        position, branch_input = authors_branch_input(state["model_cfg"], path)
        branches = ExitBranches.from_state_dict(authors_heads, num_layers, embed_dim, branch_input)
        layout = "authors"
    else:
        branches, layout = None, "plain"
    # HuBERT's pretraining head is never used by the upstream: a file with branches may lack it
    # (the authors' always do, and so do their heads written in our format)
    allowed_missing = set(_AUTHORS_ABSENT) if branches is not None and family is HUBERT_FAMILY else set()
    allowed_missing |= set(_source_absent(state))  # what the source format does not have (sources/)
    result = model.load_state_dict(weights, strict=False)
    missing = set(result.missing_keys) - allowed_missing
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path}: the model weights do not match its config (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(result.unexpected_keys)[:5]})"
        )
    if result.missing_keys:  # no random stand-ins for what the file does not have
        for absent in {key.split(".")[0] for key in result.missing_keys}:
            setattr(model, absent, None)
    if calibration is not None:
        entropy = calibration.get("layer_entropy") if isinstance(calibration, dict) else None
        if not isinstance(entropy, (list, tuple)) or len(entropy) != num_layers:
            raise ValueError(f"{path}: daisy.calibration.layer_entropy must list {num_layers} floats, got {entropy!r}")
    model.feature_grad_mult = 0.0
    model.encoder.layerdrop = 0.0
    model.eval()
    return DaisyCheckpoint(model, task_cfg, branches, calibration, layout, position, family)


def _source_absent(state: Dict[str, Any]) -> Tuple[str, ...]:
    """Parameters the checkpoint's source format lacks (``source["absent"]``, e.g. the
    pretraining head of a transformers model without one)."""
    source = state.get("source")
    absent = source.get("absent", ()) if isinstance(source, dict) else ()
    return tuple(absent) if isinstance(absent, (list, tuple)) else ()


# --- writing -------------------------------------------------------------------------------


def with_branches(
    state: Dict[str, Any],
    branches: ExitBranches,
    calibration: Optional[Dict[str, Any]] = None,
    provenance: Optional[Dict[str, Any]] = None,
    targets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """A copy of a checkpoint dict (any family) with a ``daisy`` entry (branches + calibration).

    The copy keeps exactly the keys the family's stock upstream loads.
    Authors' heads in ``state`` are dropped (the new branches replace them). ``provenance``
    (how the branches were made) is stored as ``daisy.provenance``, together with the
    backbone's own ``provenance`` entry (as ``backbone``) when ``state`` has one.
    ``targets``: what the branches were trained on (``daisy.targets``: ``kind`` and, for
    k-means, the centroids and their provenance).
    """
    family = family_of_state(state)
    backbone_weights, authors_heads = split_authors_heads(family.weights(state))
    out = {key: state[key] for key in family.required_keys}
    if "source" in state:  # what the source format lacks stays known (sources/)
        out["source"] = state["source"]
    if authors_heads and family is HUBERT_FAMILY:  # re-trained authors' heads replace the old ones
        out["model_weight"] = backbone_weights
    out["daisy"] = {
        "format_version": FORMAT_VERSION,  # read by checkpoint_checks.check_format_version
        "branches": {k: v.detach().cpu().clone() for k, v in branches.state_dict().items()},
        "num_classes": branches.num_classes,
        "branch_input": branches.branch_input,  # what branch k reads (ours: hidden_states[k])
    }
    if branches.groups > 1:
        out["daisy"]["groups"] = branches.groups
    if targets is not None:
        out["daisy"]["targets"] = dict(targets)
    if calibration is not None:
        out["daisy"]["calibration"] = dict(calibration)
    record = dict(provenance or {})
    backbone = state.get("provenance") or (state.get("daisy") or {}).get("provenance", {}).get("backbone")
    if backbone:
        record["backbone"] = backbone
    if record:
        out["daisy"]["provenance"] = record
    return out


def half_precision(state: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of a checkpoint dict with every floating tensor stored as fp16 (for shipping).

    :func:`load_daisy_checkpoint` restores fp32 on load.
    """

    def cast(value: Any) -> Any:
        if isinstance(value, Tensor) and value.is_floating_point():
            return value.half()
        if isinstance(value, dict):
            return {k: cast(v) for k, v in value.items()}
        return value

    return {k: cast(v) if k in ("model_weight", "model", "daisy") else v for k, v in state.items()}


# --- merging -------------------------------------------------------------------------------

#: the pretraining head that stage-1 targets need (HuBERT's ``final_proj`` + label embeddings)
TEACHER_KEYS = ("final_proj.weight", "final_proj.bias", "label_embs_concat")


def with_teacher(
    state: Dict[str, Any], teacher: Dict[str, Any], name: str = "checkpoint", teacher_name: str = "teacher"
) -> Dict[str, Any]:
    """A checkpoint dict: ``state``'s backbone with ``teacher``'s pretraining head.

    ``teacher`` is a converted HuBERT of the same backbone (for the authors' layout, whose
    heads replace ``final_proj``). The result has the teacher's ``final_proj``, label
    embeddings, ``final_dim``, ``untie_final_proj`` and label set; authors' heads and the
    reading they follow (``cls_pred_position``) are dropped.

    Raises:
        ValueError: the teacher lacks the head or is another backbone (encoder weights differ).
    """
    weights, teacher_weights = state["model_weight"], teacher["model_weight"]
    missing = [k for k in TEACHER_KEYS if k not in teacher_weights]
    if "label_embs_concat" in missing:
        raise ValueError(
            f"{teacher_name}: checkpoint has no label_embs_concat: cannot make stage-1 targets; "
            "it must be a pretraining checkpoint, not a fine-tuned one"
        )
    if missing:
        raise ValueError(f"{teacher_name} has no {missing}")
    probe = next((k for k in weights if k.startswith("encoder.layers.") and k in teacher_weights), None)
    if (
        probe is None
        or weights[probe].shape != teacher_weights[probe].shape
        or not torch.equal(weights[probe].float(), teacher_weights[probe].float())
    ):
        raise ValueError(
            f"{teacher_name} is not the same backbone as {name} (encoder weights differ at "
            f"{probe!r}); pass the HuBERT the heads were trained on"
        )
    backbone, authors_heads = split_authors_heads(weights)
    if authors_heads:
        position, branch_input = authors_branch_input(state["model_cfg"], name)
        log.info(
            "%s: authors' layout, cls_pred_position %r: its heads read %s; replaced by the teacher's head",
            name,
            position,
            BRANCH_INPUTS[branch_input],
        )
    model_cfg = {k: v for k, v in state["model_cfg"].items() if k != "cls_pred_position"}
    for key in ("final_dim", "untie_final_proj"):
        model_cfg.pop(key, None)
        if key in teacher["model_cfg"]:
            model_cfg[key] = teacher["model_cfg"][key]
    return dict(
        state,
        dictionaries_symbols=teacher["dictionaries_symbols"],
        model_cfg=model_cfg,
        model_weight={**backbone, **{k: teacher_weights[k] for k in TEACHER_KEYS}},
    )
