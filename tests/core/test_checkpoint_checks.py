"""Checkpoints are validated when loaded (issue 18): NaN / inf weights, wrongly shaped model or
branch weights and malformed entries are one ValueError naming the key and what was expected,
whichever route loads the file (the reader, the s3prl upstream, the CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.cli import main
from daisy_upstream.core.checkpoint import load_daisy_checkpoint
from daisy_upstream.integration.hubconf import daisy_hubert_local
from daisy_upstream.testing import make_random_checkpoint

HELDOUT = Path(__file__).resolve().parents[1] / "data" / "heldout_clips"


def _damaged(tmp_path, damage):
    state = make_random_checkpoint(num_layers=2, layer_entropy=[2.9, 2.8])
    damage(state)
    path = tmp_path / "damaged.pt"
    atomic_torch_save(state, path)
    return path


def _set(entry, key, value):
    def damage(state):
        target = state["daisy"]["branches"] if entry == "branches" else state["model_weight"]
        target[key] = value(target[key]) if callable(value) else value

    return damage


DAMAGES = {
    "nan branch": (
        _set("branches", "1.weight", lambda w: w.index_fill(1, torch.tensor([0]), float("nan"))),
        r"daisy.branches\['1.weight'\] holds \d+ NaN/inf",
    ),
    "inf bias": (
        _set("branches", "0.bias", lambda b: b.index_fill(0, torch.tensor([3]), float("inf"))),
        r"daisy.branches\['0.bias'\] holds 1 NaN/inf",
    ),
    "nan model weight": (
        _set("model", "encoder.layers.1.fc1.weight", lambda w: w * float("nan")),
        r"model_weight\['encoder.layers.1.fc1.weight'\] holds \d+ NaN/inf",
    ),
    "model weight shape": (
        _set("model", "encoder.layers.0.fc1.weight", lambda w: w[:, :-1]),
        r"model_weight\['encoder.layers.0.fc1.weight'\] has shape \(64, 31\); the config gives \(64, 32\)",
    ),
    "branch shape": (
        _set("branches", "1.weight", lambda w: w[:-2]),
        r"daisy.branches\['1.weight'\] has shape \(18, 32\); expected \(20, 32\)",
    ),
    "not a tensor": (
        _set("model", "encoder.layers.0.fc1.bias", [0.0] * 64),
        r"model_weight\['encoder.layers.0.fc1.bias'\] must be a tensor, got list",
    ),
    "config not a mapping": (lambda s: s.__setitem__("model_cfg", [1, 2]), r"model_cfg must be a mapping"),
    "nan calibration": (
        lambda s: s["daisy"]["calibration"]["layer_entropy"].__setitem__(1, float("nan")),
        r"daisy.calibration.layer_entropy\[1\] is nan; expected a finite number",
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_checkpoint_is_one_line_naming_the_key(damage, tmp_path):
    make, message = DAMAGES[damage]
    path = _damaged(tmp_path, make)
    with pytest.raises(ValueError, match=message) as caught:
        load_daisy_checkpoint(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    with pytest.raises(ValueError, match=message):  # the s3prl upstream route
        daisy_hubert_local(str(path))


@pytest.mark.parametrize("command", ["profile", "export-hidden", "calibrate"])
def test_cli_refuses_nan_branches_with_exit_2(command, tmp_path, capsys, monkeypatch):
    path = _damaged(tmp_path, DAMAGES["nan branch"][0])
    monkeypatch.chdir(tmp_path)
    args = {
        "profile": ["--out", "p"],
        "export-hidden": ["--out", "e"],
        "calibrate": ["--audio", str(HELDOUT), "--out", "c.yaml"],
    }[command]
    before = sorted(tmp_path.iterdir())
    assert main([command, "-k", str(path), *args]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "daisy.branches['1.weight'] holds" in err[0], err
    assert sorted(tmp_path.iterdir()) == before


# every family's file as its stock s3prl loader reads it (daisy_upstream/testing/families.py:
# wav2vec2 and data2vec {task_cfg, model_cfg, model_weight}, data2vec's EMA teacher nested under
# model_weight['_ema'] (s3prl data2vec/convert.py:43); WavLM {cfg, model} (wavlm/expert.py:37-40))
FAMILY_WEIGHTS = {"hubert": "model_weight", "wav2vec2": "model_weight", "data2vec": "model_weight", "wavlm": "model"}


@pytest.mark.parametrize("family", sorted(FAMILY_WEIGHTS))
def test_every_family_passes_and_its_damage_is_named(family, tmp_path):
    from daisy_upstream.testing import make_random_family_checkpoint

    def write(damage=None):
        state = make_random_family_checkpoint(family, num_layers=2, layer_entropy=[2.9, 2.8])
        if damage:
            damage(state[FAMILY_WEIGHTS[family]])
        path = tmp_path / f"{family}.pt"
        atomic_torch_save(state, path)
        return path

    loaded = load_daisy_checkpoint(write())  # a sound file of every family passes
    assert loaded.family.name == family and loaded.num_layers == 2
    where = FAMILY_WEIGHTS[family]
    key = "encoder.layers.1.fc1.weight"
    with pytest.raises(ValueError, match=rf"{where}\['{key}'\] holds \d+ NaN/inf"):
        load_daisy_checkpoint(write(lambda w: w.__setitem__(key, w[key] * float("nan"))))
    with pytest.raises(ValueError, match=rf"{where}\['{key}'\] has shape \(64, 31\); the config gives \(64, 32\)"):
        load_daisy_checkpoint(write(lambda w: w.__setitem__(key, w[key][:, :-1])))
    if family == "data2vec":  # inside the nested EMA state: checked, named with its path

        def nan_ema(weights):
            first = next(iter(weights["_ema"]))
            weights["_ema"][first] = weights["_ema"][first] * float("nan")

        with pytest.raises(ValueError, match=r"model_weight\['_ema'\]\['[^']+'\] holds \d+ NaN/inf"):
            load_daisy_checkpoint(write(nan_ema))


# --- issue 35: one validation pass before anything is built; the format's version -------------


def _cfg(key, value):
    def damage(state):
        state["model_cfg"][key] = value

    return damage


def _daisy(key, value):
    def damage(state):
        if key == "calibration.layer_entropy":
            state["daisy"]["calibration"]["layer_entropy"] = value
        else:
            state["daisy"][key] = value

    return damage


#: damage -> the line's fragment; each is refused before the model is built
BEFORE_BUILD = {
    "far more layers than weights": (_cfg("encoder_layers", 5000), r"encoder_layers is 5000, but the weights hold 2"),
    "width": (_cfg("encoder_embed_dim", 48), r"encoder_embed_dim is 48, but .*k_proj.weight has shape \(32, 32\)"),
    "ffn width": (_cfg("encoder_ffn_embed_dim", 65), r"encoder_ffn_embed_dim is 65, but .*fc1.weight"),
    "layers as text": (_cfg("encoder_layers", "2"), r"model_cfg.encoder_layers is '2'; expected an integer >= 1"),
    "class count": (_daisy("num_classes", 21), r"daisy.num_classes is 21 .*but the branches have 20 outputs"),
    "groups a bool": (_daisy("groups", True), r"daisy.groups is True; expected an integer >= 1"),
    "inf entropy": (_daisy("calibration.layer_entropy", [2.9, float("inf")]), r"layer_entropy\[1\] is inf"),
    "negative entropy": (_daisy("calibration.layer_entropy", [2.9, -1.0]), r"layer_entropy\[1\] is -1.0"),
    "future format": (
        _daisy("format_version", 2),
        r"format 2, this daisy_upstream reads up to 1; upgrade daisy_upstream",
    ),
    "format as text": (_daisy("format_version", "1"), r"daisy.format_version is '1'; expected an integer"),
}


@pytest.mark.parametrize("case", sorted(BEFORE_BUILD))
def test_a_checkpoint_whose_values_disagree_is_refused_before_building(case, tmp_path, monkeypatch):
    """A config with far more layers than its weights built the model for minutes, with no output."""
    from daisy_upstream.core.families import HUBERT

    damage, match = BEFORE_BUILD[case]
    path = _damaged(tmp_path, damage)

    def no_build(state):
        raise AssertionError("the model was built before the file was checked")

    monkeypatch.setattr(type(HUBERT), "build", lambda self, state: no_build(state))
    with pytest.raises(ValueError, match=match):
        load_daisy_checkpoint(path)


def test_the_format_version_is_written_and_a_file_without_one_is_version_1(tmp_path):
    from daisy_upstream.core.branches import ExitBranches
    from daisy_upstream.core.checkpoint import with_branches
    from daisy_upstream.core.checkpoint_checks import FORMAT_VERSION

    state = make_random_checkpoint(num_layers=2, branches=False)
    written = with_branches(state, ExitBranches(2, 32, 20))
    assert written["daisy"]["format_version"] == FORMAT_VERSION == 1
    legacy = _damaged(tmp_path, lambda s: s["daisy"].pop("format_version", None))
    assert "format_version" not in torch.load(legacy, weights_only=True)["daisy"]
    assert load_daisy_checkpoint(legacy).layout == "daisy"


def test_an_unavailable_device_in_the_api_is_our_one_line(tiny_ckpt):
    """``upstream.to('cuda')`` without CUDA gave torch's own error."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from daisy_upstream.evaluation.loading import load_upstream

    upstream = daisy_hubert_local(str(tiny_ckpt))
    with pytest.raises(ValueError, match="'cuda': CUDA is not available on this machine; use device='cpu'"):
        upstream.to("cuda")
    with pytest.raises(ValueError, match="CUDA is not available on this machine"):
        upstream.to(device=torch.device("cuda", 1))
    with pytest.raises(ValueError, match="CUDA is not available on this machine"):
        load_upstream(str(tiny_ckpt), device="cuda")
    assert upstream.to("cpu", torch.float32) is upstream
