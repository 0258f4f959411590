"""``daisy bench`` as a library: the five modes side by side on the bench audio, the targets,
and the three files; the calibration it makes when the checkpoint has none is recorded."""

from __future__ import annotations

import hashlib
import json

import pytest

from daisy_upstream.evaluation.bench import SNR_MIX, bench


def test_bench_writes_every_mode_and_target(tiny_ckpt, tmp_path):
    result = bench(
        tmp_path / "b",
        tiny_ckpt,
        {"rho": 1.0},
        batch_sizes=(1, 2),
        utterances=2,
        min_seconds=0.5,
        max_seconds=1.0,
        repeats=1,
        warmup=0,
    )
    saved = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert saved == {k: v for k, v in result.items() if k != "table"}
    assert (tmp_path / "b" / "bench.png").stat().st_size > 0
    assert (tmp_path / "b" / "bench.txt").read_text() == result["table"] + "\n"
    modes = [(r["mode"], r["batch_size"]) for r in saved["results"]]
    assert modes == [(m, b) for b in (1, 2) for m in ("full", "daisy", "per-batch", "fixed", "daisy-noexit")]
    meta = saved["meta"]
    assert (
        meta["clips"] == 2
        and meta["snr_mix"] == list(SNR_MIX[:2])
        and meta["layers"] == 4
        and not meta["calibrated_on_bench_audio"]
    )
    assert 1 <= meta["fixed_layer"] <= 4 and meta["calibration"] is None
    # the checkpoint by name and content, not by a path on this machine
    assert meta["checkpoint"] == {"name": tiny_ckpt.name, "sha256": hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()}
    assert {t["target"] for t in saved["targets"]} >= {
        "efficiency >= 0.9 at batch 1",
        "overhead with exits impossible <= 5% at batch 2",
    }


def test_without_a_calibration_tau_comes_from_the_bench_audio(write_checkpoint, tmp_path):
    ckpt = write_checkpoint(num_layers=3, sharpen=4.0)  # branches, no calibration of its own
    result = bench(
        tmp_path / "b",
        ckpt,
        {"rho": 1.0},
        batch_sizes=(1,),
        utterances=1,
        min_seconds=0.5,
        max_seconds=0.8,
        repeats=1,
        warmup=0,
    )
    meta = result["meta"]
    assert meta["calibrated_on_bench_audio"] and meta["calibration"]["num_utterances"] == 1
    assert meta["calibration"]["checkpoint"] == meta["checkpoint"]  # by name and content, as meta: no path here
    entropy = meta["calibration"]["layer_entropy"]
    assert meta["tau"] == pytest.approx((max(entropy) + min(entropy)) / 2)


@pytest.mark.parametrize("family", ["wav2vec2", "data2vec", "wavlm"])
def test_every_family_is_calibrated_on_the_bench_audio(family, tmp_path):
    """A checkpoint of each family without a calibration (WavLM's config has no sample rate:
    the bench once crashed reading it) is calibrated on the bench audio and timed."""
    import torch

    from daisy_upstream.testing import make_random_family_checkpoint

    ckpt = tmp_path / f"{family}.pt"
    torch.save(make_random_family_checkpoint(family, num_layers=2), ckpt)
    result = bench(
        tmp_path / "b",
        ckpt,
        {"rho": 1.0},
        batch_sizes=(1,),
        utterances=1,
        min_seconds=0.5,
        max_seconds=0.8,
        repeats=1,
        warmup=0,
    )
    meta = result["meta"]
    assert meta["family"] == family and meta["calibrated_on_bench_audio"]
    assert meta["calibration"]["audio_seconds"] == pytest.approx(meta["seconds"], abs=1e-3)


def test_a_strategy_without_branches_to_check_is_refused(tiny_ckpt, tmp_path):
    with pytest.raises(ValueError, match="checks no branch"):
        bench(tmp_path / "b", tiny_ckpt, {"strategy": "full"}, batch_sizes=(1,), utterances=1, repeats=1)


