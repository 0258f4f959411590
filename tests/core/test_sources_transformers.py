"""transformers folders through the one early-exit loop, against transformers' own
``output_hidden_states`` (tiny random models of transformers' classes, saved with
``save_pretrained`` as safetensors: :mod:`daisy_upstream.testing.hf_folders`)."""

from __future__ import annotations

import pytest
import torch

from daisy_upstream.core.checkpoint import load_daisy_checkpoint, read_checkpoint
from daisy_upstream.integration import hubconf
from daisy_upstream.testing import waves
from daisy_upstream.testing.hf_folders import HF_VARIANTS, hf_hidden_states, make_hf_folder

FAMILY = {
    "HubertModel": "hubert",
    "Wav2Vec2Model": "wav2vec2",
    "Wav2Vec2ForPreTraining": "wav2vec2",
    "WavLMModel": "wavlm",
    "Data2VecAudioModel": "data2vec",
}


def _reference(model, wav):
    return hf_hidden_states(model, wav.unsqueeze(0))


@pytest.mark.parametrize("variant", HF_VARIANTS)
def test_full_depth_equals_transformers_hidden_states(tmp_path, variant):
    model = make_hf_folder(variant, tmp_path / variant)
    family = FAMILY[HF_VARIANTS[variant][0]]
    ours = getattr(hubconf, f"daisy_{family}_local")(str(tmp_path / variant), model_config={"strategy": "full"})
    ours.eval()
    with torch.no_grad():
        for n in (16000, 7001):
            [wav] = waves(n, seed=n)
            expected = _reference(model, wav)
            got = ours([wav])["hidden_states"]
            assert len(got) == len(expected) == 4
            for k, (a, b) in enumerate(zip(got, expected)):
                assert a.shape == b.shape, (k, a.shape, b.shape)
                torch.testing.assert_close(a, b, atol=2e-5, rtol=0, msg=lambda m, k=k: f"layer {k}: {m}")


def test_do_normalize_is_followed(tmp_path):
    import transformers

    # the layer-norm CNN with conv bias (XLS-R): the group-norm CNN of Base would hide the input's scale
    model = make_hf_folder("wav2vec2-xlsr", tmp_path / "m", do_normalize=True)
    assert load_daisy_checkpoint(tmp_path / "m").task_cfg.normalize is True
    ours = hubconf.daisy_wav2vec2_local(str(tmp_path / "m"), model_config={"strategy": "full"}).eval()
    extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(str(tmp_path / "m"))
    wav = waves(16000, seed=1)[0] * 4.0 + 0.3  # louder than unit variance, off zero: normalising matters
    inputs = extractor(wav.numpy(), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        expected = hf_hidden_states(model, inputs.input_values)
        got = ours([wav])["hidden_states"]
        unnormalised = hf_hidden_states(model, wav.unsqueeze(0))
    # the extractor divides by sqrt(var + 1e-7), s3prl by sqrt(var + 1e-5): close, not bitwise
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-3)
    assert (got[-1] - unnormalised[-1]).abs().max() > 1e-2  # normalising really changed the input


def test_pretraining_quantizer_is_kept_and_headless_models_take_kmeans(tmp_path):
    model = make_hf_folder("wav2vec2-pretraining", tmp_path / "pt")
    loaded = load_daisy_checkpoint(tmp_path / "pt")
    [wav] = waves(8000, seed=2)
    with torch.no_grad():
        features = model.wav2vec2.feature_extractor(wav.unsqueeze(0)).transpose(1, 2)
        # both quantizers read the CNN output after the projection's LayerNorm (unmasked_features)
        expected, _ = model.quantizer(model.wav2vec2.feature_projection.layer_norm(features))
        s3prl_features = loaded.model.layer_norm(loaded.model.feature_extractor(wav.unsqueeze(0)).transpose(1, 2))
        got = loaded.model.quantizer(s3prl_features, produce_targets=True)["x"]
        assert torch.equal(model.project_hid.weight, loaded.model.final_proj.weight)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    make_hf_folder("wav2vec2-base", tmp_path / "base")
    headless = load_daisy_checkpoint(tmp_path / "base")
    assert headless.model.quantizer is None and headless.model.final_proj is None
    from daisy_upstream.training.quantizer_targets import QuantizerTargets

    with pytest.raises(ValueError, match="--targets kmeans"):
        QuantizerTargets(headless.model)
    make_hf_folder("hubert-base", tmp_path / "hubert")
    hubert = read_checkpoint(tmp_path / "hubert")
    assert "label_embs_concat" in hubert["source"]["absent"]
    assert load_daisy_checkpoint(tmp_path / "hubert").model.label_embs_concat is None
    from daisy_upstream.training.targets import load_frozen_model

    with pytest.raises(ValueError, match="--targets kmeans"):
        load_frozen_model(tmp_path / "hubert")
    assert load_frozen_model(tmp_path / "hubert", need_head=False)[0].model.final_proj is None


