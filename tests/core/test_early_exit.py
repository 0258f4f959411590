"""The early-exit forward against s3prl's stock ``hubert_local``, and its batch behaviour."""

import pytest
import torch
from s3prl.upstream.hubert.hubconf import hubert_local

from daisy_upstream.core.policy import make_plan
from daisy_upstream.integration.hubconf import daisy_hubert_local
from daisy_upstream.testing import waves

ARCHS = {
    "base-like": dict(extractor_mode="default", layer_norm_first=False),
    "large-like": dict(extractor_mode="layer_norm", layer_norm_first=True, normalize=True),
}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("config", [{"strategy": "full"}, {"strategy": "none", "rho": 0.0}])
def test_equals_stock_hubert_local_when_nothing_exits(write_checkpoint, arch, config):
    ckpt = write_checkpoint(num_layers=3, layer_entropy=[3.0, 2.9, 2.8], **ARCHS[arch])
    stock = hubert_local(ckpt=str(ckpt)).eval()
    ours = daisy_hubert_local(str(ckpt), model_config=config).eval()
    batches = [waves(16000), waves(7777, seed=1), waves(12000, 12000, 12000, seed=2)]
    with torch.no_grad():
        for batch in batches:
            expected = stock(batch)["hidden_states"]
            got = ours(batch)
            assert len(got["hidden_states"]) == len(expected) == 4
            for ours_h, stock_h in zip(got["hidden_states"], expected):
                assert ours_h.shape == stock_h.shape
                torch.testing.assert_close(ours_h, stock_h, atol=1e-5, rtol=0)
            assert got["exit_layers"].tolist() == [3] * len(batch)


def _entropy_table(upstream, batch):
    """Entropies at every layer with no exit (tau = 0)."""
    plan = make_plan(range(1, upstream.num_layers + 1), tau=0.0)
    return upstream.run(batch, plan).entropies


@pytest.mark.parametrize("arch", ARCHS)
def test_batch_invariance_with_mixed_lengths_and_exits(write_checkpoint, arch):
    ckpt = write_checkpoint(num_layers=4, sharpen=4.0, layer_entropy=[3, 2, 1, 0.5], **ARCHS[arch])
    upstream = daisy_hubert_local(str(ckpt), model_config={"strategy": "none", "tau": 1.0}).eval()
    lengths = (16000, 4000, 11111, 16000, 800, 9000, 13000, 6400)
    batch = waves(*lengths, seed=3)
    with torch.no_grad():
        table = _entropy_table(upstream, batch)[:, :-1]
        # pick the threshold that spreads the utterances over the most exit layers
        best = max(
            table.flatten().tolist(),
            key=lambda tau: len(set(upstream.run(batch, make_plan(range(1, 5), tau + 1e-6)).exit_layers.tolist())),
        )
        plan = make_plan(range(1, 5), best + 1e-6)
        together = upstream.run(batch, plan)
        assert len(set(together.exit_layers.tolist())) >= 3, together.exit_layers
        for order in (list(range(8)), [7, 0, 5, 2, 6, 1, 4, 3]):
            shuffled = upstream.run([batch[i] for i in order], plan)
            for pos, i in enumerate(order):
                alone = upstream.run([batch[i]], plan)
                n = int(alone.lengths[0])
                assert int(shuffled.exit_layers[pos]) == int(together.exit_layers[i]) == int(alone.exit_layers[0])
                assert int(shuffled.lengths[pos]) == n
                for k in range(5):
                    torch.testing.assert_close(
                        shuffled.hidden_states[k][pos, :n], alone.hidden_states[k][0], atol=1e-5, rtol=0
                    )
                    # padding frames and layers past the exit hold zeros
                    assert not shuffled.hidden_states[k][pos, n:].any()
                    if k > int(alone.exit_layers[0]):
                        assert not shuffled.hidden_states[k][pos].any()


