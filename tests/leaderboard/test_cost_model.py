"""The cost model: per-utterance MACs from the length equal torch's counter on the forward itself."""

from __future__ import annotations

import pytest
import torch

from daisy_upstream.core.checkpoint import load_daisy_checkpoint
from daisy_upstream.core.early_exit import EarlyExitModel
from daisy_upstream.core.policy import make_plan
from daisy_upstream.integration.hubconf import DEFAULT_CHECKPOINT, daisy_hubert_local
from daisy_upstream.leaderboard.cost_model import CostModel, measure_cost_model
from daisy_upstream.leaderboard.macs import count_macs
from daisy_upstream.leaderboard.profile import Clip, profile_upstream
from daisy_upstream.testing import waves


def _net(path) -> EarlyExitModel:
    loaded = load_daisy_checkpoint(path)
    return EarlyExitModel(loaded.model, loaded.branches, normalize_waveform=bool(loaded.task_cfg.normalize)).eval()


@pytest.mark.parametrize("family", ["hubert", "wav2vec2", "wavlm"])
def test_counts_at_unseen_lengths_match_the_counter(family_ckpt, family):
    net = _net(family_ckpt(family, num_layers=3))
    cost = measure_cost_model(net)
    for samples in (3217, 23456):  # neither is a probe length; odd frame counts
        (wav,) = waves(samples, seed=samples)
        for span, tau, exit_layer, checked in (
            ([1], None, 1, ()),
            ([2], None, 2, ()),
            ([3], None, 3, ()),
            ([1, 2, 3], -1.0, 3, (1, 2)),  # tau < 0: no row leaves, both branches checked
            ([1, 2, 3], 1e9, 1, (1,)),  # every row leaves at layer 1
        ):
            counted, _, out = count_macs(lambda: net([wav], make_plan(span, tau)))
            assert int(out.exit_layers[0]) == exit_layer
            assert cost.macs(samples, exit_layer, checked) == pytest.approx(counted, rel=1e-9, abs=1)
    assert cost.frames(23456) == net.frame_counts([23456])[0]


def test_the_profile_rows_are_the_cost_models_on_the_embedded_model():
    """What `daisy profile` counts for each clip (its DaisyUpstream at batch 1, exits and all)."""
    upstream = daisy_hubert_local(str(DEFAULT_CHECKPOINT), model_config={"strategy": "none", "tau": 0.45}).eval()
    cost = measure_cost_model(upstream.net)
    clips = [Clip(f"c{i}", w) for i, w in enumerate(waves(9000, 17000, 30011, 41000, seed=5))]
    profile = profile_upstream(upstream, clips)
    for clip, daisy, full in zip(
        clips, profile["models"]["daisy"]["utterances"], profile["models"]["full"]["utterances"]
    ):
        k = daisy["exit_layer"]
        checked = range(1, min(k, upstream.num_layers - 1) + 1)
        assert daisy["macs"] == pytest.approx(cost.macs(clip.wav.numel(), k, checked), rel=1e-9)
        assert full["macs"] == pytest.approx(cost.full(clip.wav.numel()), rel=1e-9)
    assert CostModel.from_dict(cost.to_dict()) == cost


def test_exit_layer_outside_the_model_is_refused():
    cost = measure_cost_model(_net(DEFAULT_CHECKPOINT))
    with pytest.raises(ValueError, match="outside 1..6"):
        cost.macs(16000, 7)
    assert torch.tensor(cost.layer_table(16000)[1]).std() < 1  # six equal layers cost the same
