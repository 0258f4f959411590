"""Every family through the one early-exit loop, against s3prl's own stock upstream.

Fixtures: random tiny models built from s3prl's own classes by
:func:`daisy_upstream.testing.make_random_family_checkpoint`, each file in the
format its stock upstream loads (wav2vec2/convert.py:29-38, data2vec/convert.py:29-45 with
``_ema``, wavlm/expert.py:37-40). The variants cover what FAMILY_NOTES.md (s3prl 0.4.18)
lists as differing between families: pre-LN (``layer_norm_first``: final LN on the last
state only), the layer-norm CNN, ``normalize``, data2vec's ``pos_conv_depth`` > 1 and WavLM's
gated relative position bias (computed by layer 0, passed on).
"""

from __future__ import annotations

import pytest
import s3prl.hub as hub
import torch

from daisy_upstream.integration import hubconf
from daisy_upstream.testing import FAMILY_VARIANTS as VARIANTS
from daisy_upstream.testing import (
    assert_exits_independent_of_batch_mates,
    make_random_family_checkpoint,
    varied_waves,
    waves,
)


def _pair(path, family, config):
    stock = getattr(hub, f"{family}_local")(ckpt=str(path)).eval()
    ours = getattr(hubconf, f"daisy_{family}_local")(str(path), model_config=config).eval()
    return stock, ours


@pytest.mark.parametrize("variant", VARIANTS)
def test_full_depth_equals_stock_upstream(family_ckpt, variant):
    family, kwargs = VARIANTS[variant]
    path = family_ckpt(family, num_layers=3, layer_entropy=[3.0, 2.9, 2.8], **kwargs)
    for config in ({"strategy": "full"}, {"strategy": "none", "rho": 0.0}):  # branches checked, none fires
        stock, ours = _pair(path, family, config)
        with torch.no_grad():
            for i, n in enumerate((16000, 7777, 4321)):
                [wav] = waves(n, seed=i)
                expected = stock([wav])["hidden_states"]
                got = ours([wav])
                assert len(got["hidden_states"]) == len(expected) == 4
                for k, (ours_h, stock_h) in enumerate(zip(got["hidden_states"], expected)):
                    assert ours_h.shape == stock_h.shape, (k, ours_h.shape, stock_h.shape)
                    torch.testing.assert_close(ours_h, stock_h, atol=1e-5, rtol=0)
                assert got["exit_layers"].tolist() == [3]


@pytest.mark.parametrize("variant", ["wav2vec2-base", "data2vec-base", "wavlm-base-plus", "hubert-base"])
def test_stock_padded_cnn_follows_each_familys_padding_rule(family_ckpt, variant):
    """Batched like the stock upstream: wav2vec2/data2vec count frames by the conv formula,
    HuBERT/WavLM by whole sample chunks (one more valid frame for 8001 samples)."""
    family, kwargs = VARIANTS[variant]
    path = family_ckpt(family, num_layers=2, branches=False, **kwargs)
    stock, ours = _pair(path, family, {"strategy": "full", "stock_padded_cnn": True})
    batch = waves(16000, 8001, seed=4)
    with torch.no_grad():
        expected = stock(batch)["hidden_states"]
        got = ours(batch)
    n = int(got["feature_lengths"][1])
    assert n == (25 if family in ("hubert", "wavlm") else 24)
    for k in range(3):
        torch.testing.assert_close(got["hidden_states"][k][0], expected[k][0], atol=1e-5, rtol=0)
        torch.testing.assert_close(got["hidden_states"][k][1, :n], expected[k][1, :n], atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["wav2vec2-base", "data2vec-base", "wavlm-base-plus", "wavlm-large"])
def test_exits_independent_of_batch_mates(family_ckpt, variant):
    family, kwargs = VARIANTS[variant]
    path = family_ckpt(family, num_layers=4, sharpen=4.0, layer_entropy=[3, 2, 1, 0.5], **kwargs)
    upstream = getattr(hubconf, f"daisy_{family}_local")(
        str(path), model_config={"strategy": "none", "tau": 1.0}
    ).eval()
    lengths = (16000, 4000, 11111, 16000, 800, 9000, 13000, 6400)
    with torch.no_grad():
        assert_exits_independent_of_batch_mates(upstream, varied_waves(*lengths), order=[7, 0, 5, 2, 6, 1, 4, 3])


@pytest.mark.parametrize("family", ["wav2vec2", "data2vec", "wavlm"])
def test_plain_checkpoint_runs_full_and_fixed_only(family_ckpt, family):
    path = family_ckpt(family, num_layers=2, branches=False)
    entry = getattr(hubconf, f"daisy_{family}_local")
    with torch.no_grad():
        assert entry(str(path), model_config={"strategy": "fixed", "fixed_layer": 1}).eval()(waves(4000))[
            "exit_layers"
        ].tolist() == [1]
    with pytest.raises(ValueError, match=f"plain {family} checkpoint without exit branches"):
        entry(str(path), model_config={"strategy": "none", "rho": 1.0})


def test_hidden_states_function_stops_at_the_asked_layer(family_ckpt):
    path = family_ckpt("wavlm", num_layers=3, branches=False)
    stock, ours = _pair(path, "wavlm", {"strategy": "full"})
    calls = []
    for layer in ours.net.model.encoder.layers:
        layer.register_forward_hook(lambda *a: calls.append(1))
    batch = waves(16000, 6000, seed=7)
    with torch.no_grad():
        states, lengths = ours.net.hidden_states(batch, deepest=2)
        assert len(states) == 3 and len(calls) == 2
        for b, wav in enumerate(batch):
            expected = stock([wav])["hidden_states"]
            n = int(lengths[b])
            for k in range(3):
                torch.testing.assert_close(states[k][b, :n], expected[k][0], atol=1e-5, rtol=0)
            assert not states[2][b, n:].any()


def test_refusals_name_the_problem(family_ckpt):
    wavlm = family_ckpt("wavlm", name="wavlm.pt", num_layers=2, branches=False)
    with pytest.raises(ValueError, match="is a wavlm checkpoint.*use -u daisy_wavlm_local"):
        hubconf.daisy_wav2vec2_local(str(wavlm))
    with pytest.raises(ValueError, match="is a wavlm checkpoint.*use -u daisy_wavlm_local"):
        hubconf.daisy_hubert_local(str(wavlm))
    conformer = family_ckpt("wav2vec2", name="conformer.pt", num_layers=2, branches=False, layer_type="conformer")
    with pytest.raises(ValueError, match="conformer layers .* are not supported"):
        hubconf.daisy_wav2vec2_local(str(conformer))


def test_data2vec_told_apart_from_wav2vec2_without_its_name():
    from daisy_upstream.core.families import family_of_state

    state = make_random_family_checkpoint("data2vec", branches=False)
    assert family_of_state(state).name == "data2vec"
    del state["model_cfg"]["_name"]
    assert family_of_state(state).name == "data2vec"  # _ema
    del state["model_weight"]["_ema"]
    assert family_of_state(state).name == "data2vec"  # data2vec-only config keys
    w2v = make_random_family_checkpoint("wav2vec2", branches=False)
    del w2v["model_cfg"]["_name"]
    assert family_of_state(w2v).name == "wav2vec2"
    with pytest.raises(ValueError, match=r"no checkpoint format daisy_upstream reads: missing \['cfg'\] for wavlm"):
        family_of_state({"model": {}})


def test_every_family_is_in_the_hub():
    for family in ("hubert", "wav2vec2", "data2vec", "wavlm"):
        for twin in ("local", "custom"):
            assert callable(getattr(hub, f"daisy_{family}_{twin}"))
