"""Stage 1 + calibrate + exits for every family with each target kind it has, on tiny random
models built from s3prl's own classes by :mod:`daisy_upstream.testing.families` (its
docstring names the s3prl lines each format follows: wav2vec 2.0 with its quantizer of
2 codebooks x 8 codes, data2vec with ``_ema``, WavLM's ``{cfg, model}`` with the gated
relative position bias)."""

from __future__ import annotations

import pytest
import torch
import yaml

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.core.branches import frame_entropy
from daisy_upstream.core.checkpoint import load_daisy_checkpoint
from daisy_upstream.core.policy import compute_tau, make_plan
from daisy_upstream.testing import make_random_family_checkpoint, waves
from daisy_upstream.training.stage1 import train_branches

#: (family, --targets) pairs: every family takes k-means, the families with a head their own
CASES = [
    ("wav2vec2", "model"),
    ("wav2vec2", "kmeans"),
    ("data2vec", "kmeans"),
    ("wavlm", "kmeans"),
    ("hubert", "kmeans"),
]


def write_family(tmp_path, family, **kwargs):
    path = tmp_path / f"{family}.pt"
    atomic_torch_save(make_random_family_checkpoint(family, num_layers=3, branches=False, **kwargs), path)
    return path


@pytest.fixture
def config_for(fast_config):
    """``config_for(targets, **overrides)``: fast settings; k-means on layer 2, 6 clusters."""

    def make(targets, **overrides):
        extra = (
            dict(targets="kmeans", kmeans_layer=2, clusters=6, kmeans_batch_frames=40) if targets == "kmeans" else {}
        )
        return fast_config(**{**extra, **overrides})

    return make


@pytest.mark.parametrize("family,targets", CASES)
def test_stage1_calibrate_and_exits(family, targets, audio_dir, tmp_path, capsys, config_for):
    from daisy_upstream.cli import main
    from daisy_upstream.integration import hubconf

    ckpt = write_family(tmp_path, family)
    corpus = AudioCorpus.from_source(audio_dir)
    result = train_branches(
        ckpt,
        corpus,
        tmp_path / "out.pt",
        tmp_path / "w",
        config_for(targets, max_steps=25, eval_every=25),
        progress=False,
    )
    first, last = result.history[0], result.history[-1]
    assert result.finished and all(last["ce"][k] < first["ce"][k] for k in range(3)), (first["ce"], last["ce"])
    saved = torch.load(tmp_path / "out.pt", weights_only=True)
    assert saved["daisy"]["targets"]["kind"] == targets
    assert saved.keys() - {"daisy"} == torch.load(ckpt, weights_only=True).keys()  # the stock file + daisy
    loaded = load_daisy_checkpoint(tmp_path / "out.pt")
    assert loaded.family.name == family
    groups = 2 if (family, targets) == ("wav2vec2", "model") else 1
    assert loaded.branches.groups == groups and loaded.branches.num_classes == (8 if groups == 2 else 6)
    # calibrate, then the family's DAISY upstream exits each row at its first layer below tau
    calib = tmp_path / "calib.yaml"
    assert (
        main(
            [
                "calibrate",
                "-k",
                str(tmp_path / "out.pt"),
                "--audio",
                str(audio_dir),
                "--out",
                str(calib),
                "--no-progress",
                "--batch-seconds",
                "1",
            ]
        )
        == 0
    )
    capsys.readouterr()
    make = getattr(hubconf, f"daisy_{family}_local")
    wavs = waves(8000, 12000, 6000, 16000, seed=5)
    full = make(str(tmp_path / "out.pt"), model_config={"strategy": "full"}).run(wavs, make_plan([3], None))
    expected = torch.zeros(4, 2)
    with torch.no_grad():
        for row in range(4):
            n = int(full.lengths[row])
            for k in (1, 2):
                logits = loaded.branches[k - 1](full.hidden_states[k][row, :n])
                blocks = logits.unflatten(-1, (groups, -1))  # the mean over groups of each block's entropy
                expected[row, k - 1] = torch.stack([frame_entropy(blocks[:, g]).mean() for g in range(groups)]).mean()
    calibrated = make(str(tmp_path / "out.pt"), model_config={"calibration": str(calib), "rho": 1.0})
    assert calibrated.tau == pytest.approx(compute_tau(yaml.safe_load(calib.read_text())["layer_entropy"], 1.0))
    # tau midway between the middle two rows' layer-1 entropies: two rows stop at layer 1, the
    # others later. Not the median itself: that is one row's own value, which the upstream's
    # batched forward computes ~1e-7 apart, so that row's exit would hang on float rounding.
    middle = expected[:, 0].sort().values[1:3]
    tau = float(middle.mean())
    assert (expected - tau).abs().min() > 1e-5  # every decision is clear of rounding
    upstream = make(str(tmp_path / "out.pt"), model_config={"tau": tau})
    out = upstream(wavs)
    for row in range(4):
        below = [k for k in (1, 2) if expected[row, k - 1] < tau]
        exit_layer = below[0] if below else 3
        assert int(out["exit_layers"][row]) == exit_layer
        assert torch.allclose(
            out["entropies"][row, : min(exit_layer, 2)], expected[row, : min(exit_layer, 2)], rtol=1e-4, atol=1e-6
        )
    assert len(set(out["exit_layers"].tolist())) > 1


