"""One padded CNN pass with row-wise GroupNorm statistics, and the host syncs of one forward."""

import pytest
import torch
import torch.nn.functional as F

from daisy_upstream.core import padded_cnn as padded_cnn_module
from daisy_upstream.core.padded_cnn import length_chunks, masked_group_norm, padded_cnn, supports_padded_cnn
from daisy_upstream.core.policy import make_plan
from daisy_upstream.integration.hubconf import daisy_hubert_local
from daisy_upstream.testing import assert_one_host_read_per_checked_layer, waves

# HuBERT Base's front end: extractor_mode "default", Fp32GroupNorm(512, 512) in conv block 0
# (s3prl wav2vec2/wav2vec2_model.py:2898-2904 and 2921)
BASE_LIKE = dict(extractor_mode="default", layer_norm_first=False)
LENGTHS = (16000, 4000, 11111, 800, 9000, 13000, 6400, 16000)


def test_masked_group_norm_equals_group_norm_on_the_valid_frames():
    norm = torch.nn.GroupNorm(4, 8, eps=1e-5)
    torch.nn.init.normal_(norm.weight), torch.nn.init.normal_(norm.bias)
    x = torch.randn(3, 8, 20)
    lengths = torch.tensor([20, 7, 13])
    with torch.no_grad():  # in place, a group at a time
        chunked = masked_group_norm(norm, x.clone(), lengths, chunk=100)
    for got in (masked_group_norm(norm, x, lengths), chunked):
        for b, n in enumerate(lengths.tolist()):
            expected = F.group_norm(x[b : b + 1, :, :n], 4, norm.weight, norm.bias, norm.eps)
            torch.testing.assert_close(got[b : b + 1, :, :n], expected, atol=1e-6, rtol=0)


def test_one_padded_pass_equals_the_cnn_run_row_by_row(write_checkpoint):
    ckpt = write_checkpoint(num_layers=2, layer_entropy=[3.0, 2.9], **BASE_LIKE)
    net = daisy_hubert_local(str(ckpt), model_config={"strategy": "full"}).eval().net
    net.cnn_pass = "padded"  # the default on CPU is one call per length
    extractor = net.model.feature_extractor
    assert supports_padded_cnn(extractor)
    assert any(type(m).__name__ == "Fp32GroupNorm" for m in extractor.modules())
    batch = waves(*LENGTHS, seed=5)
    counts = net.frame_counts(LENGTHS)
    with torch.no_grad():
        padded = padded_cnn(extractor, torch.nn.utils.rnn.pad_sequence(batch, batch_first=True), LENGTHS)
        reordered = padded_cnn(extractor, torch.nn.utils.rnn.pad_sequence(batch[::-1], batch_first=True), LENGTHS[::-1])
        features, lengths = net.cnn_features(batch)
        for b, (wav, n) in enumerate(zip(batch, counts)):
            alone = extractor(wav.unsqueeze(0))  # s3prl's own CNN on this row alone
            assert alone.size(-1) == n
            torch.testing.assert_close(padded[b : b + 1, :, :n], alone, atol=1e-5, rtol=0)
            # batch-mates and their order do not matter
            torch.testing.assert_close(reordered[len(batch) - 1 - b, :, :n], padded[b, :, :n], atol=1e-5, rtol=0)
            torch.testing.assert_close(
                features[b, :n], net.model.layer_norm(alone.transpose(1, 2))[0], atol=1e-5, rtol=0
            )
            assert not features[b, n:].any()
    assert lengths.tolist() == counts
    with torch.no_grad(), pytest.MonkeyPatch.context() as patch:  # passes of <= 40000 padded samples on CPU
        patch.setattr(padded_cnn_module, "CPU_CNN_SAMPLES", 40000)
        assert len(length_chunks(LENGTHS, 40000)) > 2
        chunked, _ = net.cnn_features(batch)
    torch.testing.assert_close(chunked, features, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "cnn_pass,calls", [("auto", len(set(LENGTHS))), ("per-length", len(set(LENGTHS))), ("padded", 1)]
)
def test_cnn_pass_on_cpu(write_checkpoint, cnn_pass, calls):
    """On CPU ``auto`` runs the CNN once per distinct length (the padded pass only adds work on
    the padding there); every pass gives the same features."""
    ckpt = write_checkpoint(num_layers=2, layer_entropy=[3.0, 2.9], **BASE_LIKE)
    net = daisy_hubert_local(str(ckpt), model_config={"strategy": "full"}).eval().net
    batch = waves(*LENGTHS, seed=5)
    with torch.no_grad():
        net.cnn_pass = "padded"
        reference, _ = net.cnn_features(batch)
        net.cnn_pass = cnn_pass
        seen = []
        with pytest.MonkeyPatch.context() as patch:
            original = net.family.cnn
            patch.setattr(net.family, "cnn", lambda *a, **k: seen.append(1) or original(*a, **k))
            features, _ = net.cnn_features(batch)
    assert len(seen) == calls
    torch.testing.assert_close(features, reference, atol=1e-5, rtol=0)


def test_plain_batch_of_equal_lengths_is_the_stock_cnn(write_checkpoint):
    ckpt = write_checkpoint(num_layers=2, layer_entropy=[3.0, 2.9], **BASE_LIKE)
    extractor = daisy_hubert_local(str(ckpt), model_config={"strategy": "full"}).eval().net.model.feature_extractor
    batch = torch.stack(waves(8000, 8000, seed=6))
    with torch.no_grad():
        torch.testing.assert_close(padded_cnn(extractor, batch, [8000, 8000]), extractor(batch), atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [3, 12])
def test_host_syncs_grow_with_checked_layers_not_with_the_batch(write_checkpoint, size):
    ckpt = write_checkpoint(num_layers=4, sharpen=4.0, layer_entropy=[3, 2, 1, 0.5], **BASE_LIKE)
    upstream = daisy_hubert_local(str(ckpt), model_config={"strategy": "none", "tau": 1.0}).eval()
    with torch.no_grad():
        assert_one_host_read_per_checked_layer(upstream, waves(*(LENGTHS * 2)[:size], seed=7))


def test_exit_states_gathered_as_rows_leave(tiny_ckpt):
    upstream = daisy_hubert_local(str(tiny_ckpt), model_config={"strategy": "none", "tau": 1.0}).eval()
    batch = waves(*LENGTHS, seed=8)
    with torch.no_grad():
        table = upstream.run(batch, make_plan(range(1, 5), 0.0)).entropies
        out = upstream.run(batch, make_plan(range(1, 5), float(table[:, 1].median())))
    assert out.exit_hidden is not None
    picked = torch.stack(out.hidden_states)[out.exit_layers, torch.arange(len(batch))]
    assert torch.equal(out.exit_states(), picked)
