"""Stage-1 target kinds: k-means on a layer (any family), wav2vec 2.0's quantizer codes, and
branch heads with several output blocks (one per codebook group) in the core."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.core.branches import ExitBranches, frame_entropy, group_entropy
from daisy_upstream.core.checkpoint import load_daisy_checkpoint, with_branches
from daisy_upstream.core.early_exit import EarlyExitModel
from daisy_upstream.integration.hubconf import daisy_hubert_local
from daisy_upstream.testing import authors_layout, make_random_checkpoint, waves
from daisy_upstream.training.kmeans_targets import KMeansTargets, layer_frames
from daisy_upstream.training.quantizer_targets import ContrastiveTargets, QuantizerTargets
from daisy_upstream.training.stage1 import train_branches
from daisy_upstream.training.targets import BranchLoss, load_frozen_model, model_targets


@pytest.fixture
def kmeans_config(fast_config):
    """``kmeans_config(**overrides)``: fast settings with k-means targets on layer 2, 6 clusters."""

    def make(**overrides):
        return fast_config(
            **{**dict(targets="kmeans", kmeans_layer=2, clusters=6, kmeans_batch_frames=40), **overrides}
        )

    return make


# -- k-means targets ------------------------------------------------------------------------


def test_kmeans_stage1_calibrate_and_exits(write_checkpoint, audio_dir, tmp_path, capsys, kmeans_config):
    from s3prl.upstream.hubert.hubconf import hubert_local  # s3prl's stock upstream, the peer
    from sklearn.cluster import MiniBatchKMeans

    from daisy_upstream.cli import main

    ckpt = write_checkpoint(num_layers=3, branches=False)
    corpus = AudioCorpus.from_source(audio_dir)
    result = train_branches(
        ckpt, corpus, tmp_path / "km.pt", tmp_path / "w", kmeans_config(max_steps=25, eval_every=25), progress=False
    )
    assert result.finished
    first, last = result.history[0], result.history[-1]
    assert all(last["ce"][k] < first["ce"][k] for k in range(3)), (first["ce"], last["ce"])
    saved = torch.load(tmp_path / "km.pt", weights_only=True)
    facts = saved["daisy"]["targets"]
    assert facts["kind"] == "kmeans" and facts["layer"] == 2 and facts["clusters"] == 6 and facts["seed"] == 0
    assert facts["centroids"].shape == (6, 32) and facts["inertia"] > 0 and facts["frames"] >= 40
    train_name = corpus.split(0.2, 0)[0].name
    assert facts["audio"] == train_name and "MiniBatchKMeans" in facts["library"]
    # a frame's target is the centroid nearest to the stock upstream's hidden_states[2]
    stock = hubert_local(ckpt=str(ckpt)).eval()
    targets = KMeansTargets(facts["centroids"], 2)
    reference = MiniBatchKMeans(n_clusters=6).fit(np.random.default_rng(0).normal(size=(6, 32)))
    reference.cluster_centers_ = facts["centroids"].numpy()
    wav = waves(9000, seed=3)[0]
    with torch.no_grad():
        states = stock([wav])["hidden_states"]
    features = torch.stack([h[0] for h in states[1:]])  # (L, T, D)
    mine = targets.labels(features, [wav], torch.tensor([features.size(1)]))[:, 0]
    assert torch.equal(mine, torch.from_numpy(reference.predict(states[2][0].numpy())).long())
    # calibrate, then exits: each row stops at its first layer whose entropy is below tau
    calib = tmp_path / "calib.yaml"
    assert (
        main(
            [
                "calibrate",
                "-k",
                str(tmp_path / "km.pt"),
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
    upstream = daisy_hubert_local(str(tmp_path / "km.pt"), model_config={"calibration": str(calib), "rho": 1.0})
    assert upstream.net.branches.num_classes == 6
    out = upstream(waves(8000, 12000, 6000, 16000, seed=5))
    tau = upstream.tau
    for row in range(4):
        below = [k + 1 for k in range(2) if out["entropies"][row, k] < tau]
        assert int(out["exit_layers"][row]) == (below[0] if below else 3)


def test_kmeans_resume_is_exact_and_reuses_the_centroids(
    write_checkpoint, audio_dir, tmp_path, monkeypatch, kmeans_config
):
    ckpt = write_checkpoint(num_layers=2, branches=False)
    corpus = AudioCorpus.from_source(audio_dir)
    config = kmeans_config(max_steps=10, eval_every=4, save_every=3)
    train_branches(ckpt, corpus, tmp_path / "a.pt", tmp_path / "wa", config, progress=False)
    config_b = kmeans_config(max_steps=10, eval_every=4, save_every=3, stop_after=5)
    part = train_branches(ckpt, corpus, tmp_path / "b.pt", tmp_path / "wb", config_b, progress=False)
    assert not part.finished and (tmp_path / "wb" / "kmeans.pt").is_file()

    def no_refit(*args, **kwargs):
        raise AssertionError("a resumed run must reuse work_dir/kmeans.pt")

    monkeypatch.setattr("daisy_upstream.training.kmeans_targets.fit_kmeans", no_refit)
    torch.manual_seed(1234)
    rest = train_branches(ckpt, corpus, tmp_path / "b.pt", tmp_path / "wb", config_b, progress=False)
    assert rest.finished and rest.step == 10
    a = torch.load(tmp_path / "a.pt", weights_only=True)["daisy"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["daisy"]
    assert torch.equal(a["targets"]["centroids"], b["targets"]["centroids"])
    for key, value in a["branches"].items():
        assert torch.equal(value, b["branches"][key]), key
    assert a["calibration"]["layer_entropy"] == b["calibration"]["layer_entropy"]
    # other k-means settings never resume this state
    with pytest.raises(ValueError, match="other settings or (data|audio).*clusters"):
        train_branches(
            ckpt, corpus, tmp_path / "c.pt", tmp_path / "wb", kmeans_config(max_steps=10, clusters=5), progress=False
        )


def test_kmeans_needs_no_cluster_head(audio_dir, tmp_path, kmeans_config, fast_config):
    # the authors' layout has per-layer heads instead of HuBERT's final_proj/label_embs_concat
    # (daisy_upstream.testing.authors_layout): model targets need a --teacher, k-means nothing
    atomic_torch_save(authors_layout(make_random_checkpoint(num_layers=2, branches=False)), tmp_path / "authors.pt")
    corpus = AudioCorpus.from_source(audio_dir)
    with pytest.raises(ValueError, match="give as teacher"):
        train_branches(
            tmp_path / "authors.pt", corpus, tmp_path / "o.pt", tmp_path / "w0", fast_config(), progress=False
        )
    result = train_branches(
        tmp_path / "authors.pt",
        corpus,
        tmp_path / "o.pt",
        tmp_path / "w",
        kmeans_config(max_steps=2, kmeans_layer=1),
        progress=False,
    )
    loaded = load_daisy_checkpoint(tmp_path / "o.pt")
    assert result.finished and loaded.layout == "daisy" and loaded.branches.num_classes == 6
    assert loaded.branches.branch_input == "hidden_states"  # the authors' heads were replaced


def test_cli_kmeans_options(write_checkpoint, audio_dir, tmp_path, capsys):
    from daisy_upstream.cli import main

    ckpt = write_checkpoint(num_layers=2, branches=False)
    base = [
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
        "--heldout-fraction",
        "0.2",
        "--no-progress",
    ]
    for extra, message in (
        (["--targets", "kmeans", "--clusters", "4"], "needs kmeans_layer (the layer K) and clusters (N)"),
        (["--clusters", "4"], "go with targets 'kmeans'"),
        (
            ["--targets", "kmeans", "--kmeans-layer", "3", "--clusters", "4", "--kmeans-batch-frames", "40"],
            "kmeans_layer must be in 1..2",
        ),
    ):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("daisy train-branches: error: ") and message in err and len(err.splitlines()) == 1
    assert (
        main(
            base
            + [
                "--targets",
                "kmeans",
                "--kmeans-layer",
                "1",
                "--clusters",
                "4",
                "--kmeans-batch-frames",
                "40",
                "--kmeans-passes",
                "2",
            ]
        )
        == 0
    )
    facts = torch.load(tmp_path / "o.pt", weights_only=True)["daisy"]["targets"]
    assert facts["layer"] == 1 and facts["passes"] == 2
    # two passes: every valid layer-1 frame of the training audio twice
    train_set = AudioCorpus.from_source(audio_dir).split(0.2, 0)[0]
    backbone = EarlyExitModel(load_daisy_checkpoint(ckpt).model, None)
    one_pass = sum(len(x) for x in layer_frames(backbone, train_set, 1, 2.0, 0, torch.device("cpu")))
    assert facts["frames"] == 2 * one_pass


def test_kmeans_frames_come_through_the_loader_the_same_with_workers(write_checkpoint, audio_dir):
    """Two passes in epochs 0 and 1's batch orders: two decoding processes hand k-means the
    same frames, in the same order, as decoding in this process."""
    backbone = EarlyExitModel(load_daisy_checkpoint(write_checkpoint(num_layers=2, branches=False)).model, None)
    corpus = AudioCorpus.from_source(audio_dir)
    here, loaded = (
        [x for x in layer_frames(backbone, corpus, 2, 2.0, 3, torch.device("cpu"), passes=2, workers=workers)]
        for workers in (0, 2)
    )
    assert len(here) == 2 * len(corpus.batches(2.0)) and len(here) == len(loaded)
    assert all(np.array_equal(a, b) for a, b in zip(here, loaded))
    assert not all(np.array_equal(a, b) for a, b in zip(here[: len(here) // 2], here[len(here) // 2 :]))  # 2 orders


# -- several output blocks (wav2vec 2.0's codebook groups) ------------------------------------


def test_group_entropy_is_the_mean_of_each_blocks_entropy():
    logits = torch.randn(2, 5, 3 * 4) * 3
    blocks = [frame_entropy(logits[..., g * 4 : (g + 1) * 4]) for g in range(3)]
    assert torch.allclose(group_entropy(logits, 3), torch.stack(blocks).mean(0))
    assert torch.equal(group_entropy(logits, 1), frame_entropy(logits))
    uniform = torch.zeros(1, 1, 2 * 8)
    assert group_entropy(uniform, 2).item() == pytest.approx(math.log(8))


def test_branch_loss_is_the_mean_ce_over_groups():
    branches = ExitBranches(2, 8, num_classes=5, groups=3)
    features = torch.randn(2, 7, 8)
    labels = torch.randint(0, 5, (7, 3))
    ce, hits = BranchLoss(branches)(features, labels)
    for k in range(2):
        logits = branches[k](features[k])
        per_group = [F.cross_entropy(logits[:, g * 5 : (g + 1) * 5], labels[:, g]) for g in range(3)]
        assert ce[k].item() == pytest.approx(torch.stack(per_group).mean().item(), rel=1e-5)
        predicted = torch.stack([logits[:, g * 5 : (g + 1) * 5].argmax(-1) for g in range(3)], dim=1)
        assert int(hits[k]) == int((predicted == labels).sum())


def test_grouped_branches_load_in_the_upstream_and_exit_on_the_group_mean(tmp_path):
    state = make_random_checkpoint(num_layers=3, branches=False)
    torch.manual_seed(0)
    branches = ExitBranches(3, 32, num_classes=6, groups=2)
    for k, branch in enumerate(branches):  # deeper branches sharper: exits at different layers
        branch.weight.data *= 1.0 + 6.0 * k
    path = tmp_path / "g.pt"
    atomic_torch_save(
        with_branches(
            state,
            branches,
            {"layer_entropy": [1.7, 1.2, 0.6], "dataset": "given"},
            targets={"kind": "model", "groups": 2},
        ),
        path,
    )
    loaded = load_daisy_checkpoint(path)
    assert loaded.branches.groups == 2 and loaded.branches.num_classes == 6
    wavs = waves(8000, 12000, 16000, 10000, seed=2)
    full = daisy_hubert_local(str(path), model_config={"strategy": "full"}).run(wavs)
    expected = torch.zeros(4, 2)  # per row and layer: the mean over groups of each block's entropy
    with torch.no_grad():
        for row in range(4):
            n = int(full.lengths[row])
            for k in (1, 2):
                logits = branches[k - 1](full.hidden_states[k][row, :n])
                expected[row, k - 1] = torch.stack(
                    [frame_entropy(logits[:, g * 6 : (g + 1) * 6]).mean() for g in range(2)]
                ).mean()
    # tau midway between the middle two rows' layer-1 entropies: two rows stop at layer 1, the
    # others later. Not the median itself: that is one row's own value, and the upstream's batched
    # forward computes it ~1e-7 apart (either side, by torch release), so that row's exit was a coin
    # toss (it exited at 1 on torch 2.11).
    middle = expected[:, 0].sort().values[1:3]
    tau = float(middle.mean())
    assert (expected - tau).abs().min() > 1e-5  # every decision is clear of rounding
    out = daisy_hubert_local(str(path), model_config={"tau": tau})(wavs)
    for row in range(4):
        below = [k for k in (1, 2) if expected[row, k - 1] < tau]
        exit_layer = below[0] if below else 3
        assert int(out["exit_layers"][row]) == exit_layer
        checked = min(exit_layer, 2)
        assert torch.allclose(out["entropies"][row, :checked], expected[row, :checked], rtol=1e-4)
    assert len(set(out["exit_layers"].tolist())) > 1, out["exit_layers"]  # the rows exit apart
    with pytest.raises(ValueError, match="not 5 equal output blocks"):
        ExitBranches.from_state_dict(branches.state_dict(), 3, groups=5)


# -- wav2vec 2.0's quantizer codes ------------------------------------------------------------


def tiny_wav2vec2(tmp_path, normalize=False):
    """A random wav2vec 2.0 in s3prl's converted format {task_cfg, model_cfg, model_weight}
    (s3prl upstream/wav2vec2/convert.py:29-38; fields of Wav2Vec2Config, wav2vec2_model.py:2104+;
    the quantizer exists iff quantize_targets, as in the released Base/Large pretraining configs,
    with latent_groups G / latent_vars V, wav2vec2_model.py:2408-2420)."""
    from s3prl.upstream.utils import merge_with_parent
    from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model

    model_cfg = {
        "encoder_layers": 2,
        "encoder_embed_dim": 32,
        "encoder_ffn_embed_dim": 64,
        "encoder_attention_heads": 2,
        "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
        "conv_pos": 16,
        "conv_pos_groups": 4,
        "final_dim": 16,
        "latent_groups": 2,
        "latent_vars": 8,
        "latent_temp": [2.0, 0.5, 0.999995],
        "quantize_targets": True,
    }
    torch.manual_seed(0)
    model = Wav2Vec2Model(merge_with_parent(Wav2Vec2Config, dict(model_cfg))).eval()
    path = tmp_path / "w2v2.pt"
    atomic_torch_save(
        {
            "task_cfg": {"normalize": normalize, "sample_rate": 16000},
            "model_cfg": model_cfg,
            "model_weight": model.state_dict(),
        },
        path,
    )
    return model, path


def test_quantizer_codes_are_the_per_group_argmax_on_stock_frames(tmp_path):
    from s3prl.upstream.wav2vec2.hubconf import wav2vec2_local

    model, path = tiny_wav2vec2(tmp_path)
    targets = QuantizerTargets(model)
    assert targets.groups == 2 and targets.num_classes == 8
    wavs = waves(8000, 12345, 8000, seed=4)
    codes = targets.codes(wavs)
    stock = wav2vec2_local(ckpt=str(path)).eval()
    for wav, mine in zip(wavs, codes):
        with torch.no_grad():
            # independent: the quantizer's logits (weight_proj of the layer-normed CNN
            # features, the unmasked input of wav2vec2_model.py:2648-2650), argmax per group
            cnn = model.layer_norm(model.feature_extractor(wav[None]).transpose(1, 2))
            logits = model.quantizer.weight_proj(cnn).view(1, cnn.size(1), 2, 8)
            hidden = stock([wav])["hidden_states"]
        assert torch.equal(mine, logits.argmax(-1)[0])
        assert mine.shape == (hidden[0].size(1), 2)  # one code per group for every stock frame
    lengths = torch.tensor([c.size(0) for c in codes])
    labels = targets.labels(torch.zeros(2, int(lengths.sum()), 32), wavs, lengths)
    assert torch.equal(labels, torch.cat(codes))  # valid frames row after row, like the features
    with pytest.raises(ValueError, match="gave 24 frames for an utterance with 25"):
        targets.labels(torch.zeros(2, 25, 32), wavs[:1], torch.tensor([25]))
    assert QuantizerTargets(model).record()["groups"] == 2
    model.quantizer.train()
    with pytest.raises(ValueError, match="train mode"):
        targets.codes(wavs)
    model.quantizer = None
    with pytest.raises(ValueError, match="no quantizer.*--targets kmeans"):
        QuantizerTargets(model)


def test_contrastive_targets_are_the_best_codeword_of_s3prls_own_scores(tmp_path):
    """The default wav2vec 2.0 target: per group, the code of the codeword that s3prl's
    ``compute_preds`` (cosine of final_proj(h^L) with project_q of each candidate / logit_temp)
    ranks first among every codeword of ``quantizer.codebook()``."""
    model, _ = tiny_wav2vec2(tmp_path)
    targets = ContrastiveTargets(model)
    assert (targets.groups, targets.num_classes, targets.kind) == (2, 8, "model")
    torch.manual_seed(1)
    last = torch.randn(300, 32)  # more frames than one scoring chunk
    labels = targets.labels(torch.stack([torch.zeros(300, 32), last]), [], torch.tensor([300]))
    with torch.no_grad():
        candidates = model.project_q(model.quantizer.codebook())  # (64, final_dim), product order
        x = model.final_proj(last)[None]  # (1, N, F)
        y = candidates[0].expand(1, 300, -1)
        negatives = candidates[1:, None, None, :].expand(-1, 1, 300, -1)
        best = model.compute_preds(x, y, negatives).argmax(dim=0)[0]  # (N,) codeword row
    # each codeword row's entries of the flat vars table: group g's code + g * V (s3prl's own indices)
    rows = model.quantizer.get_codebook_indices().view(64, 2)
    assert torch.equal(labels, rows[best] - torch.tensor([0, 8]))
    assert labels.shape == (300, 2) and len(set(map(tuple, labels.tolist()))) > 1
    assert "last layer" in targets.record()["source"]


def test_model_targets_default_to_the_last_layer_for_wav2vec2(tmp_path, write_checkpoint):
    _, path = tiny_wav2vec2(tmp_path)
    loaded, state = load_frozen_model(path, need_head=False)
    assert isinstance(model_targets(loaded, state, "w2v2"), ContrastiveTargets)
    quantizer = model_targets(loaded, state, "w2v2", "quantizer")
    assert isinstance(quantizer, QuantizerTargets) and quantizer.record()["kind"] == "quantizer"
    hubert, state = load_frozen_model(write_checkpoint(num_layers=2, branches=False))
    with pytest.raises(ValueError, match="--targets quantizer is wav2vec 2.0's"):
        model_targets(hubert, state, "h", "quantizer")


def test_kmeans_targets_under_two_ddp_processes(write_checkpoint, audio_dir, tmp_path):  # noqa: F811
    """torchrun, 2 gloo processes on CPU: rank 0 clusters once (work_dir/kmeans.pt), rank 1 reads
    it, the branches train with DDP; the centroids equal a 1-process run's (same training audio,
    same stream order)."""
    import os
    import subprocess
    import sys

    ckpt = write_checkpoint(num_layers=2, branches=False)
    args = [
        "train-branches",
        "-k",
        str(ckpt),
        "--audio",
        str(audio_dir),
        "--max-steps",
        "2",
        "--batch-seconds",
        "2",
        "--heldout-fraction",
        "0.2",
        "--no-progress",
        "--targets",
        "kmeans",
        "--kmeans-layer",
        "1",
        "--clusters",
        "4",
        "--kmeans-batch-frames",
        "40",
        "--eval-every",
        "0",
    ]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "daisy_upstream",
            *args,
            "--out",
            str(tmp_path / "ddp.pt"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stderr.count("k-means: 4 clusters of layer 1") == 1  # one rank clustered
    from daisy_upstream.cli import main

    assert main(args + ["--out", str(tmp_path / "one.pt")]) == 0
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)["daisy"]
    one = torch.load(tmp_path / "one.pt", weights_only=True)["daisy"]
    assert torch.equal(ddp["targets"]["centroids"], one["targets"]["centroids"])
    assert ddp["provenance"]["stage1"]["steps"] == 2
