import pytest
import torch
import torch.nn.functional as F
from s3prl.upstream.hubert.hubconf import hubert_local
from s3prl.upstream.interfaces import Featurizer

from daisy_upstream.core.featurizers import DaisyFeaturizer
from daisy_upstream.integration.hubconf import daisy_hubert_local
from daisy_upstream.testing import waves


def _pick_tau(upstream, batch):
    """A tau that makes the batch exit at two or more different layers."""
    from daisy_upstream.core.policy import make_plan

    table = upstream.run(batch, make_plan(range(1, 5), 0.0)).entropies[:, :-1]
    for tau in sorted(table.flatten().tolist()):
        exits = upstream.run(batch, make_plan(range(1, 5), tau + 1e-6)).exit_layers
        if len(set(exits.tolist())) >= 2:
            return tau + 1e-6
    raise AssertionError("no tau mixes exit layers")


@pytest.fixture
def daisy_pair(tiny_ckpt):
    upstream = daisy_hubert_local(str(tiny_ckpt), model_config={"strategy": "threshold", "tau": 1.0})
    featurizer = DaisyFeaturizer(upstream, upstream_device="cpu")
    return upstream, featurizer


def test_masked_weighted_sum_over_layers_that_ran(daisy_pair):
    upstream, featurizer = daisy_pair
    batch = waves(16000, 9000, 12000, 4000, seed=7)
    with torch.no_grad():
        upstream.tau = _pick_tau(upstream, batch)
        featurizer.weights.copy_(torch.tensor([5.0, 0.3, -0.2, 0.9, 1.4]))
        featurizer.train()
        out = upstream(batch)
        features = featurizer(batch, out)
    exits = out["exit_layers"].tolist()
    assert len(set(exits)) >= 2
    for i, (feature, k_hat) in enumerate(zip(features, exits)):
        n = int(out["feature_lengths"][i])
        assert feature.shape == (n, featurizer.output_dim)
        w = torch.softmax(featurizer.weights[1 : k_hat + 1], dim=0)  # h^0 excluded, masked layers gone
        expected = sum(w[j] * F.layer_norm(out["hidden_states"][j + 1][i, :n], (32,)) for j in range(k_hat))
        torch.testing.assert_close(feature, expected, atol=1e-5, rtol=1e-5)
    weights = featurizer.layer_weights(out["exit_layers"])
    for row, k_hat in zip(weights, exits):
        assert row[0] == 0 and (row[k_hat + 1 :] == 0).all()
        assert row.sum().item() == pytest.approx(1.0)


def test_featurize_layer0_option(tiny_ckpt):
    upstream = daisy_hubert_local(str(tiny_ckpt), model_config={"strategy": "full", "featurize_layer0": True})
    featurizer = DaisyFeaturizer(upstream, upstream_device="cpu")
    weights = featurizer.layer_weights(torch.tensor([4]))
    assert (weights > 0).all()


def test_statistics_counted_in_training_only_and_restored(daisy_pair, tiny_ckpt):
    upstream, featurizer = daisy_pair
    batch = waves(16000, 9000, 12000, 4000, seed=7)
    with torch.no_grad():
        upstream.tau = _pick_tau(upstream, batch)
        featurizer.train()
        out = upstream(batch)
        featurizer(batch, out)
        featurizer(batch, out)
        expected = torch.bincount(out["exit_layers"] - 1, minlength=4) * 2
        assert torch.equal(featurizer.exit_counts, expected)
        featurizer.eval()
        featurizer(batch, upstream(batch))
        assert torch.equal(featurizer.exit_counts, expected)
    # the statistics travel in the state dict (as in s3prl's runner checkpoints)
    state = featurizer.state_dict()
    assert set(state) == {"weights", "exit_counts"}
    other_up = daisy_hubert_local(str(tiny_ckpt), model_config={"strategy": "threshold", "tau": upstream.tau})
    restored = DaisyFeaturizer(other_up, upstream_device="cpu")
    restored.load_state_dict(state, strict=True)
    assert torch.equal(restored.exit_counts, expected)
    restored.eval()
    shares = expected.float() / expected.sum()
    assert other_up.current_span() == [k + 1 for k in range(4) if shares[k] > 0.15]