def test_stock_padded_cnn_reproduces_stock_batches(write_checkpoint):
    ckpt = write_checkpoint(num_layers=2, layer_entropy=[3.0, 2.9])
    stock = hubert_local(ckpt=str(ckpt)).eval()
    batch = waves(16000, 9000, seed=4)
    with torch.no_grad():
        expected = stock(batch)["hidden_states"]
        padded = daisy_hubert_local(str(ckpt), model_config={"strategy": "full", "stock_padded_cnn": True}).eval()
        own = daisy_hubert_local(str(ckpt), model_config={"strategy": "full"}).eval()
        got_padded, got_own = padded(batch), own(batch)
    n = int(got_padded["feature_lengths"][1])
    # the stock GroupNorm sees the padding: only the padded option reproduces it
    torch.testing.assert_close(got_padded["hidden_states"][2][1, :n], expected[2][1, :n], atol=1e-5, rtol=0)
    assert not torch.allclose(got_own["hidden_states"][2][1, :n], expected[2][1, :n], atol=1e-3)


def test_exited_rows_leave_the_computation(tiny_ckpt):
    upstream = daisy_hubert_local(str(tiny_ckpt), model_config={"strategy": "none", "tau": 1.0}).eval()
    calls = []  # (layer, batch rows, frames) per layer call
    for k, layer in enumerate(upstream.net.model.encoder.layers, start=1):
        layer.register_forward_hook(lambda m, args, out, k=k: calls.append((k, args[0].size(1), args[0].size(0))))
    batch = waves(16000, 3200, 16000, 8000, seed=5)
    with torch.no_grad():
        table = _entropy_table(upstream, batch)
        calls.clear()
        tau = float(table[:, 0].median()) + 1e-6  # about half exit at layer 1
        out = upstream.run(batch, make_plan(range(1, 5), tau))
    exits = out.exit_layers.tolist()
    assert 1 in exits and max(exits) > 1
    rows_per_layer = {k: rows for k, rows, _ in calls}
    for k in rows_per_layer:
        assert rows_per_layer[k] == sum(e >= k for e in exits)
    assert set(rows_per_layer) == set(range(1, max(exits) + 1))
    # padding no remaining row needs is trimmed
    lengths = out.lengths.tolist()
    for k, rows, frames in calls:
        assert frames == max(n for n, e in zip(lengths, exits) if e >= k)


def test_branches_evaluated_only_where_exits_are_allowed(tiny_ckpt):
    upstream = daisy_hubert_local(str(tiny_ckpt), model_config={"strategy": "none", "tau": 0.0}).eval()
    seen = []
    branches = upstream.net.branches
    check = branches.check
    branches.check = lambda k, *args: seen.append(k) or check(k, *args)  # the loop's one way to a branch
    with torch.no_grad():
        upstream.run(waves(8000), make_plan([2, 3], tau=0.0))
        assert seen == [2]
        seen.clear()
        upstream.set_exit_statistics(None)
        upstream.run(waves(8000), make_plan([4], None))
        assert seen == []


def test_fixed_and_deepest_of_span(tiny_ckpt):
    fixed = daisy_hubert_local(str(tiny_ckpt), model_config={"strategy": "fixed", "fixed_layer": 2}).eval()
    with torch.no_grad():
        out = fixed(waves(8000, 12000))
    assert out["exit_layers"].tolist() == [2, 2]
    assert not out["hidden_states"][3].any() and out["hidden_states"][2].abs().sum() > 0
    torch.testing.assert_close(out["last_hidden_state"], out["hidden_states"][2])
    # nothing fires (tau = 0): every row exits at the deepest layer of the span
    upstream = daisy_hubert_local(str(tiny_ckpt), model_config={"strategy": "none", "tau": 0.0}).eval()
    with torch.no_grad():
        assert upstream.run(waves(8000), make_plan([1, 2, 3], 0.0)).exit_layers.tolist() == [3]


@pytest.mark.parametrize(
    "batch, message",
    [
        ([], "non-empty list"),
        ([torch.zeros(0)], "has 0 samples"),
        ([torch.zeros(399)], "at least 400"),
        ([torch.zeros(2, 8000)], "1-D mono"),
        ([torch.zeros(8000, dtype=torch.int16)], "dtype"),
        ([torch.full((8000,), float("nan"))], "NaN"),
        (torch.zeros(2, 8000), "non-empty list"),
    ],
)
def test_bad_waveforms_are_clear_errors(tiny_ckpt, batch, message):
    upstream = daisy_hubert_local(str(tiny_ckpt), model_config={"strategy": "none"}).eval()
    with pytest.raises(ValueError, match=message):
        upstream(batch)
