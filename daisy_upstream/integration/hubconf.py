"""s3prl hub entries (``ckpt=``, ``model_config=``, ``refresh=`` calling convention).

Per family ``F`` in ``hubert``, ``wav2vec2``, ``data2vec``, ``wavlm``: ``daisy_F_local`` and its
twin ``daisy_F_custom`` take a local checkpoint of that family in any format
:func:`daisy_upstream.core.checkpoint.read_checkpoint` reads (s3prl's converted file, a fairseq
original, unilm's WavLM file, a transformers folder, or a DAISY checkpoint made from one); a
file of another family is refused with the upstream that takes it. ``daisy_hubert`` without ``-k`` is the embedded tiny model.
:func:`daisy_local` takes a checkpoint of any family (for the tools, not registered).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from daisy_upstream.core.expert import DaisyUpstream

__all__ = [
    "DEFAULT_CHECKPOINT",
    "daisy_data2vec_custom",
    "daisy_data2vec_local",
    "daisy_hubert",
    "daisy_hubert_custom",
    "daisy_hubert_local",
    "daisy_local",
    "daisy_wav2vec2_custom",
    "daisy_wav2vec2_local",
    "daisy_wavlm_custom",
    "daisy_wavlm_local",
]

#: the embedded tiny DAISY HuBERT shipped inside the package
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "resources" / "daisy_tiny_hubert.pt"


def daisy_local(
    ckpt: Union[None, str, Mapping[str, Any]] = None,
    model_config: Any = None,
    refresh: bool = False,
    family: Optional[str] = None,
    **kwargs,
) -> DaisyUpstream:
    """DAISY upstream from a local checkpoint path of ``family`` (None: the file's own family),
    or from a checkpoint dict held in memory (as ``torch.load`` gives it).

    No downloads: a URL is refused.
    """
    entry = f"daisy_{family}_local" if family else "daisy_local"
    if ckpt is None:
        raise ValueError(f"{entry} needs a checkpoint path: pass -k PATH")
    if not isinstance(ckpt, Mapping):
        ckpt = str(ckpt)
        if "://" in ckpt:
            raise ValueError(
                f"{ckpt!r}: daisy_upstream never downloads; fetch the file yourself and pass its local path"
            )
        if not os.path.exists(ckpt):  # a file, or a transformers model's folder
            raise FileNotFoundError(f"checkpoint {ckpt} does not exist (-k/--upstream_ckpt)")
    return DaisyUpstream(ckpt, model_config=model_config, family=family, **kwargs)


def _entry(family: str, twin: str):
    def entry(
        ckpt: Union[None, str, Mapping[str, Any]] = None, model_config: Any = None, refresh: bool = False, **kwargs
    ) -> DaisyUpstream:
        return daisy_local(ckpt, model_config=model_config, refresh=refresh, family=family, **kwargs)

    entry.__name__ = entry.__qualname__ = f"daisy_{family}_{twin}"
    entry.__doc__ = (
        f"DAISY {family} upstream from a local checkpoint in the format of s3prl's ``{family}_local`` (``-k PATH``)."
    )
    return entry


daisy_hubert_custom = _entry("hubert", "custom")
daisy_hubert_local = _entry("hubert", "local")
daisy_wav2vec2_custom = _entry("wav2vec2", "custom")
daisy_wav2vec2_local = _entry("wav2vec2", "local")
daisy_data2vec_custom = _entry("data2vec", "custom")
daisy_data2vec_local = _entry("data2vec", "local")
daisy_wavlm_custom = _entry("wavlm", "custom")
daisy_wavlm_local = _entry("wavlm", "local")


def daisy_hubert(
    ckpt: Union[None, str, Mapping[str, Any]] = None, model_config: Any = None, refresh: bool = False, **kwargs
) -> DaisyUpstream:
    """DAISY upstream; without ``ckpt`` the embedded tiny HuBERT shipped with the package."""
    if ckpt is None:
        if not DEFAULT_CHECKPOINT.is_file():
            raise FileNotFoundError(
                f"the embedded checkpoint {DEFAULT_CHECKPOINT} is missing from this install; "
                "rebuild it with 'daisy pretrain-tiny' or pass a checkpoint with -k"
            )
        ckpt = str(DEFAULT_CHECKPOINT)
    return daisy_hubert_custom(ckpt, model_config=model_config, refresh=refresh, **kwargs)