def test_span_follows_statistics_in_eval_and_is_open_in_training(daisy_pair):
    upstream, featurizer = daisy_pair
    featurizer.train()
    assert upstream.current_span() == [1, 2, 3, 4]
    featurizer.eval()
    with pytest.raises(ValueError, match="needs exit statistics"):
        upstream.current_span()  # nothing was counted: an error, never a silent full run
    featurizer.exit_counts.copy_(torch.tensor([0, 80, 20, 0]))
    assert upstream.current_span() == [2, 3]
    featurizer.exit_counts.copy_(torch.tensor([0, 90, 10, 0]))
    assert upstream.current_span() == [2]


def test_other_upstreams_get_the_stock_featurizer_behaviour(write_checkpoint):
    ckpt = write_checkpoint(num_layers=3, branches=False)
    torch.manual_seed(0)
    ours = DaisyFeaturizer(hubert_local(ckpt=str(ckpt)), upstream_device="cpu", normalize=True)
    stock = Featurizer(hubert_local(ckpt=str(ckpt)), upstream_device="cpu", normalize=True)
    assert set(ours.state_dict()) == set(stock.state_dict()) == {"weights"}
    assert (ours.output_dim, ours.downsample_rate) == (stock.output_dim, stock.downsample_rate)
    with torch.no_grad():
        for f in (ours, stock):
            f.weights.copy_(torch.tensor([0.1, 0.5, -0.3, 0.2]))
        upstream = hubert_local(ckpt=str(ckpt)).eval()
        batch = waves(16000, 10000, seed=8)
        out = upstream(batch)
        for a, b in zip(ours(batch, out), stock(batch, out)):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("normalize", [False, True])
def test_layers_past_exit_copy_makes_a_stock_weighted_sum_give_the_exit_layer_the_missing_weights(tiny_ckpt, normalize):
    # a consumer that cannot be patched runs s3prl's stock runner Featurizer (a plain softmax
    # weighted sum over all L + 1 layers) on the upstream's hidden_states
    config = {"strategy": "none", "tau": 1.0, "layers_past_exit": "copy"}
    upstream = daisy_hubert_local(str(tiny_ckpt), model_config=config)
    zeros = daisy_hubert_local(str(tiny_ckpt), model_config={**config, "layers_past_exit": "zeros"})
    stock = Featurizer(upstream, upstream_device="cpu", normalize=normalize)
    batch = waves(16000, 9000, 12000, 4000, seed=7)
    with torch.no_grad():
        upstream.tau = zeros.tau = _pick_tau(upstream, batch)
        out, out_zeros = upstream(batch), zeros(batch)
        stock.weights.copy_(torch.tensor([0.4, 0.3, -0.2, 0.9, 1.4]))
        features = stock(batch, out)
    exits = out["exit_layers"].tolist()
    assert exits == out_zeros["exit_layers"].tolist() and len(set(exits)) >= 2 and min(exits) < 4
    w = torch.softmax(stock.weights, dim=0)
    for i, (feature, k_hat) in enumerate(zip(features, exits)):
        n = len(feature)  # the stock rule round(samples / 320), one frame past the valid ones here and there
        h = [out_zeros["hidden_states"][k][i, :n] for k in range(5)]  # zeros past k_hat
        if normalize:
            h = [F.layer_norm(x, (32,)) for x in h]
        # layers k_hat+1..L did not run: their weights go to the exit layer
        expected = sum(w[k] * h[k] for k in range(k_hat + 1)) + w[k_hat + 1 :].sum() * h[k_hat]
        torch.testing.assert_close(feature, expected, atol=1e-5, rtol=1e-5)
        for k in range(5):  # layers that ran are untouched, the others hold the exit state
            source = out_zeros["hidden_states"][min(k, k_hat)][i]
            assert torch.equal(out["hidden_states"][k][i], source)
