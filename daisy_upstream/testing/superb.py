"""SUPERB tasks' data layouts, generated, and s3prl's runner on them (for end-to-end tests).

Each ``make_*`` writes a few generated utterances in the layout s3prl's downstream reads
(``s3prl/downstream/<task>/dataset.py``) and returns the number of utterances per split.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.audio.librispeech import LibriUtterance, write_librispeech_text
from daisy_upstream.testing.audio import speechlike, write_wav
from daisy_upstream.testing.checkpoints import make_random_checkpoint, sharpen_branches

__all__ = [
    "BIN",
    "LAYER_ENTROPY",
    "NUM_LAYERS",
    "Workspace",
    "make_librimix",
    "make_librispeech",
    "make_voicebank",
    "make_voxceleb1",
    "spans_logged",
]

NUM_LAYERS = 3
#: tau = (max + min) / 2 * rho: 1.4 nats at rho 1.0, 0.98 at rho 0.7
LAYER_ENTROPY = [2.0, 1.4, 0.8]
#: where the interpreter running the tests keeps its console scripts (daisy-run-downstream)
BIN = Path(sys.executable).parent

WORDS = ["HELLO", "WORLD", "EARLY", "EXIT", "SPEECH", "MODEL", "LAYER", "QUIET"]


def make_librispeech(root: Path) -> Dict[str, int]:
    """``root/LibriSpeech/<split>/<spk>/<ch>/<spk>-<ch>-<n>.flac`` + trans.txt + bucket csvs.

    Returns the number of utterances per split.
    """
    libri = root / "LibriSpeech"
    sizes = {"train-clean-100": 4, "dev-clean": 2, "test-clean": 2}
    utterances, seed = [], 0
    for split, count in sizes.items():
        for n in range(count):
            seed += 1
            audio = speechlike(1.0 + 0.25 * n, seed, noise=[0.01, 0.2][n % 2])
            rel = f"{split}/19/198/19-198-{n:04d}.flac"
            write_wav(libri / rel, audio)
            transcript = f"{WORDS[seed % 8]} {WORDS[(seed * 3) % 8]}"
            utterances.append(LibriUtterance(split, f"19-198-{n:04d}", rel, len(audio), transcript))
    write_librispeech_text(root, utterances)
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
# s3prl's runner on them
# ---------------------------------------------------------------------------------------
class Workspace:
    """Data, checkpoint and the commands of s3prl's runner on them, under ``root``.

    ``repo``: the checkout (first on the runner's PYTHONPATH; its ``s3prl_configs/`` and
    ``downstream_overrides/``). The checkpoint has :data:`NUM_LAYERS` layers, branches
    sharpened with depth and a calibration of :data:`LAYER_ENTROPY`.
    """

    def __init__(self, root: Path, repo: Path) -> None:
        self.root, self.repo = root, repo
        self.configs, self.overrides = repo / "s3prl_configs", repo / "downstream_overrides"
        self.upstream_config = str(self.configs / "upstream" / "daisy_{task}_rho1.0.yaml")
        self.ckpt = root / "daisy_tiny.pt"
        state = make_random_checkpoint(num_layers=NUM_LAYERS, layer_entropy=LAYER_ENTROPY)
        atomic_torch_save(sharpen_branches(state), self.ckpt)
        self.sizes = {
            "asr": make_librispeech(root / "asr"),
            "voxceleb1": make_voxceleb1(root / "sid"),
            "enhancement_stft": make_voicebank(root / "se"),
            "separation_stft": make_librimix(root / "ss"),
        }
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join([str(repo), self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.env["XDG_CACHE_HOME"] = str(root / "cache")  # the VoxCeleb1 split cache
        self.env.pop("DAISY_UPSTREAM_AUTOLOAD", None)
        self.env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")

    # every task: its config, the data placeholders filled with -o, a few CPU-sized steps
    def task_overrides(self, task: str, steps: int) -> str:
        lr = (self.overrides / f"{task}.txt").read_text().strip()
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
                f"config.downstream_expert.datarc.dict_path={self.configs / 'asr' / 'char.dict'},,"
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

    def train_args(
        self, task: str, expdir: Path, steps: int, upstream: str = "daisy_hubert_local", extra: Sequence[str] = ()
    ) -> List[str]:
        args = [
            "-m",
            "train",
            "-d",
            task,
            "-c",
            str(self.configs / task / "config.yaml"),
            "-u",
            upstream,
            "-k",
            str(self.ckpt),
            "-p",
            str(expdir),
            "-o",
            self.task_overrides(task, steps),
            "--device",
            "cpu",
        ]
        if upstream.startswith("daisy"):
            args += ["-g", self.upstream_config.format(task=task)]
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


def spans_logged(stderr: str) -> List[str]:
    """What follows ``DAISY exit span`` on each line of a runner's stderr that logs it."""
    return [line.split("DAISY exit span", 1)[1].strip() for line in stderr.splitlines() if "DAISY exit span" in line]