def test_no_exit_is_said_in_one_line_with_what_to_change(tiny_ckpt, tmp_path):
    """rho 0 puts tau at 0, below every entropy: the bench says so in one line and what to pass
    instead; the rho it suggests makes about half the clips exit."""
    settings = dict(batch_sizes=(2,), utterances=4, min_seconds=0.5, max_seconds=1.0, repeats=1, warmup=0)
    said = []
    result = bench(tmp_path / "a", tiny_ckpt, {"rho": 0.0}, say=said.append, **settings)
    advice = result["meta"]["no_exit"]
    assert [line for line in said if line.startswith("no utterance exits")] == [advice["message"]]
    assert "\n" not in advice["message"] and advice["message"] in result["table"]
    assert f"--rho {advice['rho']:.3f} or --tau {advice['tau']:.4f}" in advice["message"]
    assert advice["tau"] == pytest.approx((2.9 + 2.6) / 2 * advice["rho"])  # tiny_ckpt's calibration, Eq. 3
    assert next(r for r in result["results"] if r["mode"] == "daisy")["exit_histogram"] == [0, 0, 0, 4]
    again = bench(tmp_path / "b", tiny_ckpt, {"rho": advice["rho"]}, **settings)
    assert again["meta"]["no_exit"] is None
    exits = next(r for r in again["results"] if r["mode"] == "daisy")["exit_histogram"]
    assert 2 <= sum(exits[:3]) < 4  # about half of the clips now exit before the last layer


def test_with_an_explicit_tau_only_a_tau_is_suggested(tiny_ckpt, tmp_path):
    result = bench(
        tmp_path / "a",
        tiny_ckpt,
        {"tau": 0.0},
        batch_sizes=(1,),
        utterances=2,
        min_seconds=0.5,
        max_seconds=1.0,
        repeats=1,
        warmup=0,
    )
    advice = result["meta"]["no_exit"]
    assert advice["rho"] is None and "--rho" not in advice["message"]
    assert advice["message"].endswith(f"pass --tau {advice['tau']:.4f} for about half of them to exit")
    with_exits = bench(
        tmp_path / "b",
        tiny_ckpt,
        {"tau": advice["tau"]},
        batch_sizes=(1,),
        utterances=2,
        min_seconds=0.5,
        max_seconds=1.0,
        repeats=1,
        warmup=0,
    )
    assert with_exits["meta"]["no_exit"] is None


def test_the_daisy_row_reports_a_fixed_depth_model_at_its_mean_exit_layer(tiny_ckpt, tmp_path):
    result = bench(
        tmp_path / "b",
        tiny_ckpt,
        {"rho": 1.0},
        batch_sizes=(1, 2),
        utterances=2,
        min_seconds=0.5,
        max_seconds=1.0,
        repeats=1,
        warmup=0,
    )
    for row in result["results"]:
        assert (row["depth_saved"] is not None) == (row["mode"] == "daisy")
    assert "depth: a fixed-depth model at the mean exit layer" in result["table"]


def test_stock_is_timed_beside_full_on_the_same_weights(tiny_ckpt, tmp_path):
    """``stock``: s3prl's own ``hubert_local`` of the same file, full depth, with its target."""
    result = bench(
        tmp_path / "b",
        tiny_ckpt,
        {"rho": 1.0, "cuda_graphs": "off"},
        batch_sizes=(2,),
        utterances=2,
        min_seconds=0.5,
        max_seconds=1.0,
        repeats=1,
        warmup=0,
        stock=True,
    )
    rows = {r["mode"]: r for r in result["results"]}
    assert rows["stock"]["exit_histogram"] == [0, 0, 0, 2] and len(rows["stock"]["times"]) == 1
    assert rows["stock"]["ideal_saved"] == pytest.approx(rows["full"]["ideal_saved"])
    target = next(t for t in result["targets"] if t["target"].startswith("full depth no slower than s3prl's stock"))
    assert target["value"] == pytest.approx(-rows["stock"]["saved"])
    assert result["meta"]["cuda_graphs"] == "off" and result["meta"]["graph_steps"]["captures"] == 0


def test_a_random_base_is_built_in_memory(tmp_path, monkeypatch):
    """No checkpoint file is written for ``--random-base`` (only ``stock``'s loader needs one)."""
    import torch

    def refuse(*args, **kwargs):
        raise AssertionError("torch.save called")

    monkeypatch.setattr(torch, "save", refuse)
    result = bench(
        tmp_path / "b",
        random_base=True,
        family="hubert",
        overrides={"rho": 1.0},
        batch_sizes=(1,),
        utterances=1,
        min_seconds=0.5,
        max_seconds=0.6,
        repeats=1,
        warmup=0,
    )
    meta = result["meta"]
    assert meta["checkpoint"] == {"name": "random hubert Base", "seed": 0} and meta["layers"] == 12
    assert meta["calibrated_on_bench_audio"] and len(meta["calibration"]["layer_entropy"]) == 12
    entropy = meta["calibration"]["layer_entropy"]
    assert meta["tau"] == pytest.approx((max(entropy) + min(entropy)) / 2)
