"""Fixtures: tiny HuBERT-architecture checkpoints in s3prl's converted format (random weights).

The makers themselves live in the package (:mod:`daisy_upstream.testing`), as lhotse keeps
its own; tests import them from there, never from another test module.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import pytest

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.testing import make_random_checkpoint, make_random_family_checkpoint, sharpen_branches

warnings.filterwarnings("ignore", message=".*weight_norm.*")


@pytest.fixture
def write_checkpoint(tmp_path: Path) -> Callable[..., Path]:
    """``write_checkpoint(name="m.pt", sharpen=0.0, **make_random_checkpoint kwargs) -> path``."""

    def write(name: str = "model.pt", sharpen: float = 0.0, **kwargs) -> Path:
        state = make_random_checkpoint(**kwargs)
        if sharpen and "daisy" in state:
            sharpen_branches(state, sharpen)
        path = tmp_path / name
        atomic_torch_save(state, path)
        return path

    return write


@pytest.fixture
def tiny_ckpt(write_checkpoint) -> Path:
    return write_checkpoint(num_layers=4, layer_entropy=[2.9, 2.8, 2.7, 2.6], sharpen=4.0)


@pytest.fixture
def family_ckpt(tmp_path: Path) -> Callable[..., Path]:
    """``family_ckpt(family, name="model.pt", sharpen=0.0, **make_random_family_checkpoint kwargs) -> path``."""

    def write(family: str, name: str = "model.pt", sharpen: float = 0.0, **kwargs) -> Path:
        state = make_random_family_checkpoint(family, **kwargs)
        if sharpen and "daisy" in state:  # deeper branches sharper: exits spread over layers
            sharpen_branches(state, sharpen)
        path = tmp_path / name
        atomic_torch_save(state, path)
        return path

    return write
