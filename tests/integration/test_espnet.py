"""ESPnet's real ``S3prlFrontend`` (espnet2/asr/frontend/s3prl.py) over a DAISY upstream.

ESPnet builds ``S3PRLUpstream(frontend_conf["upstream"], path_or_url=..., extra_conf=...)``
and ``Featurizer(upstream, layer_selections=[layer] or None)`` from ``s3prl.nn``; its forward
returns ``all_hs[layer]`` for ``layer >= 0``, the featurizer over all layers with
``multilayer_feature: true``, else the featurizer over the last layer alone. The peer is the
runner's :class:`DaisyFeaturizer` with the same weights.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

try:
    from espnet2.asr.frontend.s3prl import S3prlFrontend
except ImportError as error:  # pragma: no cover - depends on the optional extra
    pytest.skip(
        f"ESPnet is not importable ({error}); install it with "
        "\"pip install --no-deps espnet==202511 && pip install '.[espnet]'\" (docs/s3prl_nn.md)",
        allow_module_level=True,
    )

from daisy_upstream.core.featurizers import DaisyFeaturizer
from daisy_upstream.integration.hubconf import daisy_hubert_local
from daisy_upstream.testing import waves

# the issue's case on the tiny checkpoint (see tests/integration/test_s3prl_nn.py)
LENGTHS, SEED, TAU, EXITS = (16000, 12000, 9000), 0, 0.77, [3, 3, 2]
WEIGHTS = torch.tensor([0.7, 0.3, -0.2, 0.9, 1.4])


def _frontend(ckpt, **kwargs) -> S3prlFrontend:
    conf = {"upstream": "daisy_hubert_local", "path_or_url": str(ckpt), "extra_conf": {"strategy": "none", "tau": TAU}}
    return S3prlFrontend(fs=16000, frontend_conf=conf, **kwargs)


def _runner(ckpt, wavs, **kwargs):
    upstream = daisy_hubert_local(str(ckpt), model_config={"strategy": "none", "tau": TAU})
    featurizer = DaisyFeaturizer(upstream, upstream_device="cpu", **kwargs)
    if featurizer.weighted_sum_mode:
        featurizer.weights.data.copy_(WEIGHTS)
    with torch.no_grad():
        out = upstream(wavs)
        return featurizer(wavs, out), out


def _compare(feats, feats_lens, expected):
    for row, (want, n) in enumerate(zip(expected, feats_lens.tolist())):
        n = min(n, len(want))
        torch.testing.assert_close(feats[row, :n], want[:n], atol=1e-5, rtol=1e-5)


def test_multilayer_frontend_gives_daisys_features_and_counts_exits(tiny_ckpt):
    wavs = waves(*LENGTHS, seed=SEED)
    frontend = _frontend(tiny_ckpt, multilayer_feature=True)
    assert type(frontend.featurizer).__name__ == "DaisyNNFeaturizer"
    assert "featurizer.exit_counts" in frontend.state_dict()  # saved with ESPnet's model
    with torch.no_grad():
        frontend.featurizer.weights.copy_(WEIGHTS)
        frontend.train()
        feats, feats_lens = frontend(pad_sequence(wavs, batch_first=True), torch.tensor(LENGTHS))
    expected, out = _runner(tiny_ckpt, wavs)
    assert out["exit_layers"].tolist() == EXITS
    _compare(feats, feats_lens, expected)
    assert frontend.featurizer.exit_counts.tolist() == [0, 1, 2, 0]


@pytest.mark.parametrize("layer", [1, 2, 3, 4])
def test_layer_k_is_the_deepest_computed_layer_at_or_below_k(tiny_ckpt, layer):
    wavs = waves(*LENGTHS, seed=SEED)
    frontend = _frontend(tiny_ckpt, layer=layer)
    with torch.no_grad():
        feats, feats_lens = frontend(pad_sequence(wavs, batch_first=True), torch.tensor(LENGTHS))
    expected, out = _runner(tiny_ckpt, wavs, layer_selection=layer)  # the runner's -l k
    _compare(feats, feats_lens, expected)
    for row, k_hat in enumerate(EXITS):
        n = min(int(feats_lens[row]), int(out["feature_lengths"][row]))
        torch.testing.assert_close(feats[row, :n], out["hidden_states"][min(layer, k_hat)][row, :n], atol=0, rtol=0)


def test_default_last_layer_is_each_utterances_exit_layer(tiny_ckpt):
    wavs = waves(*LENGTHS, seed=SEED)
    frontend = _frontend(tiny_ckpt)  # multilayer_feature false, layer -1: ESPnet's default
    with torch.no_grad():
        feats, feats_lens = frontend(pad_sequence(wavs, batch_first=True), torch.tensor(LENGTHS))
    expected, out = _runner(tiny_ckpt, wavs, feature_selection="last_hidden_state")
    _compare(feats, feats_lens, expected)
    assert out["exit_layers"].tolist() == EXITS
