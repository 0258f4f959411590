"""``daisy export-hidden``: the written folder passes the hidden-set template's checks in a fresh
interpreter, and s3prl's stock Featurizer over it gives each exit layer the weight of the
layers the utterance skipped (``layers_past_exit: copy``)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

import daisy_upstream
from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.core.policy import exit_span
from daisy_upstream.integration.compat import s3prl_distribution
from daisy_upstream.integration.hubconf import daisy_hubert_local
from daisy_upstream.leaderboard import export_hidden as export_module
from daisy_upstream.leaderboard.export_hidden import HiddenCheckFailed, export_hidden
from daisy_upstream.outputs import OutputRefused
from daisy_upstream.testing import waves

# With the tiny fixture (seed 0) and these inputs, tau 0.74 sits between the branch entropies of
# layers 2 and 3, so utterances exit at different layers before the last one (asserted below).
TAU = 0.74

# The template's checks (SUPERB_SUBMISSION.md, 'Hidden set'), written here independently of
# daisy_upstream.leaderboard.hidden_checks, run in a fresh interpreter inside the folder.
TEMPLATE_CHECK = """
import torch
from expert import UpstreamExpert
model = UpstreamExpert(ckpt="model.pt")
wavs = [torch.randn(int(16000 * s)) for s in (2, 1.8, 3.7)]
with torch.no_grad():
    results = model(wavs)
keys = ["hidden_states"] + [k for k in ("PR", "SID", "ER", "ASR", "ASV", "SD", "QbE", "ST", "SS", "SE", "secret") if k in results]
for key in keys:
    states = results[key]
    assert isinstance(states, (list, tuple))
    assert all(h.dim() == 3 and h.shape == states[0].shape for h in states), key
    assert states[0].size(0) == 3
    rate = model.get_downsample_rates(key)
    assert isinstance(rate, int), rate
    assert abs(round(max(len(w) for w in wavs) / rate) - states[0].size(1)) < 5
