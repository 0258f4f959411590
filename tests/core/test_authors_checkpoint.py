"""The authors' checkpoints as their code loads them, against s3prl's own HuBERT.

The fixtures follow the facts listed in :func:`daisy_upstream.testing.authors_layout` (no
``label_embs_concat``, heads ``final_proj.{i}``, ``cls_pred_position`` 'before-norm' /
'after-norm' / absent = 'before-norm'). The expected entropies and exits are computed here,
independently of daisy_upstream's code: the same backbone weights are loaded by s3prl's stock
``hubert_local`` (a plain converted file), forward hooks on s3prl's own modules capture each
layer's fc2 output and each layer's output, the heads are applied with ``F.linear``, and the
entropy and the first layer below tau are computed in the test.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List

import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from s3prl.upstream.hubert.convert import load_converted_model
from s3prl.upstream.hubert.hubconf import hubert_local

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.core.checkpoint import load_daisy_checkpoint
from daisy_upstream.integration.hubconf import daisy_hubert_local
from daisy_upstream.testing import ABSENT, authors_layout, make_random_checkpoint, waves

NUM_LAYERS = 3
ARCHS = {
    "base-like": dict(extractor_mode="default", layer_norm_first=False),
    "large-like": dict(extractor_mode="layer_norm", layer_norm_first=True, normalize=True),
}
POSITIONS = ["before-norm", "after-norm", ABSENT]
LENGTHS = (16000, 5000, 11111, 8000, 3200, 13000)


def write_pair(tmp_path: Path, position, arch: str = "base-like", **kwargs):
    """(authors' file, plain converted file of the same backbone, the authors' state)."""
    plain = make_random_checkpoint(num_layers=NUM_LAYERS, branches=False, **ARCHS[arch], **kwargs)
    authors = authors_layout(plain, position)
    atomic_torch_save(plain, tmp_path / "plain.pt")
    atomic_torch_save(authors, tmp_path / "authors.pt")
    return tmp_path / "authors.pt", tmp_path / "plain.pt", authors


def reference_entropies(plain: Path, authors: Dict, wavs: List[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``{"ffn": (N, L), "layer": (N, L)}``: each head's mean frame entropy (nats) on the
    fc2 output / the layer output of s3prl's stock model, every utterance run alone."""
    stock = hubert_local(ckpt=str(plain)).eval()
    captured: Dict[str, List[torch.Tensor]] = {"ffn": [], "layer": []}
    for layer in stock.model.encoder.layers:
        layer.fc2.register_forward_hook(lambda m, i, out: captured["ffn"].append(out))
        layer.register_forward_hook(lambda m, i, out: captured["layer"].append(out[0]))
    heads = [
        (authors["model_weight"][f"final_proj.{i}.weight"], authors["model_weight"][f"final_proj.{i}.bias"])
        for i in range(NUM_LAYERS)
    ]
    table = {"ffn": [], "layer": []}
    with torch.no_grad():
        for wav in wavs:
            for values in captured.values():
                values.clear()
            # s3prl pads the encoder input to an even frame count; its hidden_states are
            # trimmed to the utterance's frames, and so are the hooked tensors here
            frames = stock([wav])["hidden_states"][-1].size(1)
            for name, values in captured.items():
                assert len(values) == NUM_LAYERS
                row = []
                for (weight, bias), x in zip(heads, values):  # x: (T_padded, 1, D)
                    logits = F.linear(x[:frames, 0], weight, bias).double()
                    p = logits.softmax(-1)
                    row.append(float(-(p * logits.log_softmax(-1)).sum(-1).mean()))
                table[name].append(row)
    return {name: torch.tensor(rows, dtype=torch.float64) for name, rows in table.items()}


def first_below(entropies: torch.Tensor, tau: float) -> List[int]:
    """Exit layer per row: the first layer 1..L-1 whose entropy is < tau, else L."""
    exits = []
    for row in entropies.tolist():
        below = [k + 1 for k, e in enumerate(row[:-1]) if e < tau]
        exits.append(below[0] if below else len(row))
    return exits


