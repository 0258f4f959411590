"""Stage 1 (branch training): targets, learning, exact resume, inputs and bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.core.checkpoint import load_daisy_checkpoint
from daisy_upstream.core.early_exit import EarlyExitModel
from daisy_upstream.core.policy import compute_tau, make_plan
from daisy_upstream.integration.hubconf import daisy_hubert_local
from daisy_upstream.testing import make_random_checkpoint, waves, write_wavs
from daisy_upstream.training.stage1 import ClusterTargets, Stage1Config, balanced_layer_lrs, train_branches


def fast_config(**overrides) -> Stage1Config:
    """Test settings: a large lr so a few dozen steps show learning on tiny data."""
    values = dict(
        lr=1e-2, batch_seconds=2.0, max_steps=12, heldout_fraction=0.2, eval_every=0, save_every=0, log_every=5
    )
    values.update(overrides)
    return Stage1Config(**values)


def test_targets_equal_direct_computation_on_s3prl_model(write_checkpoint):
    path = write_checkpoint(num_layers=2, branches=False, num_clusters=12)
    loaded = load_daisy_checkpoint(path)
    model = loaded.model
    targets = ClusterTargets(model, ["<s>", "<pad>", "</s>", "<unk>"] + [str(i) for i in range(12)])
    assert targets.num_classes == 12
    wavs = waves(6000, 9000, 4000, seed=1)
    backbone = EarlyExitModel(model, None)
    with torch.no_grad():
        out = backbone(wavs, make_plan([2], None))
        label_embs = model.label_embs_concat.split(model.num_classes, 0)[0]
        for i, wav in enumerate(wavs):
            # direct: s3prl's own forward and compute_nce, all 16 rows, then the 12 real ones
            x = model(wav[None], padding_mask=None, mask=False, features_only=True)["x"][0]
            proj = model.final_proj(x)
            pos = label_embs[torch.zeros(proj.size(0), dtype=torch.long)]
            negs = label_embs.unsqueeze(1).expand(-1, proj.size(0), -1)
            direct = model.compute_nce(proj, pos, negs)[:, 1:]  # (T, 16): column j = row j
            direct_real = direct[:, 4:]
            n = int(out.lengths[i])
            assert n == x.size(0)
            mine = targets.logits(out.hidden_states[2][i, :n])
            assert torch.allclose(mine, direct_real, atol=1e-4)
            top2 = direct_real.topk(2, dim=-1).values
            clear = (top2[:, 0] - top2[:, 1]) > 1e-3
            assert clear.float().mean() > 0.9
            assert torch.equal(targets(out.hidden_states[2][i, :n])[clear], direct_real.argmax(-1)[clear])


def test_loss_per_layer_falls_and_output_loads(write_checkpoint, audio_dir, tmp_path):
    ckpt = write_checkpoint(num_layers=3, branches=False)
    corpus = AudioCorpus.from_source(audio_dir)
    result = train_branches(
        ckpt, corpus, tmp_path / "out.pt", tmp_path / "work", fast_config(max_steps=30, eval_every=15), progress=False
    )
    assert result.finished and result.step == 30
    first, last = result.history[0], result.history[-1]
    assert first["step"] == 0 and last["step"] == 30
    for k in range(3):
        assert last["ce"][k] < 0.9 * first["ce"][k], (first["ce"], last["ce"])
    assert (tmp_path / "work" / "tb").is_dir() and any((tmp_path / "work" / "tb").iterdir())
    # the output is a DAISY checkpoint with a held-out calibration the upstream uses
    loaded = load_daisy_checkpoint(tmp_path / "out.pt")
    assert loaded.layout == "daisy" and loaded.branches.num_classes == 20
    entropy = loaded.calibration["layer_entropy"]
    assert len(entropy) == 3 and loaded.calibration["num_utterances"] == 2
    # the one calibration record (the calibrate YAML's keys), not a dict of stage 1's own
    assert set(loaded.calibration) >= {"e_max", "e_min", "tau_for_rho", "layer_std", "linear_fit", "stage1_steps"}
    assert loaded.calibration["linear_fit"]["r2"] <= 1.0 and "linear_fit_r2" not in loaded.calibration
    upstream = daisy_hubert_local(str(tmp_path / "out.pt"), model_config={"rho": 0.76})
    assert upstream.tau == pytest.approx(compute_tau(entropy, 0.76))


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_resume_equals_uninterrupted(write_checkpoint, audio_dir, tmp_path, schedule):
    ckpt = write_checkpoint(num_layers=2, branches=False)
    corpus = AudioCorpus.from_source(audio_dir)
    # 4 training batches per epoch: 10 steps cross two epoch boundaries
    config = fast_config(max_steps=10, eval_every=4, save_every=3, lr_schedule=schedule)
    train_branches(ckpt, corpus, tmp_path / "a.pt", tmp_path / "wa", config, progress=False)
    config_b = fast_config(max_steps=10, eval_every=4, save_every=3, stop_after=5, lr_schedule=schedule)
    part = train_branches(ckpt, corpus, tmp_path / "b.pt", tmp_path / "wb", config_b, progress=False)
    assert not part.finished and part.step == 5 and not (tmp_path / "b.pt").exists()
    torch.manual_seed(1234)  # a different global RNG state must not matter
    rest = train_branches(ckpt, corpus, tmp_path / "b.pt", tmp_path / "wb", config_b, progress=False)
    assert rest.finished and rest.step == 10
    a = torch.load(tmp_path / "a.pt", weights_only=True)["daisy"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["daisy"]
    for key, value in a["branches"].items():
        assert torch.equal(value, b["branches"][key]), key
    assert a["calibration"]["layer_entropy"] == b["calibration"]["layer_entropy"]


def test_a_state_from_more_gpus_resumes_on_fewer(write_checkpoint, audio_dir, tmp_path, monkeypatch):
    """Older states held ``torch.cuda.get_rng_state_all()``: one state per visible GPU
    (torch/cuda/random.py: a list over ``range(device_count())``), which ``set_rng_state_all``
    restores by device index, so a state from 8 GPUs failed on a machine with fewer. Stage 1
    draws nothing from the CUDA RNG: the state keeps none and ignores an old one."""
    from daisy_upstream.core.branches import ExitBranches
    from daisy_upstream.training.distributed import default_device
    from daisy_upstream.training.stage1_state import load_state

    ckpt = write_checkpoint(num_layers=2, branches=False)
    corpus = AudioCorpus.from_source(audio_dir)
    config = fast_config(max_steps=4, stop_after=2)
    train_branches(ckpt, corpus, tmp_path / "a.pt", tmp_path / "w", config, device="cpu", progress=False)
    state_path = tmp_path / "w" / "state.pt"
    state = torch.load(state_path, weights_only=True)
    assert set(state["rng"]) == {"torch", "python"}
    state["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8) for _ in range(8)]  # saved on 8 GPUs
    atomic_torch_save(state, state_path)

    def one_gpu_only(states):  # what torch does with 8 states and 1 device
        raise RuntimeError("CUDA error: invalid device ordinal")

    with monkeypatch.context() as gpu:  # only around the load: the optimizer would probe CUDA
        gpu.setattr(torch.cuda, "is_available", lambda: True)
        gpu.setattr(torch.cuda, "device_count", lambda: 1)
        gpu.setattr(torch.cuda, "set_rng_state_all", one_gpu_only)
        gpu.setattr(torch.cuda, "get_rng_state_all", one_gpu_only)
        assert default_device() == "cuda"  # the --device default where a GPU is visible
        branches = ExitBranches(2, 32, 20)
        optimizer = torch.optim.AdamW([{"params": list(b.parameters())} for b in branches])
        progress = load_state(state_path, state["fingerprint"], branches, optimizer)
    assert progress.step == 2
    rest = train_branches(ckpt, corpus, tmp_path / "a.pt", tmp_path / "w", config, device="cpu", progress=False)
    assert rest.step == 4 and rest.finished


def test_balanced_layer_lrs_scale_inversely_with_feature_norm():
    features = torch.randn(3, 50, 8)
    features = features / features.norm(dim=-1, keepdim=True)  # every frame has norm 1
    features = features * torch.tensor([4.0, 2.0, 0.5]).view(3, 1, 1)
    assert balanced_layer_lrs(features, 1e-3) == pytest.approx([1e-3, 2e-3, 8e-3])
    with pytest.raises(ValueError, match="N>0"):
        balanced_layer_lrs(torch.zeros(3, 0, 8), 1e-3)
    with pytest.raises(ValueError, match="all zero"):
        balanced_layer_lrs(torch.zeros(3, 5, 8), 1e-3)


@pytest.mark.parametrize("balance", [True, False])
def test_branch_learning_rates_in_the_saved_optimizer(write_checkpoint, audio_dir, tmp_path, balance):
    # pre-LayerNorm: the residual stream's norm differs by layer. In a post-LayerNorm model every
    # layer ends in a LayerNorm, so the norms agree to rounding and whether the rates differ was
    # chance (on torch 2.11 two of three came out equal)
    ckpt = write_checkpoint(num_layers=3, branches=False, layer_norm_first=True)
    corpus = AudioCorpus.from_source(audio_dir)
    config = fast_config(max_steps=2, stop_after=1, balance_lr=balance)
    train_branches(ckpt, corpus, tmp_path / "a.pt", tmp_path / "w", config, progress=False)
    groups = torch.load(tmp_path / "w" / "state.pt", weights_only=True)["optimizer"]["param_groups"]
    lrs = [group["lr"] for group in groups]
    assert len(lrs) == 3 and min(lrs) == pytest.approx(config.lr)  # the largest features keep lr
    if balance:  # the layers differ in norm: the rates differ, by more than rounding
        assert len(set(round(v, 6) for v in lrs)) == 3
    else:
        assert lrs == [config.lr] * 3


def test_linear_schedule_decays_each_branch_rate_to_zero(write_checkpoint, audio_dir, tmp_path):
    ckpt = write_checkpoint(num_layers=2, branches=False)
    corpus = AudioCorpus.from_source(audio_dir)
    config = fast_config(max_steps=4, stop_after=3, lr_schedule="linear")
    train_branches(ckpt, corpus, tmp_path / "a.pt", tmp_path / "w", config, progress=False)
    groups = torch.load(tmp_path / "w" / "state.pt", weights_only=True)["optimizer"]["param_groups"]
    for group in groups:  # the third step (step index 2 of 4) ran at half the start rate
        assert group["lr"] == pytest.approx(group["base_lr"] * 0.5)
    assert min(group["base_lr"] for group in groups) == pytest.approx(config.lr)
    with pytest.raises(ValueError, match="unknown lr_schedule 'cosine'"):
        fast_config(lr_schedule="cosine").validate()


def test_resume_with_other_settings_is_refused(write_checkpoint, audio_dir, tmp_path):
    ckpt = write_checkpoint(num_layers=2, branches=False)
    corpus = AudioCorpus.from_source(audio_dir)
    train_branches(
        ckpt, corpus, tmp_path / "a.pt", tmp_path / "w", fast_config(max_steps=2, stop_after=1), progress=False
    )
    with pytest.raises(ValueError, match="other settings or data.*lr"):
        train_branches(
            ckpt, corpus, tmp_path / "a.pt", tmp_path / "w", fast_config(max_steps=2, lr=1e-3), progress=False
        )


def test_no_label_embs_concat_is_a_clear_error(audio_dir, tmp_path):
    state = make_random_checkpoint(num_layers=2, branches=False)
    del state["model_weight"]["label_embs_concat"]
    atomic_torch_save(state, tmp_path / "ft.pt")
    corpus = AudioCorpus.from_source(audio_dir)
    with pytest.raises(ValueError, match="no label_embs_concat.*not a fine-tuned one"):
        train_branches(tmp_path / "ft.pt", corpus, tmp_path / "o.pt", tmp_path / "w", fast_config(), progress=False)


def test_daisy_and_authors_inputs(write_checkpoint, audio_dir, tmp_path):
    corpus = AudioCorpus.from_source(audio_dir)
    daisy = write_checkpoint("daisy.pt", num_layers=2, layer_entropy=[1.0, 0.5])
    old = torch.load(daisy, weights_only=True)["daisy"]["branches"]
    train_branches(daisy, corpus, tmp_path / "re.pt", tmp_path / "w1", fast_config(max_steps=2), progress=False)
    new = torch.load(tmp_path / "re.pt", weights_only=True)
    assert not torch.equal(new["daisy"]["branches"]["0.weight"], old["0.weight"])
    assert new["daisy"]["calibration"]["layer_entropy"] != [1.0, 0.5]

    plain = make_random_checkpoint(num_layers=2, branches=False)
    authors = dict(plain)
    weights = {k: v for k, v in plain["model_weight"].items() if not k.startswith("final_proj.")}
    for i in range(2):
        weights[f"final_proj.{i}.weight"] = torch.randn(20, 32)
        weights[f"final_proj.{i}.bias"] = torch.randn(20)
    authors["model_weight"] = weights
    atomic_torch_save(authors, tmp_path / "authors.pt")
    atomic_torch_save(plain, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="authors' layout.*give as teacher"):
        train_branches(
            tmp_path / "authors.pt", corpus, tmp_path / "x.pt", tmp_path / "w2", fast_config(), progress=False
        )
    train_branches(
        tmp_path / "authors.pt",
        corpus,
        tmp_path / "x.pt",
        tmp_path / "w3",
        fast_config(max_steps=2),
        teacher=tmp_path / "plain.pt",
        progress=False,
    )
    loaded = load_daisy_checkpoint(tmp_path / "x.pt")  # heads replaced, final_proj restored
    assert loaded.layout == "daisy"
    assert torch.equal(loaded.model.final_proj.weight, plain["model_weight"]["final_proj.weight"])
    other = make_random_checkpoint(num_layers=2, branches=False, seed=5)
    atomic_torch_save(other, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not the same backbone"):
        train_branches(
            tmp_path / "authors.pt",
            corpus,
            tmp_path / "y.pt",
            tmp_path / "w4",
            fast_config(),
            teacher=tmp_path / "other.pt",
            progress=False,
        )


def test_cli_train_branches(write_checkpoint, audio_dir, tmp_path, capsys):
    from daisy_upstream.cli import main

    ckpt = write_checkpoint(num_layers=2, branches=False)
    out = tmp_path / "cli.pt"
    args = [
        "train-branches",
        "-k",
        str(ckpt),
        "--audio",
        str(audio_dir),
        "--out",
        str(out),
        "--max-steps",
        "3",
        "--batch-seconds",
        "2",
        "--heldout-fraction",
        "0.2",
        "--no-progress",
        "--stop-after",
        "2",
    ]
    assert main(args) == 0
    assert "not finished" in capsys.readouterr().out and not out.exists()
    assert main(args[:-2]) == 0
    text = capsys.readouterr().out
    assert "trained 3/3 steps" in text and "tau(rho=0.7)" in text and out.is_file()
    assert main(args[:-2]) == 2  # an existing --out is a user error: one line, exit 2
    err = capsys.readouterr().err
    assert err.startswith("daisy train-branches: error: ") and "pass --force" in err


def test_cli_heldout_audio_fp16_and_provenance(write_checkpoint, audio_dir, tmp_path, capsys):
    from daisy_upstream.cli import main

    ckpt = write_checkpoint(num_layers=2, branches=False)
    raw = torch.load(ckpt, weights_only=True)
    raw["provenance"] = {"recipe": "pretraining record"}
    atomic_torch_save(raw, tmp_path / "backbone.pt")
    heldout = tmp_path / "heldout"
    write_wavs(heldout, [0.5, 0.6])
    out = tmp_path / "half.pt"
    base = [
        "train-branches",
        "-k",
        str(tmp_path / "backbone.pt"),
        "--audio",
        str(audio_dir),
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--batch-seconds",
        "2",
        "--no-progress",
    ]
    assert main(base + ["--heldout-audio", str(heldout), "--heldout-fraction", "0.2"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(base + ["--heldout-audio", str(heldout), "--fp16"]) == 0
    saved = torch.load(out, weights_only=True)
    assert saved["model_weight"]["final_proj.weight"].dtype == torch.float16
    assert saved["daisy"]["branches"]["0.weight"].dtype == torch.float16
    calibration = saved["daisy"]["calibration"]
    assert calibration["num_utterances"] == 2 and calibration["dataset"] == AudioCorpus.from_source(heldout).name
    made = saved["daisy"]["provenance"]
    assert made["command"].startswith("daisy train-branches -k ") and "--fp16" in made["command"]
    assert made["backbone"] == {"recipe": "pretraining record"} and made["stage1"]["steps"] == 2
    loaded = load_daisy_checkpoint(out)
    assert loaded.branches[0].weight.dtype == torch.float32
    assert next(loaded.model.parameters()).dtype == torch.float32


def test_noise_augmentation_is_deterministic_and_changes_training(write_checkpoint, audio_dir, tmp_path):
    ckpt = write_checkpoint(num_layers=2, branches=False)
    corpus = AudioCorpus.from_source(audio_dir)
    runs = {}
    for name, prob in (("clean", 0.0), ("noisy_a", 1.0), ("noisy_b", 1.0)):
        train_branches(
            ckpt,
            corpus,
            tmp_path / f"{name}.pt",
            tmp_path / f"w_{name}",
            fast_config(max_steps=3, noise_prob=prob),
            progress=False,
        )
        runs[name] = torch.load(tmp_path / f"{name}.pt", weights_only=True)["daisy"]["branches"]
    assert all(torch.equal(runs["noisy_a"][k], runs["noisy_b"][k]) for k in runs["clean"])
    assert not all(torch.equal(runs["noisy_a"][k], runs["clean"][k]) for k in runs["clean"])
    with pytest.raises(ValueError, match=r"noise_prob must be in \[0, 1\]"):
        fast_config(noise_prob=2.0).validate()


def test_ddp_two_process_gloo_smoke(write_checkpoint, audio_dir, tmp_path):
    import subprocess
    import sys

    ckpt = write_checkpoint(num_layers=2, branches=False)
    env = {**os.environ, "DAISY_DDP_BACKEND": "gloo", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
        "daisy_upstream",
        "train-branches",
        "-k",
        str(ckpt),
        "--audio",
        str(audio_dir),
        "--out",
        str(tmp_path / "ddp.pt"),
        "--max-steps",
        "4",
        "--batch-seconds",
        "1.5",
        "--heldout-fraction",
        "0.2",
        "--no-progress",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("2 processes train on the CPU (gloo)") == 1  # said once, by rank 0
    assert load_daisy_checkpoint(tmp_path / "ddp.pt").layout == "daisy"


_SHARDED_EVALUATION = """
import atexit
import sys
from pathlib import Path
import torch
import torch.distributed as dist
from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.core.checkpoint import load_daisy_checkpoint
from daisy_upstream.core.early_exit import EarlyExitModel
from daisy_upstream.training.calibration import layer_entropies
from daisy_upstream.training.distributed import init_distributed
from daisy_upstream.training.targets import ClusterTargets, evaluate_branches

