"""Stage-1 fixtures: a folder of ten short generated utterances and fast test settings."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from daisy_upstream.testing import write_wavs
from daisy_upstream.training.stage1 import Stage1Config

SECONDS = [0.5, 0.6, 0.7, 0.8, 0.55, 0.65, 0.75, 0.85, 0.6, 0.7]


@pytest.fixture
def audio_dir(tmp_path) -> Path:
    write_wavs(tmp_path / "audio", SECONDS)
    return tmp_path / "audio"


@pytest.fixture
def fast_config() -> Callable[..., Stage1Config]:
    """``fast_config(**overrides)``: a large lr so a few dozen steps show learning on tiny data."""

    def make(**overrides) -> Stage1Config:
        values = dict(
            lr=1e-2, batch_seconds=2.0, max_steps=12, heldout_fraction=0.2, eval_every=0, save_every=0, log_every=5
        )
        values.update(overrides)
        return Stage1Config(**values)

    return make
