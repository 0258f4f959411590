"""``daisy convert``: the written file loads in s3prl's stock upstream with equal hidden states
(the transformers model's own, and daisy_upstream's on the source)."""

from __future__ import annotations

import pytest
import s3prl.hub as hub
import torch

from daisy_upstream.cli import main
from daisy_upstream.core.checkpoint import load_daisy_checkpoint
from daisy_upstream.integration import hubconf
from daisy_upstream.testing import make_random_family_checkpoint, waves
from daisy_upstream.testing.fairseq_files import write_fairseq_original
from daisy_upstream.testing.hf_folders import hf_hidden_states, make_hf_folder

HF = {"hubert-base": "hubert", "wav2vec2-xlsr": "wav2vec2", "wavlm-base-plus": "wavlm", "data2vec-base": "data2vec"}


@pytest.mark.parametrize("variant", HF)
def test_converted_transformers_folder_loads_in_the_stock_upstream(tmp_path, variant, capsys):
    family = HF[variant]
    model = make_hf_folder(variant, tmp_path / "src")
    assert main(["convert", str(tmp_path / "src"), "--out", str(tmp_path / "out.pt")]) == 0
    printed = capsys.readouterr().out
    assert f"-u {family}_local" in printed
    saved = torch.load(tmp_path / "out.pt", weights_only=True)
    assert saved["source"]["format"] == "transformers" and saved["source"]["path"] == str((tmp_path / "src").resolve())
    assert len(saved["source"]["sha256"]["model.safetensors"]) == 64
    stock = getattr(hub, f"{family}_local")(ckpt=str(tmp_path / "out.pt")).eval()
    ours = getattr(hubconf, f"daisy_{family}_local")(str(tmp_path / "out.pt"), model_config={"strategy": "full"})
    ours.eval()
    [wav] = waves(12000, seed=5)
    with torch.no_grad():
        expected = hf_hidden_states(model, wav.unsqueeze(0))
        for got in (stock([wav])["hidden_states"], ours([wav])["hidden_states"]):
            assert len(got) == len(expected)
            for a, b in zip(got, expected):
                torch.testing.assert_close(a, b, atol=2e-5, rtol=0)
    if family == "hubert":  # the zero-filled head is absent again for daisy_upstream
        assert saved["source"]["filled"] == ["final_proj.weight", "final_proj.bias", "label_embs_concat"]
        assert load_daisy_checkpoint(tmp_path / "out.pt").model.label_embs_concat is None


def test_converted_fairseq_original_and_refusals(tmp_path, capsys):
    converted = make_random_family_checkpoint("hubert", num_layers=2, branches=False)
    write_fairseq_original(converted, tmp_path / "hubert.pt")
    assert main(["convert", str(tmp_path / "hubert.pt"), "--out", str(tmp_path / "out.pt")]) == 0
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert out["source"]["filled"] == [] and out["dictionaries_symbols"] == converted["dictionaries_symbols"]
    for key, value in converted["model_weight"].items():
        assert torch.equal(out["model_weight"][key], value), key
    # an existing output is not replaced, a missing source is one line, both exit 2
    assert main(["convert", str(tmp_path / "hubert.pt"), "--out", str(tmp_path / "out.pt")]) == 2
    assert main(["convert", str(tmp_path / "nothing.pt"), "--out", str(tmp_path / "o2.pt")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "exists" in errors[0] and "does not exist" in errors[1]
    assert not (tmp_path / "o2.pt").exists()
