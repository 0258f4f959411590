"""DAISY through s3prl's newer API: ``s3prl.nn.S3PRLUpstream`` + ``s3prl.nn.Featurizer``.

The peer is the runner's :class:`DaisyFeaturizer` (its features are tested against an
independent per-utterance sum in tests/core/test_featurizer.py) and s3prl's own
``s3prl.nn.upstream.Featurizer`` (kept as ``Featurizer._daisy_stock``).
"""

from __future__ import annotations

import copy
import pickle

import pytest
import s3prl.nn
import s3prl.nn.upstream
import torch
import torch.nn.functional as F
from s3prl.nn import Featurizer, S3PRLUpstream
from torch.nn.utils.rnn import pad_sequence

from daisy_upstream.core.expert import read_exit_layers
from daisy_upstream.core.featurizers import DaisyFeaturizer
from daisy_upstream.integration.hubconf import daisy_hubert_local
from daisy_upstream.testing import waves

# 4-layer tiny checkpoint (tests/conftest.py tiny_ckpt); with these waves and tau 0.77 the
# branch entropies (layer 2: 0.99, 0.79, 0.75; layer 3: 0.64, 0.56, 0.22) make the three
# utterances exit at layers 3, 3 and 2: the case measured in issue 13
LENGTHS, SEED, TAU, EXITS = (16000, 12000, 9000), 0, 0.77, [3, 3, 2]
WEIGHTS = torch.tensor([0.7, 0.3, -0.2, 0.9, 1.4])
Stock = Featurizer._daisy_stock


def _batch(lengths=LENGTHS, seed=SEED):
    wavs = waves(*lengths, seed=seed)
    return wavs, pad_sequence(wavs, batch_first=True), torch.tensor([len(w) for w in wavs])


def _nn_pair(ckpt, normalize_upstream=False, **config):
    upstream = S3PRLUpstream(
        "daisy_hubert_local",
        path_or_url=str(ckpt),
        normalize=normalize_upstream,
        extra_conf={"strategy": "none", "tau": TAU, **config},
    )
    return upstream, Featurizer(upstream)


def _runner_features(ckpt, wavs, weights=WEIGHTS, layer_selection=None, **config):
    upstream = daisy_hubert_local(str(ckpt), model_config={"strategy": "none", "tau": TAU, **config})
    featurizer = DaisyFeaturizer(upstream, upstream_device="cpu", layer_selection=layer_selection)
    if layer_selection is None:
        featurizer.weights.data.copy_(weights)
    with torch.no_grad():
        out = upstream(wavs)
        return featurizer(wavs, out), out


def _assert_same_features(nn_out, nn_lens, runner_features, atol=1e-5):
    for row, (expected, n) in enumerate(zip(runner_features, nn_lens.tolist())):
        n = min(n, len(expected))  # S3PRLUpstream and the CNN may count the last frame apart
        torch.testing.assert_close(nn_out[row, :n], expected[:n], atol=atol, rtol=1e-5)


def test_the_names_s3prl_nn_gives_are_the_daisy_aware_featurizer():
    assert s3prl.nn.Featurizer is s3prl.nn.upstream.Featurizer is Featurizer
    assert Featurizer.__name__ == "DaisyNNFeaturizer" and issubclass(Featurizer, Stock)
    assert Stock.__module__ == "s3prl.nn.upstream"


def test_issue_case_exits_3_3_2_features_equal_the_runner_featurizer(tiny_ckpt):
    wavs, padded, lengths = _batch()
    upstream, featurizer = _nn_pair(tiny_ckpt)
    stock = Stock(upstream)
    with torch.no_grad():
        featurizer.weights.copy_(WEIGHTS)
        stock.weights.copy_(WEIGHTS)
        all_hs, all_lens = upstream(padded, lengths)
        assert read_exit_layers(all_hs).tolist() == EXITS
        features, feature_lens = featurizer(all_hs, all_lens)
        stock_features, _ = stock(all_hs, all_lens)
        runner, out = _runner_features(tiny_ckpt, wavs)
    assert out["exit_layers"].tolist() == EXITS
    _assert_same_features(features, feature_lens, runner)
    # s3prl's own featurizer is far from DAISY's features: over the zero-filled layers the
    # hub upstream returns (the issue's measurement), and over the copies S3PRLUpstream now holds
    with torch.no_grad():
        zero_filled, _ = stock(out["hidden_states"], [out["feature_lengths"]] * 5)
    for other in (zero_filled, stock_features):
        gap = max((other[i, : len(r)] - r[: other.size(1)]).abs().max().item() for i, r in enumerate(runner))
        assert gap > 0.2, gap