# atexit runs last-in first-out: this runs after the handlers init_distributed registers. Each
# rank writes its own file: two ranks printing to one pipe interleave their lines.
atexit.register(lambda: Path(f"{sys.argv[3]}.{world}.{rank}.exit").write_text(
    "alive" if dist.is_initialized() else "gone"))
rank, world, _ = init_distributed("cpu")
loaded = load_daisy_checkpoint(sys.argv[1])
backbone = EarlyExitModel(loaded.model, None).eval()
corpus = AudioCorpus.from_source(sys.argv[2])
dev = torch.device("cpu")
targets = ClusterTargets(loaded.model, torch.load(sys.argv[1], weights_only=True)["dictionaries_symbols"][0])
workers = int(sys.argv[4])
metrics = evaluate_branches(backbone, targets, loaded.branches.eval(), corpus, 1.4, dev, rank, world, workers)
entropies, keys, seconds = layer_entropies(backbone, loaded.branches, corpus, 1.4, dev, rank=rank, world=world,
                                           workers=workers)
torch.save({"metrics": metrics, "entropies": entropies, "keys": keys, "seconds": seconds},
           f"{sys.argv[3]}.{world}.{rank}.pt")
"""


def test_heldout_evaluation_and_calibration_split_over_two_processes(write_checkpoint, audio_dir, tmp_path):
    """Under torchrun every rank evaluates every 2nd batch (7 batches: 4 and 3) and the per-layer
    CE / agreement sums are all-reduced, the per-utterance entropies gathered in batch order:
    both ranks, each reading through two DataLoader workers, hold what one process without
    workers computes over all the batches."""
    import subprocess
    import sys

    ckpt = write_checkpoint(num_layers=2, sharpen=3.0)
    assert len(AudioCorpus.from_source(audio_dir).batches(1.4)) == 7
    script = tmp_path / "evaluate.py"
    script.write_text(_SHARDED_EVALUATION)
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "OMP_NUM_THREADS": "1",
        "DAISY_DDP_BACKEND": "gloo",
    }
    env.pop("WORLD_SIZE", None)
    args = [str(script), str(ckpt), str(audio_dir), str(tmp_path / "r")]
    for command, workers, procs in (
        ([sys.executable], "0", 1),
        ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], "2", 2),
    ):
        done = subprocess.run(command + args + [workers], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        # a group left to interpreter finalization aborts gloo's threads now and then
        for rank in range(procs):
            assert (tmp_path / f"r.{procs}.{rank}.exit").read_text() == "gone", done.stderr[-3000:]
    one = torch.load(tmp_path / "r.1.0.pt", weights_only=True)
    assert one["metrics"]["utterances"] == 10 and one["entropies"].shape == (10, 2)
    for rank in (0, 1):
        two = torch.load(tmp_path / f"r.2.{rank}.pt", weights_only=True)
        assert two["keys"] == one["keys"] and two["seconds"] == one["seconds"]
        assert torch.equal(two["entropies"], one["entropies"])  # the same rows, in the same order
        for name in ("frames", "utterances"):
            assert two["metrics"][name] == one["metrics"][name]
        for name in ("ce", "accuracy"):  # float64 sums added in another order
            assert two["metrics"][name] == pytest.approx(one["metrics"][name], rel=1e-12)


# --- issue 35: the work dir is train-branches' own, one run at a time, resumed only as saved ----


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None for p in root.rglob("*")}


def test_a_work_dir_of_the_users_files_is_refused_and_left_alone(write_checkpoint, audio_dir, tmp_path):
    """The audio folder, or a folder holding a user's ``state.pt``, was written into (state.pt
    then gave ``IndexError: pop from empty list``)."""
    ckpt = write_checkpoint(num_layers=2, branches=False)
    corpus = AudioCorpus.from_source(audio_dir)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "state.pt").write_bytes(b"my own state of things")
    for work, match in ((audio_dir, "holds the input"), (mine, "not a working folder of daisy train-branches")):
        before = _files(work)
        with pytest.raises(ValueError, match=f"--work-dir {work}.*{match}"):
            train_branches(ckpt, corpus, tmp_path / "o.pt", work, fast_config(max_steps=1), progress=False)
        assert _files(work) == before
    assert not (tmp_path / "o.pt").exists()


def test_a_foreign_state_in_its_own_work_dir_is_one_line(write_checkpoint, audio_dir, tmp_path):
    ckpt = write_checkpoint(num_layers=2, branches=False)
    corpus = AudioCorpus.from_source(audio_dir)
    config = fast_config(max_steps=2, stop_after=1)
    train_branches(ckpt, corpus, tmp_path / "o.pt", tmp_path / "w", config, progress=False)
    (tmp_path / "w" / "state.pt").write_bytes(b"\x80\x04 not a state")
    with pytest.raises(ValueError, match="state.pt is not a train-branches state"):
        train_branches(ckpt, corpus, tmp_path / "o.pt", tmp_path / "w", config, progress=False)


def test_a_second_run_on_a_work_dir_in_use_is_refused_at_start(write_checkpoint, audio_dir, tmp_path):
    """Two runs on one --out both trained the work dir until the final rename refused one."""
    import subprocess
    import sys

    import daisy_upstream.training.stage1_loop as loop
    from daisy_upstream.outputs import LOCK_FILE

    ckpt = write_checkpoint(num_layers=2, branches=False)
    corpus = AudioCorpus.from_source(audio_dir)
    config = fast_config(max_steps=3, stop_after=1)
    train_branches(ckpt, corpus, tmp_path / "o.pt", tmp_path / "w", config, progress=False)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # the first run, still training: its lock names a living process
        (tmp_path / "w" / LOCK_FILE).write_text(f"{__import__('socket').gethostname()} {sleeper.pid}\n")
        state = (tmp_path / "w" / "state.pt").read_bytes()
        with pytest.raises(ValueError, match="--work-dir .* is in use by another daisy train-branches run"):
            train_branches(ckpt, corpus, tmp_path / "o.pt", tmp_path / "w", config, progress=False)
        assert (tmp_path / "w" / "state.pt").read_bytes() == state
    finally:
        sleeper.kill()
        sleeper.wait()
    # in one process too: the lock is held while training
    seen, real_step = [], loop._step

    def step_and_try_again(run, item):  # a second call while the first one trains
        if not seen:
            with pytest.raises(ValueError, match="in use by another daisy train-branches run") as refused:
                train_branches(ckpt, corpus, tmp_path / "o.pt", tmp_path / "w", config, progress=False)
            seen.append(refused.value)
        return real_step(run, item)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "_step", step_and_try_again)
        train_branches(ckpt, corpus, tmp_path / "o.pt", tmp_path / "w", config, progress=False)
    assert seen


def test_a_resume_with_other_steps_is_refused_unless_told(write_checkpoint, audio_dir, tmp_path):
    """A resume with --max-steps below the saved step went on silently."""
    ckpt = write_checkpoint(num_layers=2, branches=False)
    corpus = AudioCorpus.from_source(audio_dir)
    out, work = tmp_path / "o.pt", tmp_path / "w"
    train_branches(ckpt, corpus, out, work, fast_config(max_steps=4, stop_after=2), progress=False)
    with pytest.raises(ValueError, match=r"other settings \(max_steps: saved 4 now 3\).*--resume-anyway"):
        train_branches(ckpt, corpus, out, work, fast_config(max_steps=3), progress=False)
    with pytest.raises(ValueError, match="at step 2, past the 1 steps asked for"):
        train_branches(ckpt, corpus, out, work, fast_config(max_steps=1), progress=False, resume_anyway=True)
    rest = train_branches(ckpt, corpus, out, work, fast_config(max_steps=3), progress=False, resume_anyway=True)
    assert rest.finished and rest.step == 3 and out.is_file()


def test_an_unavailable_device_is_one_line(write_checkpoint, audio_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    ckpt = write_checkpoint(num_layers=2, branches=False)
    corpus = AudioCorpus.from_source(audio_dir)
    with pytest.raises(ValueError, match="'cuda:3': CUDA is not available on this machine"):
        train_branches(ckpt, corpus, tmp_path / "o.pt", tmp_path / "w", fast_config(), device="cuda:3")
    assert not (tmp_path / "w").exists()