@pytest.mark.parametrize("family", ["wavlm", "data2vec"])
def test_headless_family_without_kmeans_is_refused(family, audio_dir, tmp_path, fast_config):

    ckpt = write_family(tmp_path, family)
    corpus = AudioCorpus.from_source(audio_dir)
    with pytest.raises(ValueError, match=f"{family}.*no pretraining head.*--targets kmeans"):
        train_branches(ckpt, corpus, tmp_path / "o.pt", tmp_path / "w", fast_config(), progress=False)
    with pytest.raises(ValueError, match=f"{family}.*no pretraining head.*--targets kmeans"):
        train_branches(ckpt, corpus, tmp_path / "o.pt", tmp_path / "w", fast_config(targets="model"), progress=False)
    assert not (tmp_path / "w").exists()  # refused before anything was written


def test_headless_refusal_is_one_line_from_the_cli(audio_dir, tmp_path, capsys):
    from daisy_upstream.cli import main

    ckpt = write_family(tmp_path, "wavlm")
    assert (
        main(
            [
                "train-branches",
                "-k",
                str(ckpt),
                "--audio",
                str(audio_dir),
                "--out",
                str(tmp_path / "o.pt"),
                "--max-steps",
                "2",
                "--batch-seconds",
                "2",
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("daisy train-branches: error: ") and len(err.strip().splitlines()) == 1
    assert "WavLM" in err and "--targets kmeans --kmeans-layer K --clusters N" in err


@pytest.mark.parametrize("family,targets", [("wavlm", "kmeans"), ("wav2vec2", "model"), ("data2vec", "kmeans")])
def test_resume_is_exact(family, targets, audio_dir, tmp_path, config_for):
    ckpt = write_family(tmp_path, family)
    corpus = AudioCorpus.from_source(audio_dir)
    settings = dict(max_steps=8, eval_every=4, save_every=3)
    train_branches(ckpt, corpus, tmp_path / "a.pt", tmp_path / "wa", config_for(targets, **settings), progress=False)
    train_branches(
        ckpt, corpus, tmp_path / "b.pt", tmp_path / "wb", config_for(targets, stop_after=5, **settings), progress=False
    )
    torch.manual_seed(99)  # a different global RNG state must not matter
    rest = train_branches(
        ckpt, corpus, tmp_path / "b.pt", tmp_path / "wb", config_for(targets, stop_after=5, **settings), progress=False
    )
    assert rest.finished
    a = torch.load(tmp_path / "a.pt", weights_only=True)["daisy"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["daisy"]
    if targets == "kmeans":
        assert torch.equal(a["targets"]["centroids"], b["targets"]["centroids"])
    assert all(torch.equal(v, b["branches"][k]) for k, v in a["branches"].items())
    assert a["calibration"]["layer_entropy"] == b["calibration"]["layer_entropy"]


@pytest.mark.parametrize("family,targets", CASES + [("hubert", "model")])
def test_bf16_through_two_workers_with_a_resume_equals_one_process(family, targets, audio_dir, tmp_path, config_for):
    """Every family and target kind: a bf16 forward fed by two DataLoader workers, stopped and
    resumed, trains the same branches as one process in one go; the precision is recorded."""
    ckpt = write_family(tmp_path, family)
    corpus = AudioCorpus.from_source(audio_dir)
    settings = dict(max_steps=4, precision="bf16", noise_prob=0.5)
    train_branches(ckpt, corpus, tmp_path / "a.pt", tmp_path / "wa", config_for(targets, **settings), progress=False)
    for _ in range(2):
        train_branches(
            ckpt,
            corpus,
            tmp_path / "b.pt",
            tmp_path / "wb",
            config_for(targets, workers=2, stop_after=2, **settings),
            progress=False,
        )
    a = torch.load(tmp_path / "a.pt", weights_only=True)["daisy"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["daisy"]
    assert all(torch.equal(v, b["branches"][k]) for k, v in a["branches"].items())
    assert b["provenance"]["stage1"]["config"]["precision"] == "bf16"
    if targets == "kmeans":
        assert torch.load(tmp_path / "wb" / "kmeans.pt", weights_only=True)["settings"]["precision"] == "bf16"
