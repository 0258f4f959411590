"""The tiny-HuBERT recipe: s3prl model classes, converted checkpoint format, a loss that
falls, and an exactly resumable run (tiny configs: seconds, not minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from daisy_upstream.factory.pretrain.checkpoint import load_converted, save_converted
from daisy_upstream.factory.pretrain.model import TINY_MODEL_CFG, TINY_TASK_CFG, build_model
from daisy_upstream.factory.pretrain.train import PretrainConfig, lr_at, masked_prediction_step, pretrain

torch.set_num_threads(1)  # tests share two cores with other work; one thread avoids spin-waits

SMALL_CFG = dict(
    TINY_MODEL_CFG,
    encoder_layers=2,
    encoder_embed_dim=32,
    encoder_ffn_embed_dim=64,
    encoder_attention_heads=2,
    conv_pos=16,
    conv_pos_groups=4,
    final_dim=16,
    conv_feature_layers="[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2",
)


def test_tiny_model_uses_s3prl_classes():
    from s3prl.upstream.hubert.hubert_model import HubertModel

    model = build_model(100)
    assert isinstance(model, HubertModel)
    assert model.label_embs_concat.shape == (104, TINY_MODEL_CFG["final_dim"])
    assert len(model.encoder.layers) == 6 and model.encoder.layer_norm_first
    assert 3.0e6 < sum(p.numel() for p in model.parameters()) < 3.5e6


def test_converted_checkpoint_loads_in_s3prl(tmp_path):
    from s3prl.upstream.hubert.hubconf import hubert_local  # what s3prl.hub exposes

    torch.manual_seed(0)
    model = build_model(12, SMALL_CFG)
    path = tmp_path / "tiny.pt"
    save_converted(model, SMALL_CFG, TINY_TASK_CFG, 12, path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["dictionaries_symbols"][0][:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert len(state["dictionaries_symbols"][0]) == 16
    loaded, task_cfg = load_converted(path)
    assert task_cfg.normalize is True
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    upstream = hubert_local(ckpt=str(path)).eval()
    with torch.no_grad():
        out = upstream([torch.randn(16000), torch.randn(12000)])
    hs = out["hidden_states"]
    assert len(hs) == SMALL_CFG["encoder_layers"] + 1 and hs[0].shape[-1] == 32
    assert abs(hs[0].shape[1] - 50) <= 1


def test_lr_schedule():
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 10, 1.0) == 0.0


def test_training_reduces_loss_on_a_batch():
    torch.manual_seed(0)
    model = build_model(8, SMALL_CFG).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    wav = torch.randn(2, 50 * 320 + 80)
    labels = torch.randint(4, 12, (2, 50))
    losses = []
    for step in range(25):
        np.random.seed(0)  # same masks every step
        torch.manual_seed(step)
        r = masked_prediction_step(model, wav, labels, 10.0)
        opt.zero_grad()
        r["loss"].backward()
        opt.step()
        losses.append(float(r["ce"]))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def _toy_corpus(root: Path) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    for split, n in (("train", 4), ("valid", 2)):
        for i in range(n):
            f0 = 100 + 40 * i + (7 if split == "valid" else 0)
            wav = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.2 * np.sin(3 * t)))
            wav += 0.02 * rng.standard_normal(t.size)
            (root / split).mkdir(parents=True, exist_ok=True)
            sf.write(root / split / f"u{i}.wav", wav.astype(np.float32), 16000, subtype="PCM_16")
    return root


def _cfg() -> PretrainConfig:
    return PretrainConfig(
        steps_iter1=3,
        steps_iter2=2,
        clusters_iter1=6,
        clusters_iter2=5,
        target_layer=1,
        batch_size=2,
        crop_frames=50,
        warmup_iter1=2,
        warmup_iter2=1,
        kmeans_frames=400,
        eval_every=1,
        eval_crops=2,
        exact_state=True,
        model_cfg=dict(SMALL_CFG),
    )


def test_resume_is_exact(tmp_path):
    corpus = _toy_corpus(tmp_path / "corpus")
    # uninterrupted: 3 steps of iteration 1, then 2 of iteration 2
    meta = pretrain(corpus, tmp_path / "a", tmp_path / "a.pt", _cfg(), threads=1)
    # interrupted twice (inside iteration 1 and right after it), resumed by the same call
    pretrain(corpus, tmp_path / "b", tmp_path / "b.pt", _cfg(), threads=1, max_steps=2)
    pretrain(corpus, tmp_path / "b", tmp_path / "b.pt", _cfg(), threads=1, max_steps=1)
    pretrain(corpus, tmp_path / "b", tmp_path / "b.pt", _cfg(), threads=1)
    a = torch.load(tmp_path / "a.pt", weights_only=True)["model_weight"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["model_weight"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert a["label_embs_concat"].shape[0] == 5 + 4  # iteration 2's clusters
    log_a = json.loads((tmp_path / "a" / "log.json").read_text())
    log_b = json.loads((tmp_path / "b" / "log.json").read_text())

    def strip(log):
        return [{k: v for k, v in e.items() if k not in ("time", "sec_per_step")} for e in log["log"]]

    assert strip(log_a) == strip(log_b)
    assert meta["majority_valid_iter2"] > 0
    # the checkpoint says how it was made; a finished run re-creates a deleted checkpoint
    assert torch.load(tmp_path / "a" / "state.pt", weights_only=True)["optimizer"] is None  # done: no optimizer
    made = torch.load(tmp_path / "a.pt", weights_only=True)["provenance"]
    assert made["phase"] == "done" and made["config"]["steps_iter2"] == 2 and made["step"] == 2
    (tmp_path / "a.pt").unlink()
    pretrain(corpus, tmp_path / "a", tmp_path / "a.pt", _cfg(), threads=1, command="daisy pretrain-tiny x")
    again = torch.load(tmp_path / "a.pt", weights_only=True)
    assert again["provenance"]["command"] == "daisy pretrain-tiny x"
    assert all(torch.equal(again["model_weight"][k], a[k]) for k in a)
    # the state is complete: a further call does nothing and the curves plot
    from daisy_upstream.factory.pretrain.plot import plot_curves

    assert plot_curves(tmp_path / "a" / "log.json", tmp_path / "c.png").stat().st_size > 1000


def test_finished_run_continues_with_denoising(tmp_path):
    corpus = _toy_corpus(tmp_path / "corpus")
    pretrain(corpus, tmp_path / "s", tmp_path / "m.pt", _cfg(), threads=1)
    before = torch.load(tmp_path / "m.pt", weights_only=True)["model_weight"]
    more = _cfg()
    more.steps_iter2, more.noise_prob = 4, 1.0
    pretrain(corpus, tmp_path / "s", tmp_path / "m.pt", more, threads=1)
    state = torch.load(tmp_path / "s" / "state.pt", weights_only=True)
    assert state["phase"] == "done" and state["step"] == 4 and state["config"]["noise_prob"] == 1.0
    assert [e["step"] for e in state["log"] if e["iteration"] == 2] == [1, 2, 3, 4]
    after = torch.load(tmp_path / "m.pt", weights_only=True)
    assert after["provenance"]["config"]["noise_prob"] == 1.0
    assert not torch.equal(after["model_weight"]["label_embs_concat"], before["label_embs_concat"])
    # resuming without naming the noise keeps the saved setting
    pretrain(corpus, tmp_path / "s", tmp_path / "m.pt", _cfg(), threads=1)
    assert torch.load(tmp_path / "s" / "state.pt", weights_only=True)["config"]["noise_prob"] == 1.0