def test_unmapped_classes_and_folders_are_refused_in_one_line(tmp_path):
    import transformers

    config = transformers.HubertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,),
        conv_kernel=(10,),
        conv_stride=(5,),
        vocab_size=8,
    )
    transformers.HubertForCTC(config).save_pretrained(str(tmp_path / "ctc"))
    with pytest.raises(ValueError, match="maps HubertModel, Wav2Vec2Model") as error:
        read_checkpoint(tmp_path / "ctc")
    assert "\n" not in str(error.value)
    make_hf_folder("hubert-base", tmp_path / "nopre")
    (tmp_path / "nopre" / "preprocessor_config.json").unlink()
    with pytest.raises(ValueError, match="do_normalize"):
        read_checkpoint(tmp_path / "nopre")
    make_hf_folder("hubert-base", tmp_path / "gelu", hidden_act="relu")
    with pytest.raises(ValueError, match="activations other than gelu"):
        read_checkpoint(tmp_path / "gelu")


def test_older_folders_pytorch_model_bin_with_weight_g_and_v(tmp_path):
    """Folders saved by transformers before torch's parametrized weight norm: ``pytorch_model.bin``
    with ``pos_conv_embed.conv.weight_g`` / ``weight_v`` (transformers renames them on load too)."""
    from safetensors.torch import load_file

    folder = tmp_path / "old"
    model = make_hf_folder("hubert-base", folder)
    weights = load_file(str(folder / "model.safetensors"))
    renamed = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v
        for k, v in weights.items()
    }
    assert "encoder.pos_conv_embed.conv.weight_g" in renamed
    (folder / "model.safetensors").unlink()
    torch.save(renamed, folder / "pytorch_model.bin")
    ours = hubconf.daisy_hubert_local(str(folder), model_config={"strategy": "full"}).eval()
    [wav] = waves(9000, seed=8)
    with torch.no_grad():
        for a, b in zip(ours([wav])["hidden_states"], _reference(model, wav)):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=0)


@pytest.mark.parametrize("variant", ["wav2vec2-base", "wavlm-large", "data2vec-base"])
def test_daisy_checkpoint_made_from_a_folder_keeps_the_models_states(tmp_path, variant):
    """Branches added to a folder's model (as train-branches writes them): the DAISY file keeps
    what the source lacks as absent, and at full depth still gives transformers' states."""
    from daisy_upstream.atomic import atomic_torch_save
    from daisy_upstream.testing.checkpoints import add_random_branches

    model = make_hf_folder(variant, tmp_path / "hf")
    family = FAMILY[HF_VARIANTS[variant][0]]
    state = add_random_branches(read_checkpoint(tmp_path / "hf"), 3, 32, 5, [2.0, 1.5, 1.0])
    atomic_torch_save(state, tmp_path / "daisy.pt")
    loaded = load_daisy_checkpoint(tmp_path / "daisy.pt", family)
    assert loaded.layout == "daisy" and loaded.calibration["layer_entropy"] == [2.0, 1.5, 1.0]
    ours = getattr(hubconf, f"daisy_{family}_local")(str(tmp_path / "daisy.pt"), model_config={"strategy": "full"})
    [wav] = waves(9000, seed=6)
    with torch.no_grad():
        for a, b in zip(ours.eval()([wav])["hidden_states"], _reference(model, wav)):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=0)
