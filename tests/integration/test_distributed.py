"""Distributed training through s3prl's runner that evaluates dev while it trains.

A real task config (``s3prl_configs/voxceleb1/config.yaml``, SID) on the tiny synthetic
VoxCeleb1 of :mod:`tests.integration.test_runner_e2e` (4 speakers, 8 training utterances of
1.0-1.4 s, 4 dev, 4 test) with the tiny sharpened DAISY checkpoint. The 2-process run
(``python -m torch.distributed.run``, gloo, CPU) reaches ``eval_step`` before
``total_steps``: rank 0 evaluates dev alone at every step while rank 1 goes on to its next
step, and the checkpoint is saved after that (``save_step`` = ``total_steps``).

Same data, same histogram: SID's training loader shards with ``DistributedSampler``
(8 utterances over 2 ranks, nothing padded or repeated), batch 2 per rank for 2 steps covers
each rank's 4 utterances exactly once, as the 1-process run's 4 steps of batch 2 cover all 8
(one epoch; the order within it does not matter). Exits are decided per utterance, the random
crop is off (``max_timestep=None``), and evaluation never counts exits, so both runs must
save the same ``exit_counts``: the histogram of the 8 utterances' own exit layers, which the
test also computes in-process, one utterance at a time, with the same upstream.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
import soundfile as sf
import torch

from daisy_upstream.integration.runner_io import load_runner_checkpoint
from daisy_upstream.testing.superb import NUM_LAYERS, Workspace, spans_logged

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TRAIN_UTTERANCES = 8  # make_voxceleb1's default: 4 speakers x 2
BATCH = 2


def runner_overrides(ws: Workspace, steps: int, eval_step: int) -> str:
    """SID overrides: dev evaluated every ``eval_step``, saved at ``steps`` only."""
    return ws.task_overrides("voxceleb1", steps) + (
        f",,config.runner.eval_step={eval_step},,config.runner.save_step={steps},,"
        f"config.runner.log_step={steps},,config.downstream_expert.datarc.train_batch_size={BATCH}"
    )


def train_args(
    ws: Workspace, expdir: Path, steps: int, eval_step: int, upstream: str = "daisy_hubert_local"
) -> List[str]:
    args = ws.train_args("voxceleb1", expdir, steps, upstream=upstream)
    args[args.index("-o") + 1] = runner_overrides(ws, steps, eval_step)
    return args


def torchrun(ws: Workspace, args: List[str], nproc: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run ... -m s3prl.run_downstream ARGS --backend gloo``.

    A run that deadlocks is stopped with its workers, never left behind.
    """
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "s3prl.run_downstream",
        *args,
        "--backend",
        "gloo",
    ]
    proc = subprocess.Popen(
        cmd, cwd=ws.root, env=ws.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # torchrun's agent stops its workers (their own sessions) on SIGTERM
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s (deadlocked ranks?):\n{err[-6000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def exits_one_at_a_time(ws: Workspace) -> List[int]:
    """The histogram of the training utterances' exit layers under the training span
    (plain threshold), each utterance run alone through the same upstream."""
    from daisy_upstream.integration.hubconf import daisy_hubert_local

    root = ws.root / "sid"
    files = [
        root / "dev" / "wav" / line.split()[1]
        for line in (root / "iden_split.txt").read_text().splitlines()
        if line.split()[0] == "1"
    ]
    assert len(files) == TRAIN_UTTERANCES
    upstream = daisy_hubert_local(str(ws.ckpt), model_config=ws.upstream_config.format(task="voxceleb1")).eval()
    counts = [0] * NUM_LAYERS
    with torch.no_grad(), upstream.span_override(None):  # training: every layer may exit
        for path in files:
            wav = torch.from_numpy(sf.read(path, dtype="float32")[0])
            counts[int(upstream([wav])["exit_layers"][0]) - 1] += 1
    return counts


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("distributed"), REPO)


def test_two_processes_evaluate_dev_while_training_and_match_one_process(ws: Workspace) -> None:
    single_dir, ddp_dir = ws.root / "exp" / "single", ws.root / "exp" / "ddp"
    steps = TRAIN_UTTERANCES // BATCH
    ws.run("module", train_args(ws, single_dir, steps, eval_step=1))
    proc = torchrun(ws, train_args(ws, ddp_dir, steps // 2, eval_step=1))
    assert proc.returncode == 0, proc.stderr[-6000:]

    single = load_runner_checkpoint(single_dir / f"states-{steps}.ckpt")
    saved = load_runner_checkpoint(ddp_dir / f"states-{steps // 2}.ckpt")
    assert saved.get("WorldSize") == 2 and "WorldSize" not in single  # it really ran distributed
    # dev was evaluated during training, by rank 0 alone, at every step (SID's log.log)
    evaluations = re.findall(r"^dev at step (\d+):", (ddp_dir / "log.log").read_text(), flags=re.M)
    assert evaluations == [str(s) for s in range(1, steps // 2 + 1)], evaluations
    counts = saved["Featurizer"]["exit_counts"]
    assert counts.tolist() == single["Featurizer"]["exit_counts"].tolist() == exits_one_at_a_time(ws)
    assert int(counts.sum()) == TRAIN_UTTERANCES  # summed over the ranks exactly once

    evaluated = ws.run("console", ws.evaluate_args(ddp_dir / f"states-{steps // 2}.ckpt", "test"))
    assert (ddp_dir / "test_predict.txt").is_file()
    assert str(counts.tolist()) in spans_logged(evaluated.stderr)[0]
