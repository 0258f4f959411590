"""s3prl hub entries (``ckpt=``, ``model_config=``, ``refresh=`` calling convention)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from daisy_upstream.core.expert import DaisyUpstream

__all__ = ["DEFAULT_CHECKPOINT", "daisy_hubert", "daisy_hubert_custom", "daisy_hubert_local"]

#: the embedded tiny DAISY HuBERT shipped inside the package
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "resources" / "daisy_tiny_hubert.pt"


def daisy_hubert_custom(ckpt: Optional[str] = None, model_config: Any = None, refresh: bool = False, **kwargs) -> DaisyUpstream:
    """DAISY upstream from a local checkpoint path (no downloads: a URL is refused)."""
    if ckpt is None:
        raise ValueError("daisy_hubert_custom/daisy_hubert_local need a checkpoint path: pass -k PATH")
    ckpt = str(ckpt)
    if "://" in ckpt:
        raise ValueError(f"{ckpt!r}: daisy_upstream never downloads; fetch the file yourself and pass its local path")
    if not os.path.isfile(ckpt):
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist (-k/--upstream_ckpt)")
    return DaisyUpstream(ckpt, model_config=model_config, **kwargs)


def daisy_hubert_local(ckpt: Optional[str] = None, model_config: Any = None, refresh: bool = False, **kwargs) -> DaisyUpstream:
    """Same as :func:`daisy_hubert_custom` (s3prl's ``*_local`` naming)."""
    return daisy_hubert_custom(ckpt, model_config=model_config, refresh=refresh, **kwargs)


def daisy_hubert(ckpt: Optional[str] = None, model_config: Any = None, refresh: bool = False, **kwargs) -> DaisyUpstream:
    """DAISY upstream; without ``ckpt`` the embedded tiny HuBERT shipped with the package."""
    if ckpt is None:
        if not DEFAULT_CHECKPOINT.is_file():
            raise FileNotFoundError(
                f"the embedded checkpoint {DEFAULT_CHECKPOINT} is missing from this install; "
                "rebuild it with 'daisy pretrain-tiny' or pass a checkpoint with -k"
            )
        ckpt = str(DEFAULT_CHECKPOINT)
    return daisy_hubert_custom(ckpt, model_config=model_config, refresh=refresh, **kwargs)
