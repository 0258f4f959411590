"""``daisy export-hidden`` of a non-HuBERT family: the written ``expert.py`` loads the model
family of ``model.pt`` (a tiny random WavLM of s3prl's classes, ``{cfg, model}`` + branches) and,
at full depth, gives s3prl's own ``wavlm_local`` hidden states on the source file."""

from __future__ import annotations

import importlib.util

import torch
from s3prl.upstream.wavlm.hubconf import wavlm_local

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.leaderboard.export_hidden import export_hidden
from daisy_upstream.testing import make_random_family_checkpoint, waves


def test_exported_wavlm_expert_is_a_wavlm(tmp_path):
    source = tmp_path / "wavlm.pt"
    atomic_torch_save(make_random_family_checkpoint("wavlm", num_layers=3, layer_entropy=[3.0, 2.9, 2.8]), source)
    out = tmp_path / "hidden"
    result = export_hidden(out, ckpt=source, overrides={"strategy": "full"})
    assert result["checks"]["ok"]
    spec = importlib.util.spec_from_file_location("exported_expert", out / "expert.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expert = module.UpstreamExpert(ckpt=str(out / "model.pt")).eval()
    assert expert.family.name == "wavlm"
    stock = wavlm_local(str(source)).eval()
    [wav] = waves(11000, seed=3)
    with torch.no_grad():
        got, expected = expert([wav])["hidden_states"], stock([wav])["hidden_states"]
    assert len(got) == len(expected) == 4
    for ours, theirs in zip(got, expected):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
