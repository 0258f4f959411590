"""s3prl's real runner, end to end on CPU, with a tiny DAISY checkpoint and generated audio.

Every run is a subprocess of an unmodified s3prl 0.4.18 entry point: the console script
``daisy-run-downstream`` or ``python -m s3prl.run_downstream`` (the start-up hook), with the
checkout first on PYTHONPATH. Each of the four MiniSUPERB tasks trains a few steps through
one entry point and is evaluated (``-m evaluate -e``) through the other, so every task and
both modes pass through both entry points. ``import s3prl.hub`` costs ~10 s per process, so
the module keeps the number of processes small.

The tiny checkpoint (3 layers, width 32) has branches whose entropy falls with depth and a
calibration giving tau = 1.4 nats at rho 1.0: on the generated audio, utterances exit at layer
1 or 2, so the exit histogram has more than one non-empty layer.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pytest
import soundfile as sf
import torch

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.factory.random_hubert import make_random_checkpoint

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "s3prl_configs"
OVERRIDES = REPO / "downstream_overrides"
BIN = Path(sys.executable).parent
SR = 16000
NUM_LAYERS = 3
# tau = (max + min) / 2 * rho: 1.4 nats at rho 1.0, 0.98 at rho 0.7
LAYER_ENTROPY = [2.0, 1.4, 0.8]
UPSTREAM_CONFIG = CONFIGS / "upstream" / "daisy_{task}_rho1.0.yaml"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# ---------------------------------------------------------------------------------------
# generated audio in each task's layout
# ---------------------------------------------------------------------------------------
def speechlike(seconds: float, seed: int, noise: float = 0.02) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal with a wandering pitch, plus noise."""
    rng = np.random.default_rng(seed)
    n = int(SR * seconds)
    t = np.arange(n) / SR
    f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(h * phase) / h for h in range(1, 8))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6)))
    x = voiced * envelope + noise * rng.standard_normal(n)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, SR)
    return path


WORDS = ["HELLO", "WORLD", "EARLY", "EXIT", "SPEECH", "MODEL", "LAYER", "QUIET"]


