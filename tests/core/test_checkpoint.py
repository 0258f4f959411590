import pytest
import torch
from s3prl.upstream.hubert.convert import load_converted_model

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.core.checkpoint import load_daisy_checkpoint, read_checkpoint, with_branches
from daisy_upstream.integration.hubconf import daisy_hubert_local
from daisy_upstream.testing import authors_layout, make_random_checkpoint, waves


def test_daisy_checkpoint_round_trip_and_stock_loader(write_checkpoint):
    path = write_checkpoint(num_layers=3, layer_entropy=[3.0, 2.0, 1.0])
    loaded = load_daisy_checkpoint(path)
    assert loaded.layout == "daisy" and loaded.num_layers == 3
    assert loaded.calibration["layer_entropy"] == [3.0, 2.0, 1.0]
    raw = torch.load(path, weights_only=True)
    assert torch.equal(loaded.branches[1].weight, raw["daisy"]["branches"]["1.weight"])
    model, _ = load_converted_model(str(path))  # s3prl's own loader ignores the daisy entry
    assert torch.equal(model.encoder.layers[0].fc1.weight, loaded.model.encoder.layers[0].fc1.weight)


def test_authors_layout_heads_become_branches(tmp_path):
    # the authors' layout as their code loads it: see daisy_upstream.testing.authors_layout for the facts
    state = authors_layout(make_random_checkpoint(num_layers=3, branches=False), "before-norm")
    assert "label_embs_concat" not in state["model_weight"]
    atomic_torch_save(state, tmp_path / "authors.pt")
    loaded = load_daisy_checkpoint(tmp_path / "authors.pt")
    assert loaded.layout == "authors" and loaded.branches.num_layers == 3
    assert torch.equal(loaded.branches[2].weight, state["model_weight"]["final_proj.2.weight"])
    # ... and the upstream runs on it with an explicit tau
    upstream = daisy_hubert_local(str(tmp_path / "authors.pt"), model_config={"tau": 1.0}).eval()
    with torch.no_grad():
        assert upstream(waves(8000))["exit_layers"].shape == (1,)
    # written in our format, the heads keep their reading (recorded as daisy.branch_input)
    converted = with_branches(state, loaded.branches)
    assert not any(k.startswith("final_proj.0") for k in converted["model_weight"])
    assert converted["daisy"]["branch_input"] == "ffn_output"
    atomic_torch_save(converted, tmp_path / "converted.pt")
    again = load_daisy_checkpoint(tmp_path / "converted.pt")
    assert again.layout == "daisy" and again.branches.branch_input == "ffn_output"
    batch = waves(8000, 12000, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(
            daisy_hubert_local(str(tmp_path / "converted.pt"), model_config={"tau": 0.0}).eval()(batch)["entropies"],
            daisy_hubert_local(str(tmp_path / "authors.pt"), model_config={"tau": 0.0}).eval()(batch)["entropies"],
            equal_nan=True,
        )
    # our own branches (no branch_input recorded: written before it existed) read hidden states
    ours = make_random_checkpoint(num_layers=2)
    del ours["daisy"]["branch_input"]
    atomic_torch_save(ours, tmp_path / "ours.pt")
    assert load_daisy_checkpoint(tmp_path / "ours.pt").branches.branch_input == "hidden_states"
    ours["daisy"]["branch_input"] = "attention"
    atomic_torch_save(ours, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="branch_input is 'attention'"):
        load_daisy_checkpoint(tmp_path / "bad.pt")


def test_plain_checkpoint_only_without_branches_strategies(write_checkpoint):
    path = write_checkpoint(num_layers=2, branches=False)
    assert load_daisy_checkpoint(path).branches is None
    with pytest.raises(ValueError, match="Train them first with 'daisy train-branches'"):
        daisy_hubert_local(str(path), model_config={"strategy": "none", "tau": 1.0})
    full = daisy_hubert_local(str(path), model_config={"strategy": "full"}).eval()
    with torch.no_grad():
        assert full(waves(8000))["exit_layers"].tolist() == [2]


def test_fp16_storage_loads_as_fp32(tmp_path):
    state = make_random_checkpoint(num_layers=2)
    half = {
        **state,
        "model_weight": {k: v.half() if v.is_floating_point() else v for k, v in state["model_weight"].items()},
    }
    half["daisy"] = {**state["daisy"], "branches": {k: v.half() for k, v in state["daisy"]["branches"].items()}}
    atomic_torch_save(half, tmp_path / "half.pt")
    loaded = load_daisy_checkpoint(tmp_path / "half.pt")
    assert loaded.model.encoder.layers[0].fc1.weight.dtype == torch.float32
    assert loaded.branches[0].weight.dtype == torch.float32
    expected = state["model_weight"]["encoder.layers.0.fc1.weight"].half().float()
    assert torch.equal(loaded.model.encoder.layers[0].fc1.weight, expected)


def test_malformed_checkpoints_are_named(tmp_path):
    torch.save({"model_weight": {}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="missing \\['task_cfg', 'model_cfg', 'dictionaries_symbols'\\]"):
        read_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")
    state = make_random_checkpoint(num_layers=3)
    state["daisy"]["branches"] = {k: v for k, v in state["daisy"]["branches"].items() if not k.startswith("2.")}
    atomic_torch_save(state, tmp_path / "two_branches.pt")
    with pytest.raises(ValueError, match="2 branches but the model has 3"):
        load_daisy_checkpoint(tmp_path / "two_branches.pt")
    state = make_random_checkpoint(num_layers=2, layer_entropy=[1.0, 0.5, 0.2])
    atomic_torch_save(state, tmp_path / "bad_cal.pt")
    with pytest.raises(ValueError, match="layer_entropy must list 2 floats"):
        load_daisy_checkpoint(tmp_path / "bad_cal.pt")


def test_upstream_config_errors(tiny_ckpt, tmp_path):
    with pytest.raises(ValueError, match="unknown key"):
        daisy_hubert_local(str(tiny_ckpt), model_config={"strategyy": "none"})
    with pytest.raises(ValueError, match="fixed_layer=9 but the model has 4 layers"):
        daisy_hubert_local(str(tiny_ckpt), model_config={"strategy": "fixed", "fixed_layer": 9})
    cal = tmp_path / "cal.yaml"
    cal.write_text("layer_entropy: [1.0, 0.5]\n")
    with pytest.raises(ValueError, match="lists 2 layers but the model has 4"):
        daisy_hubert_local(str(tiny_ckpt), model_config={"calibration": str(cal)})
    with pytest.raises(ValueError, match="never downloads"):
        daisy_hubert_local("https://example.org/x.pt")
    with pytest.raises(ValueError, match="needs a checkpoint path"):
        daisy_hubert_local(None)
    threshold = daisy_hubert_local(str(tiny_ckpt), model_config={"strategy": "threshold"}).eval()
    with pytest.raises(ValueError, match="needs exit statistics"):
        threshold(waves(8000))


def test_calibration_file_overrides_checkpoint(tiny_ckpt, tmp_path):
    cal = tmp_path / "cal.yaml"
    cal.write_text("dataset: mine\nlayer_entropy: [4.0, 3.0, 2.0, 1.0]\n")
    up = daisy_hubert_local(str(tiny_ckpt), model_config={"rho": 0.5, "calibration": str(cal)})
    assert up.tau == pytest.approx(1.25)
    up = daisy_hubert_local(str(tiny_ckpt), model_config={"rho": 1.0})
    assert up.tau == pytest.approx((2.9 + 2.6) / 2)