def test_loads_without_label_embs_concat(tmp_path):
    path, plain, authors = write_pair(tmp_path, "before-norm")
    weights = authors["model_weight"]
    assert "label_embs_concat" not in weights and "final_proj.weight" not in weights
    # s3prl's stock loader (strict) cannot read it: the file is not s3prl's layout
    with pytest.raises(RuntimeError, match="label_embs_concat"):
        load_converted_model(str(path))
    loaded = load_daisy_checkpoint(path)
    assert loaded.layout == "authors" and loaded.cls_pred_position == "before-norm"
    assert loaded.branches.num_layers == NUM_LAYERS and loaded.branches.branch_input == "ffn_output"
    assert loaded.branches.num_classes == 24  # from the heads' weights (the fixture's final_dim was 16)
    assert torch.equal(loaded.branches[2].weight, weights["final_proj.2.weight"])
    assert loaded.model.label_embs_concat is None and loaded.model.final_proj is None
    assert "FFN output" in loaded.describe()
    # the backbone loaded exactly (strict, apart from what the authors' model lacks)
    reference, _ = load_converted_model(str(plain))
    ours = loaded.model.state_dict()
    for key, value in reference.state_dict().items():
        if key not in ("label_embs_concat", "final_proj.weight", "final_proj.bias"):
            assert torch.equal(ours[key], value), key


def test_reading_follows_cls_pred_position_and_bad_values_are_named(tmp_path):
    plain = make_random_checkpoint(num_layers=2, branches=False)
    for position, reads in (("after-norm", "layer_output"), (ABSENT, "ffn_output")):
        atomic_torch_save(authors_layout(plain, position), tmp_path / "a.pt")
        loaded = load_daisy_checkpoint(tmp_path / "a.pt")
        assert loaded.branches.branch_input == reads
        assert loaded.cls_pred_position == (position or "before-norm")  # the authors' class default
    atomic_torch_save(authors_layout(plain, "middle"), tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="cls_pred_position is 'middle'.*'before-norm' or 'after-norm'"):
        load_daisy_checkpoint(tmp_path / "bad.pt")
    # a head missing (L-1 heads for L layers) is named
    state = authors_layout(plain, "before-norm")
    state["model_weight"] = {k: v for k, v in state["model_weight"].items() if not k.startswith("final_proj.1.")}
    atomic_torch_save(state, tmp_path / "short.pt")
    with pytest.raises(ValueError, match="1 branches but the model has 2"):
        load_daisy_checkpoint(tmp_path / "short.pt")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("position", POSITIONS, ids=["before-norm", "after-norm", "absent"])
def test_exits_equal_heads_on_s3prl_hooks(tmp_path, arch, position):
    path, plain, authors = write_pair(tmp_path, position, arch)
    batch = waves(*LENGTHS, seed=7)
    reference = reference_entropies(plain, authors, batch)
    # 'after-norm' reads the layer output, 'before-norm' (also the default) the fc2 output
    expected = reference["layer" if position == "after-norm" else "ffn"]
    other = reference["ffn" if position == "after-norm" else "layer"]
    assert not torch.allclose(expected, other, atol=1e-2)  # the reading matters here
    # the tau (between two reference entropies) that spreads the utterances over most layers
    candidates = sorted(expected[:, :-1].flatten().tolist())
    tau = max(
        ((a + b) / 2 for a, b in zip(candidates, candidates[1:])), key=lambda t: len(set(first_below(expected, t)))
    )
    want = first_below(expected, tau)
    assert len(set(want)) >= 2, want

    upstream = daisy_hubert_local(str(path), model_config={"strategy": "none", "tau": tau}).eval()
    with torch.no_grad():
        out = upstream(batch)
    assert out["exit_layers"].tolist() == want
    for row, exit_layer in enumerate(want):  # every entropy the upstream checked
        checked = out["entropies"][row, : min(exit_layer, NUM_LAYERS - 1)].double()
        torch.testing.assert_close(checked, expected[row, : len(checked)], atol=1e-4, rtol=1e-4)
        assert torch.isnan(out["entropies"][row, exit_layer:]).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_hidden_states_equal_stock_hubert_local(tmp_path, arch):
    path, plain, _ = write_pair(tmp_path, "before-norm", arch)
    stock = hubert_local(ckpt=str(plain)).eval()
    full = daisy_hubert_local(str(path), model_config={"strategy": "full"}).eval()
    with torch.no_grad():
        for batch in (waves(16000, seed=1), waves(9000, 9000, seed=2)):
            expected, got = stock(batch)["hidden_states"], full(batch)["hidden_states"]
            assert len(got) == len(expected) == NUM_LAYERS + 1
            for ours, theirs in zip(got, expected):
                torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("position", ["before-norm", "after-norm"])