print("TEMPLATE OK", len(results["hidden_states"]), tuple(results["hidden_states"][0].shape))
"""


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(Path(daisy_upstream.__file__).resolve().parents[1])  # this checkout
    return env


def _import_expert(folder: Path):
    spec = importlib.util.spec_from_file_location("submitted_expert", folder / "expert.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_written_expert_passes_the_template_in_a_fresh_process(tiny_ckpt, tmp_path):
    out = tmp_path / "hidden"
    result = export_hidden(out, ckpt=tiny_ckpt, overrides={"tau": TAU})
    assert sorted(p.name for p in out.iterdir()) == [
        ".daisy-output.json",
        "README.md",
        "expert.py",
        "model.pt",
        "requirements.txt",
    ]
    assert result["checks"]["ok"] and result["upstream_config"]["layers_past_exit"] == "copy"
    assert list(tmp_path.glob(".hidden.*")) == []  # the temporary folder was renamed
    state = torch.load(out / "model.pt", weights_only=True)
    assert state["daisy_export"]["upstream_config"]["tau"] == TAU
    requirements = (out / "requirements.txt").read_text().split()
    s3prl = s3prl_distribution()  # s3prl or espnet-s3prl, pinned as installed
    assert f"{s3prl}=={version(s3prl)}" in requirements and f"torch=={version('torch')}" in requirements
    assert any(r.startswith("daisy_upstream==") for r in requirements)
    proc = subprocess.run(
        [sys.executable, "-c", TEMPLATE_CHECK], cwd=out, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TEMPLATE OK 5 (3, " in proc.stdout  # 4 layers + the CNN/positional state


def test_stock_featurizer_gives_the_exit_layer_the_weight_of_the_missing_layers(tiny_ckpt, tmp_path):
    from s3prl.upstream.interfaces import Featurizer

    out = tmp_path / "hidden"
    export_hidden(out, ckpt=tiny_ckpt, overrides={"tau": TAU})
    expert = _import_expert(out).UpstreamExpert(ckpt=str(out / "model.pt")).eval()
    featurizer = Featurizer(expert, upstream_device="cpu")
    with torch.no_grad():
        featurizer.weights.copy_(torch.linspace(-1.0, 1.0, featurizer.layer_num))
    wavs = waves(32000, 28800, 59200, 16000, 24000, seed=1)
    # reference: the plain DAISY upstream (zeros past the exit) on the source checkpoint
    reference = daisy_hubert_local(str(tiny_ckpt), model_config={"tau": TAU}).eval()
    with torch.no_grad():
        plain = reference.run(wavs)
        features = featurizer(wavs, expert(wavs))
    exits = plain.exit_layers.tolist()
    num_layers = reference.num_layers
    assert min(exits) < num_layers and len(set(exits)) > 1, exits  # exits happen, at different layers
    w = torch.softmax(featurizer.weights.detach(), dim=0)
    for b, (e, feature) in enumerate(zip(exits, features)):
        h = [state[b] for state in plain.hidden_states]
        expected = sum(w[k] * h[k] for k in range(e + 1)) + w[e + 1 :].sum() * h[e]
        n = feature.size(0)
        torch.testing.assert_close(feature, expected[:n], rtol=1e-5, atol=1e-5)
        if e < num_layers:  # the zeros a stock featurizer would have seen otherwise
            zeros_mix = sum(w[k] * h[k] for k in range(e + 1))
            assert not torch.allclose(feature, zeros_mix[:n], atol=1e-4)


def test_exit_statistics_are_baked_in(tiny_ckpt, tmp_path):
    # a runner checkpoint as s3prl's runner saves it: the Featurizer's state (DAISY's carries
    # exit_counts) and the run's argparse.Namespace under "Args"
    runner = tmp_path / "dev-best.ckpt"
    counts = [0, 3, 5, 2]
    atomic_torch_save(
        {
            "Featurizer": {"weights": torch.zeros(5), "exit_counts": torch.tensor(counts)},
            "Args": argparse.Namespace(upstream="daisy_hubert_local"),
        },
        runner,
    )
    config = tmp_path / "upstream.yaml"
    config.write_text("strategy: mean\n")
    out = tmp_path / "hidden"
    export_hidden(out, ckpt=tiny_ckpt, config=config, overrides={"tau": TAU}, stats=runner)
    state = torch.load(out / "model.pt", weights_only=True)
    assert state["daisy_export"]["exit_counts"] == counts
    expert = _import_expert(out).UpstreamExpert(ckpt=str(out / "model.pt"))
    assert expert.current_span() == exit_span("mean", 4, counts) == [2, 3]


def test_statistics_strategy_without_statistics_is_refused_before_writing(tiny_ckpt, tmp_path):
    config = tmp_path / "upstream.yaml"
    config.write_text("strategy: mean\n")
    with pytest.raises(ValueError, match="needs exit statistics"):
        export_hidden(tmp_path / "hidden", ckpt=tiny_ckpt, config=config, overrides={"tau": TAU})
    assert sorted(tmp_path.iterdir()) == sorted([config, tiny_ckpt])


def test_a_folder_failing_the_checks_is_not_left_behind(tiny_ckpt, tmp_path, monkeypatch):
    broken = export_module.EXPERT_PY.replace(
        'return {"hidden_states": out["hidden_states"]',
        'return {"hidden_states": out["hidden_states"][:1] + [out["hidden_states"][1][:, :3]]',
    )
    assert broken != export_module.EXPERT_PY
    monkeypatch.setattr(export_module, "EXPERT_PY", broken)
    with pytest.raises(HiddenCheckFailed, match="different shapes"):
        export_hidden(tmp_path / "hidden", ckpt=tiny_ckpt, overrides={"tau": TAU})
    assert list(tmp_path.iterdir()) == [tiny_ckpt]


def test_force_replaces_only_a_previous_export_and_never_a_users_folder(tiny_ckpt, tmp_path, monkeypatch):
    """The data-loss bug of issue 18: --force used to rmtree whatever --out held."""
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("months of experiments")
    (mine / "sub" / "model.pt").write_bytes(b"\x00weights")
    with pytest.raises(OutputRefused, match="--force"):
        export_hidden(mine, ckpt=tiny_ckpt, overrides={"tau": TAU})
    with pytest.raises(OutputRefused, match="did not write"):
        export_hidden(mine, ckpt=tiny_ckpt, overrides={"tau": TAU}, force=True)
    assert (mine / "notes.txt").read_text() == "months of experiments"
    assert (mine / "sub" / "model.pt").read_bytes() == b"\x00weights"
    monkeypatch.chdir(mine)
    with pytest.raises(OutputRefused, match="current folder"):
        export_hidden(".", ckpt=tiny_ckpt, overrides={"tau": TAU}, force=True)
    assert sorted(p.name for p in mine.rglob("*")) == ["model.pt", "notes.txt", "sub"]
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "hidden"
    out.mkdir()  # an empty folder is taken without --force
    export_hidden(out, ckpt=tiny_ckpt, overrides={"tau": TAU})
    with pytest.raises(OutputRefused, match="holds the input"):  # re-export from the export's own model.pt
        export_hidden(out, ckpt=out / "model.pt", overrides={"tau": TAU}, force=True)
    export_hidden(out, ckpt=tiny_ckpt, overrides={"tau": 0.5}, force=True)  # its own previous export
    assert torch.load(out / "model.pt", weights_only=True)["daisy_export"]["upstream_config"]["tau"] == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["hidden", "mine", tiny_ckpt.name])
    (out / "README.md").write_text("my edits")  # edited by hand: no longer the tool's own output
    with pytest.raises(OutputRefused, match="changed since"):
        export_hidden(out, ckpt=tiny_ckpt, overrides={"tau": TAU}, force=True)
    assert (out / "README.md").read_text() == "my edits"


def test_a_calibration_file_named_by_the_config_travels_inside_model_pt(write_checkpoint, tmp_path):
    ckpt = write_checkpoint(num_layers=3)  # branches, no calibration of its own
    (tmp_path / "cal.yaml").write_text("layer_entropy: [3.0, 2.9, 2.8]\n")
    (tmp_path / "up.yaml").write_text("calibration: cal.yaml\nrho: 0.5\n")
    out = tmp_path / "hidden"
    export_hidden(out, ckpt=ckpt, config=tmp_path / "up.yaml")
    (tmp_path / "cal.yaml").unlink()  # the folder must not need it
    state = torch.load(out / "model.pt", weights_only=True)
    assert state["daisy"]["calibration"]["layer_entropy"] == [3.0, 2.9, 2.8]
    assert state["daisy_export"]["upstream_config"]["calibration"] is None
    expert = _import_expert(out).UpstreamExpert(ckpt=str(out / "model.pt"))
    assert expert.tau == pytest.approx((3.0 + 2.8) / 2 * 0.5)  # Eq. 3 on the copied calibration
