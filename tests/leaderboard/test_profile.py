"""``daisy profile``: MAC counts against s3prl's stock HuBERT, early exits, buckets, outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from daisy_upstream.integration.hubconf import DEFAULT_CHECKPOINT, daisy_hubert_local
from daisy_upstream.leaderboard.buckets import (
    BUCKETS,
    LIBRISPEECH_TEST_CLEAN_UTTERANCES,
    bucket_of,
    bucket_sums,
    challenge_pick,
    librispeech_challenge_sample,
)
from daisy_upstream.leaderboard.profile import Clip, load_clips, profile_upstream, run_profile
from daisy_upstream.testing import waves

HELDOUT = Path(__file__).resolve().parents[1] / "data" / "heldout_clips"


def _stock_macs(ckpt: Path, wav: torch.Tensor) -> int:
    """An independent count: torch's FlopCounterMode around s3prl's own ``hubert_local``.

    Attention runs on the math backend (two counted ``bmm``): torch's counter has no formula
    for the CPU flash-attention kernel, so without it neither model's attention would count.
    """
    from s3prl.upstream.hubert.hubconf import hubert_local
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    stock = hubert_local(str(ckpt)).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), counter:
        stock([wav])
    return counter.get_total_flops() // 2


def test_full_model_macs_equal_stock_hubert_local_on_the_embedded_model():
    """Our checkpoints are s3prl's converted format, so s3prl's stock upstream loads the same file."""
    paths = sorted(HELDOUT.glob("*.wav"))[:4]
    clips = load_clips(paths)
    upstream = daisy_hubert_local(str(DEFAULT_CHECKPOINT)).eval()
    profile = profile_upstream(upstream, clips)
    rows = profile["models"]["full"]["utterances"]
    assert [r["exit_layer"] for r in rows] == [upstream.num_layers] * len(clips)
    for clip, row in zip(clips[:3], rows):
        stock = _stock_macs(DEFAULT_CHECKPOINT, clip.wav)
        # s3prl's encoder pads the frame count to a multiple of 2 (required_seq_len_multiple),
        # so with an odd frame count it computes one frame more: well inside 1 %
        assert row["macs"] == pytest.approx(stock, rel=0.01)
    assert profile["params"]["upstream"] == sum(p.numel() for p in upstream.parameters())
    assert profile["params"]["branches"] == sum(p.numel() for p in upstream.net.branches.parameters())


def test_daisy_counts_less_where_utterances_exit_and_more_where_none_do(tiny_ckpt):
    clips = [Clip(f"u{i}", w) for i, w in enumerate(waves(8000, 12000, 16000, 24000, 32000))]
    # tau far above any entropy: every utterance exits at the first checked layer
    early = profile_upstream(daisy_hubert_local(str(tiny_ckpt), model_config={"tau": 100.0}).eval(), clips)
    # tau 0: no branch fires, DAISY runs every layer and pays for the branches it checked
    never = profile_upstream(daisy_hubert_local(str(tiny_ckpt), model_config={"tau": 0.0}).eval(), clips)
    for d, f in zip(early["models"]["daisy"]["utterances"], early["models"]["full"]["utterances"]):
        assert d["exit_layer"] == 1 and d["macs"] < f["macs"]
    for d, f in zip(never["models"]["daisy"]["utterances"], never["models"]["full"]["utterances"]):
        assert d["exit_layer"] == 4 and d["macs"] > f["macs"]
    # the full model's count does not depend on the policy
    assert early["models"]["full"]["macs"] == never["models"]["full"]["macs"]
    # the form's fields: integer sums, "all" = the buckets together
    macs = early["models"]["daisy"]["macs"]
    assert all(isinstance(v, int) for v in macs.values())
    assert (
        macs["all"] == sum(macs[b] for b in BUCKETS) == sum(u["macs"] for u in early["models"]["daisy"]["utterances"])
    )


def test_challenge_sample_every_82nd_of_test_clean_by_length():
    lengths = [(i * 7919) % 2620 + 16000 for i in range(LIBRISPEECH_TEST_CLEAN_UTTERANCES)]  # a permutation
    picked = challenge_pick(lengths)
    ranked = sorted(lengths)
    assert len(picked) == 32  # awk 'NR % 82 == 1' over 2620 lines: NR = 1, 83, ..., 2543
    assert [lengths[i] for i in picked] == [ranked[n - 1] for n in range(1, 2621) if n % 82 == 1]
    labels = bucket_of([lengths[i] / 16000 for i in picked])
    assert labels == [b for b in BUCKETS for _ in range(8)]  # four buckets of 8, shortest first


def test_buckets_are_length_quartiles_and_need_four_clips():
    # 5 clips by rank 1.0 < 2.0 < 3.0 < 4.0 < 5.0 -> groups of 2, 1, 1, 1
    labels = bucket_of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert labels == ["longer", "short", "medium", "short", "long"]
    assert bucket_sums([1, 2, 3, 4, 5], labels) == {"all": 15, "short": 2 + 4, "medium": 3, "long": 5, "longer": 1}
    with pytest.raises(ValueError, match="at least 4 clips"):
        bucket_of([1.0, 2.0, 3.0])


def test_librispeech_root_that_is_not_test_clean_is_refused(tmp_path):
    shutil.copy(HELDOUT / "100-1000-0000.wav", tmp_path / "x.flac")
    (tmp_path / "1-2.trans.txt").write_text("x HELLO\n")
    with pytest.raises(ValueError, match="expected LibriSpeech test-clean"):
        librispeech_challenge_sample(tmp_path)


def test_run_profile_writes_json_table_plot_and_profiles_noise(tiny_ckpt, tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    for p in sorted(HELDOUT.glob("*.wav"))[:4]:
        shutil.copy(p, audio / p.name)
    out = tmp_path / "out"
    clean = run_profile(out, ckpt=str(tiny_ckpt), audio=str(audio))
    data = json.loads((out / "profile.json").read_text())
    assert (out / "profile.png").stat().st_size > 0 and "DAISY GMACs" in (out / "profile.txt").read_text()
    assert set(data["models"]) == {"daisy", "full"}
    assert set(data["models"]["daisy"]["macs"]) == {"all", *BUCKETS}
    assert set(data["models"]["daisy"]["utterances"][0]) >= {"path", "seconds", "exit_layer", "macs"}
    assert "strategy none" in data["policy"] and "no exit statistics" in data["policy"]
    with pytest.raises(ValueError, match="--force"):  # OutputRefused: an existing --out needs --force
        run_profile(out, ckpt=str(tiny_ckpt), audio=str(audio))
    assert sorted(p.name for p in out.iterdir()) == [".daisy-output.json", "profile.json", "profile.png", "profile.txt"]
    noisy = run_profile(tmp_path / "noisy", ckpt=str(tiny_ckpt), audio=str(audio), snr=0.0)
    assert noisy["audio"]["snr_db"] == 0.0
    # same clips: the full model's compute does not depend on the signal
    assert noisy["models"]["full"]["macs"] == clean["models"]["full"]["macs"]
    assert [u["path"] for u in noisy["models"]["daisy"]["utterances"]] == [
        u["path"] for u in clean["models"]["daisy"]["utterances"]
    ]