@pytest.mark.parametrize("normalize_upstream", [False, True])
def test_exit_layers_read_back_from_s3prl_upstream_outputs(tiny_ckpt, normalize_upstream):
    wavs, padded, lengths = _batch()
    upstream, _ = _nn_pair(tiny_ckpt, normalize_upstream=normalize_upstream)
    zeros = daisy_hubert_local(str(tiny_ckpt), model_config={"strategy": "none", "tau": TAU})
    with torch.no_grad():
        all_hs, _ = upstream(padded, lengths)
        plain = zeros(wavs)
    # inside S3PRLUpstream the layers past an exit are copies; the hub upstream keeps zeros
    assert upstream.upstream.config.layers_past_exit == "copy" and zeros.config.layers_past_exit == "zeros"
    assert read_exit_layers(all_hs).tolist() == EXITS
    assert read_exit_layers(plain["hidden_states"]).tolist() == EXITS
    # every full-depth row reads as depth 4
    with torch.no_grad(), upstream.upstream.span_override([4]):
        deep, _ = upstream(padded, lengths)
    assert read_exit_layers(deep).tolist() == [4, 4, 4]


def test_single_layer_selection_is_the_deepest_computed_layer_in_both_routes(tiny_ckpt):
    wavs, padded, lengths = _batch()
    upstream, _ = _nn_pair(tiny_ckpt)
    with torch.no_grad():
        all_hs, all_lens = upstream(padded, lengths)
        for k in range(5):
            selected, selected_lens = Featurizer(upstream, layer_selections=[k])(all_hs, all_lens)
            runner, out = _runner_features(tiny_ckpt, wavs, layer_selection=k)  # -l k
            for row, k_hat in enumerate(EXITS):
                n = min(int(selected_lens[row]), len(runner[row]))
                expected = out["hidden_states"][min(k, k_hat)][row, :n]  # the deepest computed layer <= k
                assert expected.abs().sum() > 0
                torch.testing.assert_close(selected[row, :n], expected, atol=0, rtol=0)
                torch.testing.assert_close(runner[row][:n], expected, atol=0, rtol=0)
                # consumers that index S3PRLUpstream's output directly (ESPnet's `layer`) read the same
                torch.testing.assert_close(all_hs[k][row, :n], expected, atol=0, rtol=0)
        normalized, _ = Featurizer(upstream, layer_selections=[4], normalize=True)(all_hs, all_lens)
        torch.testing.assert_close(normalized, F.layer_norm(all_hs[4], (32,)))


def test_several_selected_layers_mask_the_ones_an_utterance_did_not_run(tiny_ckpt):
    wavs, padded, lengths = _batch()
    upstream, _ = _nn_pair(tiny_ckpt)
    featurizer = Featurizer(upstream, layer_selections=[3, 4])
    with torch.no_grad():
        featurizer.weights.copy_(torch.tensor([0.2, 0.5]))
        all_hs, all_lens = upstream(padded, lengths)
        features, _ = featurizer(all_hs, all_lens)
    ln = [F.layer_norm(h, (32,)) for h in all_hs]
    for row, k_hat in enumerate(EXITS):
        if k_hat >= 3:  # layer 3 ran, layer 4 did not: all the weight on layer 3
            expected = ln[3][row]
        else:  # neither ran: its deepest computed layer at or below 4
            expected = ln[k_hat][row]
        torch.testing.assert_close(features[row], expected, atol=1e-5, rtol=1e-5)


def test_statistics_are_counted_saved_and_drive_the_evaluation_span(tiny_ckpt):
    _, padded, lengths = _batch()
    upstream, featurizer = _nn_pair(tiny_ckpt, strategy="threshold", span_threshold=0.4)
    assert set(featurizer.state_dict()) == {"weights", "exit_counts"}
    featurizer.train()
    assert upstream.upstream.current_span() == [1, 2, 3, 4]  # stage 2: open span while training
    with torch.no_grad():
        for _ in range(2):
            featurizer(*upstream(padded, lengths))
    assert featurizer.exit_counts.tolist() == [0, 2, 4, 0]
    featurizer.eval()
    assert upstream.upstream.current_span() == [3]  # layer 3 took 4/6 > 0.4 of the exits
    with torch.no_grad():
        all_hs, all_lens = upstream(padded, lengths)
        featurizer(all_hs, all_lens)
    assert read_exit_layers(all_hs).tolist() == [3, 3, 3]
    assert featurizer.exit_counts.tolist() == [0, 2, 4, 0]  # eval does not count
    # a fresh model restored from the state dict has the same span
    other, restored = _nn_pair(tiny_ckpt, strategy="threshold", span_threshold=0.4)
    restored.load_state_dict(featurizer.state_dict())
    restored.eval()
    assert other.upstream.current_span() == [3]