def make_librispeech(root: Path) -> Dict[str, int]:
    """``root/LibriSpeech/<split>/<spk>/<ch>/<spk>-<ch>-<n>.flac`` + trans.txt + bucket csvs.

    Returns the number of utterances per split.
    """
    libri = root / "LibriSpeech"
    buckets = root / "len_for_bucket"
    buckets.mkdir(parents=True)
    sizes = {"train-clean-100": 4, "dev-clean": 2, "test-clean": 2}
    seed = 0
    for split, count in sizes.items():
        rows, lines = ["file_path,length"], []
        for n in range(count):
            seed += 1
            audio = speechlike(1.0 + 0.25 * n, seed, noise=[0.01, 0.2][n % 2])
            rel = f"{split}/19/198/19-198-{n:04d}.flac"
            write_wav(libri / rel, audio)
            rows.append(f"{rel},{len(audio)}")
            lines.append(f"19-198-{n:04d} {WORDS[seed % 8]} {WORDS[(seed * 3) % 8]}")
        (libri / split / "19" / "198" / "19-198.trans.txt").write_text("\n".join(lines) + "\n")
        (buckets / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return sizes


def make_voxceleb1(root: Path, train_per_speaker: int = 2, speakers: int = 4) -> Dict[str, int]:
    """``root/dev/wav/idNNNNN/<video>/<n>.wav`` + ``iden_split.txt`` (1 train, 2 dev, 3 test)."""
    lines: List[str] = []
    seed = 100
    for s in range(speakers):
        spk = f"id{10001 + s}"
        for n in range(train_per_speaker + 2):
            seed += 1
            rel = f"{spk}/vid{n % 2}/{n:05d}.wav"
            write_wav(root / "dev" / "wav" / rel, speechlike(1.0 + 0.2 * (n % 3), seed, noise=[0.01, 0.3][n % 2]))
            part = 1 if n < train_per_speaker else (2 if n == train_per_speaker else 3)
            lines.append(f"{part} {rel}")
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    return {"train": speakers * train_per_speaker, "dev": speakers, "test": speakers}


def _write_scp(directory: Path, entries: Dict[str, Path]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "wav.scp").write_text("".join(f"{utt} {path}\n" for utt, path in sorted(entries.items())))


def make_voicebank(root: Path) -> Dict[str, int]:
    """``root/<split>/{noisy,clean}/wav.scp`` over 16 kHz wavs (noisy = clean + white noise)."""
    sizes = {"train": 4, "dev": 1, "test": 2}
    seed = 200
    for split, count in sizes.items():
        noisy, clean = {}, {}
        for n in range(count):
            seed += 1
            speech = speechlike(1.0 + 0.25 * n, seed, noise=0.0)
            noise = np.random.default_rng(seed).standard_normal(len(speech)).astype(np.float32)
            mix = speech + noise * (np.std(speech) / np.std(noise)) * 10 ** (-[5, 15][n % 2] / 20)
            utt = f"p{seed}_{n:03d}"
            clean[utt] = write_wav(root / "wav" / split / "clean" / f"{utt}.wav", speech)
            noisy[utt] = write_wav(root / "wav" / split / "noisy" / f"{utt}.wav", mix.astype(np.float32))
        _write_scp(root / split / "noisy", noisy)
        _write_scp(root / split / "clean", clean)
    return sizes


def make_librimix(root: Path) -> Dict[str, int]:
    """``root/<split>/{mix_clean,s1,s2}/wav.scp`` over 16 kHz two-speaker mixtures."""
    sizes = {"train": 4, "dev": 1, "test": 2}
    seed = 300
    for split, count in sizes.items():
        mix, s1, s2 = {}, {}, {}
        for n in range(count):
            seed += 2
            a = speechlike(1.0 + 0.25 * n, seed, noise=0.0)
            b = 0.7 * speechlike(1.0 + 0.25 * n, seed + 1, noise=0.0)
            utt = f"{seed}_{seed + 1}_{n}"
            s1[utt] = write_wav(root / "wav" / split / "s1" / f"{utt}.wav", a)
            s2[utt] = write_wav(root / "wav" / split / "s2" / f"{utt}.wav", b)
            mix[utt] = write_wav(root / "wav" / split / "mix_clean" / f"{utt}.wav", a + b)
        _write_scp(root / split / "mix_clean", mix)
        _write_scp(root / split / "s1", s1)
        _write_scp(root / split / "s2", s2)
    return sizes


# ---------------------------------------------------------------------------------------
# the runs
# ---------------------------------------------------------------------------------------
def sharpened_checkpoint(sharpen: float = 4.0) -> dict:
    """Deeper branches get sharper logits, so entropy falls with depth and exits vary."""
    state = make_random_checkpoint(num_layers=NUM_LAYERS, layer_entropy=LAYER_ENTROPY)
    for key, value in state["daisy"]["branches"].items():
        layer = int(key.split(".")[0]) + 1
        state["daisy"]["branches"][key] = value * (1.0 + sharpen * layer)
    return state


class Workspace:
    """Data, checkpoint and the commands of one test module."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ckpt = root / "daisy_tiny.pt"
        atomic_torch_save(sharpened_checkpoint(), self.ckpt)
        self.sizes = {
            "asr": make_librispeech(root / "asr"),
            "voxceleb1": make_voxceleb1(root / "sid"),
            "enhancement_stft": make_voicebank(root / "se"),
            "separation_stft": make_librimix(root / "ss"),
        }
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join([str(REPO), self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.env["XDG_CACHE_HOME"] = str(root / "cache")  # the VoxCeleb1 split cache
        self.env.pop("DAISY_UPSTREAM_AUTOLOAD", None)
        self.env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")

    # every task: its config, the data placeholders filled with -o, a few CPU-sized steps
    def task_overrides(self, task: str, steps: int) -> str:
        lr = (OVERRIDES / f"{task}.txt").read_text().strip()
        runner = (
            f"config.runner.total_steps={steps},,config.runner.save_step={steps},,"
            f"config.runner.eval_step={10 * steps},,config.runner.log_step={steps},,"
            "config.runner.gradient_accumulate_steps=1"
        )
        if task == "asr":
            data = root = self.root / "asr"
            data = (
                f"config.downstream_expert.datarc.libri_root={root / 'LibriSpeech'},,"
                f"config.downstream_expert.datarc.bucket_file={root / 'len_for_bucket'},,"
                f"config.downstream_expert.datarc.dict_path={CONFIGS / 'asr' / 'char.dict'},,"
                "config.downstream_expert.datarc.batch_size=2,,config.downstream_expert.datarc.num_workers=0,,"
                "config.downstream_expert.modelrc.project_dim=16,,"
                "config.downstream_expert.modelrc.RNNs.dim=[16,16]"
            )
        elif task == "voxceleb1":
            root = self.root / "sid"
            data = (
                f"config.downstream_expert.datarc.file_path={root},,"
                f"config.downstream_expert.datarc.meta_data={root / 'iden_split.txt'},,"
                "config.downstream_expert.datarc.train_batch_size=2,,config.downstream_expert.datarc.num_workers=0,,"
                "config.downstream_expert.datarc.max_timestep=None,,"
                "config.downstream_expert.modelrc.projector_dim=16"
            )
        else:
            root = self.root / ("se" if task == "enhancement_stft" else "ss")
            data = (
                f"config.downstream_expert.loaderrc.train_dir={root / 'train'},,"
                f"config.downstream_expert.loaderrc.dev_dir={root / 'dev'},,"
                f"config.downstream_expert.loaderrc.test_dir={root / 'test'},,"
                "config.downstream_expert.loaderrc.train_batchsize=2,,config.downstream_expert.loaderrc.num_workers=0,,"
                "config.downstream_expert.modelrc.rnn_layers=1,,config.downstream_expert.modelrc.hidden_size=16"
            )
        return ",,".join([lr, runner, data])

    def train_args(self, task: str, expdir: Path, steps: int, upstream: str = "daisy_hubert_local", extra: Sequence[str] = ()) -> List[str]:
        args = [
            "-m", "train", "-d", task, "-c", str(CONFIGS / task / "config.yaml"),
            "-u", upstream, "-k", str(self.ckpt),
            "-p", str(expdir), "-o", self.task_overrides(task, steps), "--device", "cpu",
        ]
        if upstream.startswith("daisy"):
            args += ["-g", str(UPSTREAM_CONFIG).format(task=task)]
        return args + list(extra)

    @staticmethod
    def evaluate_args(ckpt: Path, split: str, extra: Sequence[str] = ()) -> List[str]:
        return ["-m", "evaluate", "-e", str(ckpt), "-t", split, "--device", "cpu", *extra]

    def command(self, entry: str, args: Sequence[str]) -> List[str]:
        if entry == "console":
            return [str(BIN / "daisy-run-downstream"), *args]
        if entry == "module":
            return [sys.executable, "-m", "s3prl.run_downstream", *args]
        if entry == "path":  # s3prl's run_downstream.py run as a file
            package = Path(importlib.util.find_spec("s3prl").origin).parent
            return [sys.executable, str(package / "run_downstream.py"), *args]
        raise ValueError(entry)

    def run(self, entry: str, args: Sequence[str], ok: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            self.command(entry, args), cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if ok and proc.returncode != 0:
            raise AssertionError(f"{entry} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
        if not ok and proc.returncode == 0:
            raise AssertionError(f"{entry} {' '.join(args)} succeeded but should fail:\n{proc.stderr[-3000:]}")
        return proc


def load_runner_checkpoint(path: Path) -> dict:
    import argparse

    torch.serialization.add_safe_globals([argparse.Namespace])
    return torch.load(path, map_location="cpu", weights_only=True)


def spans_logged(stderr: str) -> List[str]:
    return [line.split("DAISY exit span", 1)[1].strip() for line in stderr.splitlines() if "DAISY exit span" in line]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("s3prl_e2e"))


# training utterances seen in `steps` optimizer steps of batch 2 (one epoch each here)
TASKS = {
    # task: (train entry, evaluate entry, steps, evaluation split, file the evaluation writes)
    "asr": ("console", "module", 2, "test-clean", "test-clean-noLM-hyp.ark"),
    "voxceleb1": ("module", "console", 4, "test", "test_predict.txt"),
    "enhancement_stft": ("console", "module", 2, "test", "test_metrics.txt"),
    "separation_stft": ("module", "console", 2, "test", "test_metrics.txt"),
}
_TRAINED: Dict[str, Path] = {}


def trained(ws: Workspace, task: str) -> Path:
    """Train `task` once per module (through its TASKS entry point); the final checkpoint."""
    if task not in _TRAINED:
        entry, _, steps, _, _ = TASKS[task]
        expdir = ws.root / "exp" / f"{task}_train"
        ws.run(entry, ws.train_args(task, expdir, steps))
        _TRAINED[task] = expdir / f"states-{steps}.ckpt"
    return _TRAINED[task]


@pytest.mark.parametrize("task", list(TASKS))
def test_train_then_evaluate(ws: Workspace, task: str) -> None:
    _, evaluate_entry, steps, split, output = TASKS[task]
    ckpt_path = trained(ws, task)
    state = load_runner_checkpoint(ckpt_path)
    counts = state["Featurizer"]["exit_counts"]
    assert counts.dtype == torch.long and counts.shape == (NUM_LAYERS,)
    # every training utterance is counted once: ASR buckets of 2 are halved into single
    # utterances by s3prl (>2000 samples), the others take batches of 2
    seen = steps * (1 if task == "asr" else 2)
    assert int(counts.sum()) == seen, counts
    assert state["Featurizer"]["weights"].shape == (NUM_LAYERS + 1,)

    proc = ws.run(evaluate_entry, ws.evaluate_args(ckpt_path, split))
    assert (ckpt_path.parent / output).is_file(), proc.stderr[-3000:]
    spans = spans_logged(proc.stderr)
    assert spans and "threshold" in spans[0] and str(counts.tolist()) in spans[0], proc.stderr[-3000:]


def test_exits_vary_and_statistics_drive_the_span(ws: Workspace) -> None:
    """The histogram of a real run has several layers; evaluation's span follows the counts."""
    ckpt_path = trained(ws, "voxceleb1")
    state = load_runner_checkpoint(ckpt_path)
    counts = state["Featurizer"]["exit_counts"].tolist()
    assert sum(1 for c in counts if c > 0) >= 2, f"exits did not vary: {counts}"

    edited = dict(state, Featurizer=dict(state["Featurizer"], exit_counts=torch.tensor([0, 1, 9])))
    edited_path = ckpt_path.parent / "edited.ckpt"
    torch.save(edited, edited_path)
    proc = ws.run("module", ws.evaluate_args(edited_path, "test"))
    # threshold 0.15 over [0, 1, 9]: only layer 3 qualifies
    assert spans_logged(proc.stderr)[0].startswith("[3] (strategy threshold from training exit counts [0, 1, 9]")

    # rho / span changed at evaluation time, no retraining: a 'min-max' config via -o
    minmax = ws.root / "minmax.yaml"
    minmax.write_text("rho: 1.0\nstrategy: min-max\n")
    proc = ws.run(
        "console", ws.evaluate_args(edited_path, "test", ["-o", f"args.upstream_model_config={minmax}"])
    )
    assert spans_logged(proc.stderr)[0].startswith("[2, 3] (strategy min-max")


def test_stock_upstream_still_trains_with_the_replaced_featurizer(ws: Workspace) -> None:
    """s3prl's own hubert_local, on the same checkpoint file, trains with DaisyFeaturizer in place."""
    expdir = ws.root / "exp" / "hubert_local"
    ws.run("module", ws.train_args("voxceleb1", expdir, 1, upstream="hubert_local"))
    featurizer = load_runner_checkpoint(expdir / "states-1.ckpt")["Featurizer"]
    assert set(featurizer) == {"weights"}  # the stock featurizer's state, no exit statistics
    assert featurizer["weights"].shape == (NUM_LAYERS + 1,)


def test_errors_say_what_to_do(ws: Workspace) -> None:
    expdir = ws.root / "exp" / "errors"
    # a misspelled upstream name: the hub suggests the right one (run_downstream.py as a file)
    proc = ws.run("path", ws.train_args("voxceleb1", expdir, 1, upstream="daisy_hubret_local"), ok=False)
    assert "did you mean daisy_hubert_local" in proc.stderr
    # no -k for daisy_hubert_local
    args = ws.train_args("voxceleb1", expdir, 1)
    del args[args.index("-k") : args.index("-k") + 2]
    proc = ws.run("module", args, ok=False)
    assert "pass -k" in proc.stderr
    # a -g file that does not exist
    args = ws.train_args("voxceleb1", expdir, 1)
    args[args.index("-g") + 1] = str(ws.root / "no_such_config.yaml")
    proc = ws.run("console", args, ok=False)
    assert "no_such_config.yaml does not exist" in proc.stderr and "-g" in proc.stderr
    # a statistics strategy with no statistics saved (a checkpoint whose counts are zero)
    state = load_runner_checkpoint(trained(ws, "voxceleb1"))
    zeroed = ws.root / "zeroed.ckpt"
    torch.save(dict(state, Featurizer=dict(state["Featurizer"], exit_counts=torch.zeros(NUM_LAYERS, dtype=torch.long))), zeroed)
    proc = ws.run("module", ws.evaluate_args(zeroed, "test"), ok=False)
    assert "needs exit statistics" in proc.stderr and "train the downstream" in proc.stderr


def test_two_process_gloo_histogram_equals_one_process(ws: Workspace) -> None:
    """torchrun --nproc_per_node 2 --backend gloo saves the 1-process run's histogram.

    SID's train loader shards with DistributedSampler: 8 training utterances split 4 + 4
    (8 is divisible by 2, so nothing is padded or duplicated); batch 2 per rank for 2 steps
    covers each rank's 4 exactly once, as the 1-process run's 4 steps of batch 2 cover all 8.
    Exits are decided per utterance (independent of batch-mates), and the random crop is off
    (max_timestep None), so both runs count the same utterances with the same exits.
    """
    single = load_runner_checkpoint(trained(ws, "voxceleb1"))["Featurizer"]["exit_counts"]
    expdir = ws.root / "exp" / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(BIN / "daisy-run-downstream"), *ws.train_args("voxceleb1", expdir, 2, extra=["--backend", "gloo"]),
    ]
    proc = subprocess.run(cmd, cwd=ws.root, env=ws.env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-6000:]
    saved = load_runner_checkpoint(expdir / "states-2.ckpt")
    assert saved.get("WorldSize") == 2  # it really ran distributed
    assert saved["Featurizer"]["exit_counts"].tolist() == single.tolist()