def test_calibrate_uses_the_heads_reading(tmp_path, arch, position, caplog):
    from daisy_upstream.audio.corpus import AudioCorpus
    from daisy_upstream.testing import write_wavs
    from daisy_upstream.training.calibration import calibrate_checkpoint

    path, plain, authors = write_pair(tmp_path, position, arch)
    write_wavs(tmp_path / "audio", [0.5, 0.8, 0.3, 1.1])
    corpus = AudioCorpus.from_source(tmp_path / "audio")
    with caplog.at_level(logging.INFO, logger="daisy_upstream.core.checkpoint"):
        result = calibrate_checkpoint(path, corpus, batch_seconds=1.0)
    assert f"cls_pred_position '{position}'" in caplog.text  # the output says which reading
    files = {item.key: item.path for item in corpus.items}
    wavs = [torch.from_numpy(sf.read(files[key], dtype="float32")[0]) for key in result.keys]
    reference = reference_entropies(plain, authors, wavs)
    # every layer, the last one included (it sets E_min / E_max and so tau)
    expected = reference["layer" if position == "after-norm" else "ffn"]
    torch.testing.assert_close(result.entropies, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("position", ["before-norm", "after-norm"])
def test_calibration_on_the_audio_at_hand_uses_the_heads_reading(tmp_path, position):
    """An authors' file carries no calibration, so ``daisy bench`` always calibrates on its own
    audio (load_upstream's ``calibrate_on``): on the tensor the heads read, as calibrate does.
    (bench once took hidden_states[k] for every checkpoint: for 'before-norm' that is the
    wrong tensor, and tau came out wrong.)"""
    from daisy_upstream.core.policy import MissingCalibration, compute_tau
    from daisy_upstream.evaluation.loading import load_upstream

    path, plain, authors = write_pair(tmp_path, position)
    wavs = waves(16000, 5000, 11111, seed=3)
    with pytest.raises(MissingCalibration, match="no calibration"):
        load_upstream(path, {"rho": 1.0})
    loaded = load_upstream(path, {"rho": 1.0}, calibrate_on=wavs)
    expected = reference_entropies(plain, authors, wavs)["layer" if position == "after-norm" else "ffn"].mean(0)
    torch.testing.assert_close(
        torch.tensor(loaded.calibration["layer_entropy"], dtype=torch.float64), expected, atol=1e-4, rtol=1e-4
    )
    assert loaded.upstream.tau == pytest.approx(compute_tau(expected.tolist(), 1.0), abs=1e-4)
    assert loaded.calibration["num_utterances"] == 3 and loaded.calibration["linear_fit"]["r2"] <= 1.0


def test_train_branches_replaces_the_heads_with_hidden_state_branches(tmp_path, caplog):
    """train-branches on the authors' file: targets from a teacher (the same backbone in
    s3prl's format, whose final_dim 16 differs from the authors' 24 classes), new branches
    that read hidden_states, and a written checkpoint that says so."""
    from daisy_upstream.audio.corpus import AudioCorpus
    from daisy_upstream.core.checkpoint import read_checkpoint
    from daisy_upstream.testing import write_wavs
    from daisy_upstream.training.stage1 import Stage1Config, train_branches

    path, plain, authors = write_pair(tmp_path, "before-norm")
    write_wavs(tmp_path / "audio", [0.5, 0.6, 0.7, 0.8, 0.55, 0.65])
    corpus = AudioCorpus.from_source(tmp_path / "audio")
    config = Stage1Config(
        lr=1e-2, batch_seconds=2.0, max_steps=2, heldout_fraction=0.3, eval_every=0, save_every=0, log_every=5
    )
    with pytest.raises(ValueError, match="authors' layout.*give as teacher"):
        train_branches(path, corpus, tmp_path / "x.pt", tmp_path / "w0", config, progress=False, tensorboard=False)
    with caplog.at_level(logging.INFO):
        train_branches(
            path, corpus, tmp_path / "out.pt", tmp_path / "w1", config, teacher=plain, progress=False, tensorboard=False
        )
    assert "cls_pred_position 'before-norm': its heads read layer k's FFN output" in caplog.text
    assert "branches trained here read hidden_states[k]" in caplog.text
    written = read_checkpoint(tmp_path / "out.pt")
    assert written["daisy"]["branch_input"] == "hidden_states"
    assert "cls_pred_position" not in written["model_cfg"] and written["model_cfg"]["final_dim"] == 16
    assert not any(k.startswith("final_proj.0") for k in written["model_weight"])
    teacher = read_checkpoint(plain)["model_weight"]
    loaded = load_daisy_checkpoint(tmp_path / "out.pt")
    assert loaded.layout == "daisy" and loaded.branches.branch_input == "hidden_states"
    assert loaded.branches.num_classes == 20  # the teacher's clusters, not the authors' 24 heads
    assert torch.equal(loaded.model.label_embs_concat, teacher["label_embs_concat"])
    assert torch.equal(loaded.model.encoder.layers[1].fc1.weight, teacher["encoder.layers.1.fc1.weight"])
