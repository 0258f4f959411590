"""Every family through s3prl's newer API (``s3prl.nn.S3PRLUpstream``, as ESPnet's frontend
builds it): the DAISY upstream of a family against s3prl's own upstream of that family, on
tiny random models of s3prl's classes (:func:`daisy_upstream.testing.make_random_family_checkpoint`)."""

from __future__ import annotations

import pytest
import torch
from s3prl.nn import Featurizer, S3PRLUpstream
from torch.nn.utils.rnn import pad_sequence

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.testing import make_random_family_checkpoint, waves


@pytest.mark.parametrize("family", ["wav2vec2", "data2vec", "wavlm"])
def test_s3prl_upstream_of_each_family(tmp_path, family):
    path = tmp_path / f"{family}.pt"
    atomic_torch_save(make_random_family_checkpoint(family, num_layers=3, layer_entropy=[3.0, 2.9, 2.8]), path)
    stock = S3PRLUpstream(f"{family}_local", path_or_url=str(path)).eval()
    ours = S3PRLUpstream(f"daisy_{family}_local", path_or_url=str(path), extra_conf={"strategy": "full"}).eval()
    [wav] = waves(12345, seed=1)
    wav_len = torch.tensor([len(wav)])
    with torch.no_grad():
        expected, expected_lens = stock(wav.unsqueeze(0), wav_len)
        got, got_lens = ours(wav.unsqueeze(0), wav_len)
    assert len(got) == len(expected) == 4
    assert got_lens[0].tolist() == expected_lens[0].tolist()
    for ours_h, stock_h in zip(got, expected):
        torch.testing.assert_close(ours_h, stock_h, atol=1e-5, rtol=0)
    # with exits: the featurizer sums only the layers each utterance ran
    early = S3PRLUpstream(f"daisy_{family}_local", path_or_url=str(path), extra_conf={"strategy": "none", "rho": 1.0})
    featurizer = Featurizer(early)
    wavs = waves(16000, 7000, seed=2)
    with torch.no_grad():
        hs, hs_len = early.eval()(pad_sequence(wavs, batch_first=True), torch.tensor([len(w) for w in wavs]))
        features, lengths = featurizer(hs, hs_len)
    assert features.shape[0] == 2 and torch.isfinite(features).all()
