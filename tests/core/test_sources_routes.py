"""One loader behind every -k: a transformers folder and a fairseq original through the four
steps a user takes (train-branches, calibrate, the hub entry, S3PRLUpstream / ESPnet's route),
with the DAISY checkpoint made from them still equal to the source model at full depth."""

from __future__ import annotations

import pytest
import torch
import yaml
from s3prl.nn import S3PRLUpstream

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.cli import main
from daisy_upstream.core.checkpoint import load_daisy_checkpoint
from daisy_upstream.integration import hubconf
from daisy_upstream.testing import make_random_family_checkpoint, waves, write_wavs
from daisy_upstream.testing.fairseq_files import write_fairseq_original
from daisy_upstream.testing.hf_folders import hf_hidden_states, make_hf_folder

SECONDS = [0.5, 0.6, 0.7, 0.8, 0.55, 0.65, 0.75, 0.85]


def _four_steps(tmp_path, ckpt, family, targets, capsys):
    audio = tmp_path / "audio"
    write_wavs(audio, SECONDS)
    extra = ["--targets", "kmeans", "--kmeans-layer", "2", "--clusters", "4"] if targets == "kmeans" else []
    argv = ["train-branches", "-k", str(ckpt), "--audio", str(audio), "--out", str(tmp_path / "d.pt")]
    assert main([*argv, *extra, "--max-steps", "3", "--batch-seconds", "1", "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    calib = tmp_path / "calib.yaml"
    argv = ["calibrate", "-k", str(tmp_path / "d.pt"), "--audio", str(audio), "--out", str(calib)]
    assert main([*argv, "--no-progress", "--batch-seconds", "1"]) == 0
    assert len(yaml.safe_load(calib.read_text())["layer_entropy"]) == 3
    upstream = S3PRLUpstream(
        f"daisy_{family}_local", path_or_url=str(tmp_path / "d.pt"), extra_conf={"calibration": str(calib), "rho": 1.0}
    ).eval()
    wavs = waves(8000, 12000, seed=3)
    with torch.no_grad():
        hs, hs_len = upstream(torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), torch.tensor([8000, 12000]))
    assert len(hs) == 4 and hs[0].shape[0] == 2
    return load_daisy_checkpoint(tmp_path / "d.pt")


def test_transformers_folder_through_the_four_steps(tmp_path, capsys):
    model = make_hf_folder("hubert-base", tmp_path / "hf")
    loaded = _four_steps(tmp_path, tmp_path / "hf", "hubert", "kmeans", capsys)
    assert loaded.layout == "daisy" and loaded.branches.num_classes == 4
    assert loaded.model.label_embs_concat is None  # the transformers model has no head, the DAISY file neither
    [wav] = waves(16000, seed=9)
    with torch.no_grad():
        expected = hf_hidden_states(model, wav.unsqueeze(0))
        for ckpt in (tmp_path / "hf", tmp_path / "d.pt"):
            for got in (
                hubconf.daisy_hubert_local(str(ckpt), model_config={"strategy": "full"}).eval()([wav])["hidden_states"],
                S3PRLUpstream("daisy_hubert_local", path_or_url=str(ckpt), extra_conf={"strategy": "full"}).eval()(
                    wav.unsqueeze(0), torch.tensor([16000])
                )[0],
            ):
                assert len(got) == len(expected)
                for a, b in zip(got, expected):  # S3PRLUpstream pads to samples // 320 frames: 50, not 49
                    torch.testing.assert_close(a[:, : b.shape[1]], b, atol=2e-5, rtol=0)


def test_pretraining_wav2vec2_folder_trains_on_its_quantizer(tmp_path, capsys):
    make_hf_folder("wav2vec2-pretraining", tmp_path / "hf")
    loaded = _four_steps(tmp_path, tmp_path / "hf", "wav2vec2", "model", capsys)
    assert loaded.branches.groups == 2 and loaded.branches.num_classes == 8  # 2 codebooks x 8 codes


@pytest.mark.parametrize("family", ["hubert", "wav2vec2"])
def test_fairseq_original_through_the_four_steps(tmp_path, family, capsys):
    converted = make_random_family_checkpoint(family, num_layers=3, branches=False)
    write_fairseq_original(converted, tmp_path / "original.pt")
    atomic_torch_save(converted, tmp_path / "converted.pt")
    loaded = _four_steps(tmp_path, tmp_path / "original.pt", family, "model", capsys)
    reference = load_daisy_checkpoint(tmp_path / "converted.pt").model
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


@pytest.mark.parametrize("layer", [1, 3])
def test_espnet_frontend_takes_a_transformers_folder(tmp_path, layer):
    """ESPnet's real ``S3prlFrontend`` with ``-k`` a transformers folder: ``layer=k`` is the
    transformers model's ``hidden_states[k]``."""
    frontend_module = pytest.importorskip("espnet2.asr.frontend.s3prl")
    model = make_hf_folder("wav2vec2-xlsr", tmp_path / "hf")
    conf = {"upstream": "daisy_wav2vec2_local", "path_or_url": str(tmp_path / "hf"), "extra_conf": {"strategy": "full"}}
    frontend = frontend_module.S3prlFrontend(fs=16000, frontend_conf=conf, layer=layer).eval()
    [wav] = waves(16000, seed=4)
    with torch.no_grad():
        feats, lengths = frontend(wav.unsqueeze(0), torch.tensor([16000]))
        expected = hf_hidden_states(model, wav.unsqueeze(0))[layer]
    n = expected.shape[1]
    torch.testing.assert_close(feats[:, :n], expected, atol=2e-5, rtol=0)
