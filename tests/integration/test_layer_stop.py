"""``-l k`` stops computing at layer k on every route: s3prl's runner (``-l``), ``S3PRLUpstream`` +
``s3prl.nn.Featurizer(layer_selections=[k])``, ESPnet's ``S3prlFrontend(layer=k)``, and ``daisy profile -l k``.

The peer for the features is the same upstream without a featurizer (it runs every layer):
``h^min(k, k_hat)``; the peer for "stops" is torch's MAC counter and the layers left zero.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

from daisy_upstream.core.featurizers import DaisyFeaturizer
from daisy_upstream.integration.hubconf import daisy_hubert_local
from daisy_upstream.leaderboard.macs import count_macs
from daisy_upstream.leaderboard.profile import Clip, profile_upstream
from daisy_upstream.testing import waves

LENGTHS, SEED, TAU, EXITS = (16000, 12000, 9000), 0, 0.77, [3, 3, 2]  # the tiny checkpoint's exits at TAU
CONFIG = {"strategy": "none", "tau": TAU}


def _reference(ckpt, wavs):
    upstream = daisy_hubert_local(str(ckpt), model_config=CONFIG)
    with torch.no_grad():
        out = upstream(wavs)
    assert out["exit_layers"].tolist() == EXITS
    return out


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_runner_dash_l_stops_at_k(tiny_ckpt, layer):
    wavs = waves(*LENGTHS, seed=SEED)
    ref = _reference(tiny_ckpt, wavs)
    upstream = daisy_hubert_local(str(tiny_ckpt), model_config=CONFIG)
    featurizer = DaisyFeaturizer(upstream, upstream_device="cpu", layer_selection=layer).eval()
    macs, _, out = count_macs(lambda: upstream(wavs))
    assert out["exit_layers"].tolist() == [min(k, layer) for k in EXITS]
    assert all(not h.any() for h in out["hidden_states"][layer + 1 :])  # never computed
    features = featurizer(wavs, out)
    for row, k_hat in enumerate(EXITS):
        n = int(ref["feature_lengths"][row])
        torch.testing.assert_close(features[row], ref["hidden_states"][min(layer, k_hat)][row, :n], atol=0, rtol=0)
    full_macs, _, _ = count_macs(lambda: daisy_hubert_local(str(tiny_ckpt), model_config=CONFIG)(wavs))
    assert macs < full_macs


def test_runner_weighted_sum_and_last_layer_run_every_layer(tiny_ckpt):
    wavs = waves(*LENGTHS, seed=SEED)
    for kwargs in ({}, {"layer_selection": 4}, {"layer_selection": -1}):
        upstream = daisy_hubert_local(str(tiny_ckpt), model_config=CONFIG)
        DaisyFeaturizer(upstream, upstream_device="cpu", **kwargs)
        with torch.no_grad():
            assert upstream(wavs)["exit_layers"].tolist() == EXITS


@pytest.mark.parametrize("layer", [1, 2])
def test_s3prl_nn_layer_selections_stop_at_k(tiny_ckpt, layer):
    from s3prl.nn import Featurizer, S3PRLUpstream

    wavs = waves(*LENGTHS, seed=SEED)
    ref = _reference(tiny_ckpt, wavs)
    upstream = S3PRLUpstream("daisy_hubert_local", path_or_url=str(tiny_ckpt), extra_conf=CONFIG).eval()
    featurizer = Featurizer(upstream, layer_selections=[layer]).eval()
    padded, lengths = pad_sequence(wavs, batch_first=True), torch.tensor(LENGTHS)
    with torch.no_grad():
        all_hs, all_lens = upstream(padded, lengths)
        feature, _ = featurizer(all_hs, all_lens)
    assert upstream.upstream.current_plan().deepest == layer
    for row, k_hat in enumerate(EXITS):
        n = int(ref["feature_lengths"][row])
        torch.testing.assert_close(feature[row, :n], ref["hidden_states"][min(layer, k_hat)][row, :n], atol=0, rtol=0)
    for h in all_hs[layer + 1 :]:  # copies of the exit layer (layers_past_exit: copy), nothing computed
        torch.testing.assert_close(h, all_hs[layer], atol=0, rtol=0)


@pytest.mark.parametrize("layer", [1, 2])
def test_espnet_layer_k_stops_at_k(tiny_ckpt, layer):
    frontend_module = pytest.importorskip("espnet2.asr.frontend.s3prl")
    wavs = waves(*LENGTHS, seed=SEED)
    ref = _reference(tiny_ckpt, wavs)
    conf = {"upstream": "daisy_hubert_local", "path_or_url": str(tiny_ckpt), "extra_conf": CONFIG}
    frontend = frontend_module.S3prlFrontend(fs=16000, frontend_conf=conf, layer=layer).eval()
    padded, lengths = pad_sequence(wavs, batch_first=True), torch.tensor(LENGTHS)
    macs, _, (feats, feats_lens) = count_macs(lambda: frontend(padded, lengths))
    daisy = frontend.upstream.upstream
    assert daisy.current_plan().deepest == layer
    for row, k_hat in enumerate(EXITS):
        n = min(int(feats_lens[row]), int(ref["feature_lengths"][row]))
        torch.testing.assert_close(feats[row, :n], ref["hidden_states"][min(layer, k_hat)][row, :n], atol=0, rtol=0)
    daisy.read_up_to(None)
    full_macs, _, _ = count_macs(lambda: frontend(padded, lengths))
    assert macs < full_macs


def test_profile_shows_the_cut(tiny_ckpt):
    clips = [Clip(f"c{i}", w) for i, w in enumerate(waves(16000, 12000, 9000, 20000, seed=SEED))]
    upstream = daisy_hubert_local(str(tiny_ckpt), model_config=CONFIG).eval()
    plain = profile_upstream(upstream, clips)
    cut = profile_upstream(upstream, clips, layer=1)
    assert [u["exit_layer"] for u in cut["models"]["daisy"]["utterances"]] == [1] * 4
    assert cut["models"]["daisy"]["macs"]["all"] < plain["models"]["daisy"]["macs"]["all"]
    assert cut["models"]["full"] == plain["models"]["full"]  # the full model still runs every layer
    assert cut["layer"] == 1 and upstream.current_plan().deepest == upstream.num_layers  # lifted afterwards
    with pytest.raises(ValueError, match="outside 1..4"):
        upstream.read_up_to(5)
