"""Fixtures: tiny HuBERT-architecture checkpoints in s3prl's converted format (random weights)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import pytest
import torch

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.factory.random_hubert import make_random_checkpoint

warnings.filterwarnings("ignore", message=".*weight_norm.*")


@pytest.fixture
def write_checkpoint(tmp_path: Path) -> Callable[..., Path]:
    """``write_checkpoint(name="m.pt", **make_random_checkpoint kwargs) -> path``."""

    def write(name: str = "model.pt", sharpen: float = 0.0, **kwargs) -> Path:
        state = make_random_checkpoint(**kwargs)
        if sharpen and "daisy" in state:
            # deeper branches get sharper logits, so entropy falls with depth and
            # utterances reach the threshold at different layers
            for key, value in state["daisy"]["branches"].items():
                layer = int(key.split(".")[0]) + 1
                state["daisy"]["branches"][key] = value * (1.0 + sharpen * layer)
        path = tmp_path / name
        atomic_torch_save(state, path)
        return path

    return write


@pytest.fixture
def tiny_ckpt(write_checkpoint) -> Path:
    return write_checkpoint(num_layers=4, layer_entropy=[2.9, 2.8, 2.7, 2.6], sharpen=4.0)


def waves(*lengths: int, seed: int = 0) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(n, generator=generator) for n in lengths]