def test_two_daisy_upstreams_in_one_process_stay_apart(tiny_ckpt, write_checkpoint):
    other_ckpt = write_checkpoint("other.pt", num_layers=4, layer_entropy=[2.9, 2.8, 2.7, 2.6], sharpen=4.0, seed=3)
    wavs, padded, lengths = _batch()
    first, f1 = _nn_pair(tiny_ckpt)
    second, f2 = _nn_pair(other_ckpt, tau=1.2)
    f1.train(), f2.train()
    with torch.no_grad():
        f1.weights.copy_(WEIGHTS)
        f2.weights.copy_(WEIGHTS.flip(0))
        hs1, lens1 = first(padded, lengths)
        hs2, lens2 = second(padded, lengths)  # both forwards before either featurizer
        out2, lens2 = f2(hs2, lens2)
        out1, lens1 = f1(hs1, lens1)
        runner1, o1 = _runner_features(tiny_ckpt, wavs)
        runner2, o2 = _runner_features(other_ckpt, wavs, weights=WEIGHTS.flip(0), tau=1.2)
    assert o1["exit_layers"].tolist() != o2["exit_layers"].tolist()
    _assert_same_features(out1, lens1, runner1)
    _assert_same_features(out2, lens2, runner2)
    assert f1.exit_counts.tolist() == torch.bincount(o1["exit_layers"] - 1, minlength=4).tolist()
    assert f2.exit_counts.tolist() == torch.bincount(o2["exit_layers"] - 1, minlength=4).tolist()


def test_data_parallel_replicas_give_the_same_features_and_count_into_the_module(tiny_ckpt):
    # What DataParallel does on GPUs, done on CPU: the batch is cut in two, each replica
    # (made by Module._replicate_for_data_parallel, with its own copy of the buffers as
    # DataParallel's broadcast gives it) runs its rows, the outputs are concatenated.
    wavs, padded, lengths = _batch()
    upstream, featurizer = _nn_pair(tiny_ckpt)
    featurizer.train()
    with torch.no_grad():
        featurizer.weights.copy_(WEIGHTS)
    replicas = []
    for _ in range(2):
        replica = featurizer._replicate_for_data_parallel()
        replica._buffers = {k: v.clone() for k, v in replica._buffers.items()}
        replica.weights = featurizer.weights.detach().clone()  # torch's replicate sets them so
        replicas.append(replica)
    with torch.no_grad():
        all_hs, all_lens = upstream(padded, lengths)
        whole, _ = featurizer.eval()(all_hs, all_lens)
        featurizer.train()
        parts = [
            replicas[0]([h[:1] for h in all_hs], [n[:1] for n in all_lens])[0],
            replicas[1]([h[1:] for h in all_hs], [n[1:] for n in all_lens])[0],
        ]
    torch.testing.assert_close(torch.cat(parts), whole, atol=0, rtol=0)
    assert featurizer.exit_counts.tolist() == [0, 1, 2, 0]  # both replicas' rows, once each


def test_copies_count_into_themselves(tiny_ckpt):
    _, padded, lengths = _batch()
    upstream, featurizer = _nn_pair(tiny_ckpt)
    twin = copy.deepcopy(featurizer)
    pickled = pickle.loads(pickle.dumps(featurizer))
    with torch.no_grad():
        all_hs, all_lens = upstream(padded, lengths)
        twin.train()(all_hs, all_lens)
        pickled.train()(all_hs, all_lens)
    assert featurizer.exit_counts.sum() == 0
    assert twin.exit_counts.tolist() == pickled.exit_counts.tolist() == [0, 1, 2, 0]


def test_other_upstreams_get_s3prls_own_featurizer_bit_for_bit(write_checkpoint):
    ckpt = write_checkpoint(num_layers=3, branches=False)
    upstream = S3PRLUpstream("hubert_local", path_or_url=str(ckpt))
    _, padded, lengths = _batch()
    for kwargs in ({}, {"normalize": True}, {"layer_selections": [1, 3]}):
        ours, stock = Featurizer(upstream, **kwargs), Stock(upstream, **kwargs)
        assert not ours.is_daisy
        assert ours.state_dict().keys() == stock.state_dict().keys() == {"weights"}
        with torch.no_grad():
            ours.weights.copy_(torch.linspace(-1, 1, ours.weights.numel()))
            stock.weights.copy_(ours.weights)
            all_hs, all_lens = upstream(padded, lengths)
            (a, a_len), (b, b_len) = ours(all_hs, all_lens), stock(all_hs, all_lens)
        assert torch.equal(a, b) and torch.equal(a_len, b_len)
    # s3prl 0.4.18's own featurizer fails on a single selected layer (an assert in
    # _weighted_sum); for other upstreams ours does too, exactly as s3prl
    for featurizer in (Featurizer(upstream, layer_selections=[2]), Stock(upstream, layer_selections=[2])):
        with pytest.raises(AssertionError):
            featurizer(all_hs, all_lens)
