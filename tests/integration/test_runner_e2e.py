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

import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest
import torch

from daisy_upstream.integration.runner_io import load_runner_checkpoint
from daisy_upstream.testing.superb import BIN, NUM_LAYERS, Workspace, spans_logged

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("s3prl_e2e"), REPO)


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
    proc = ws.run("console", ws.evaluate_args(edited_path, "test", ["-o", f"args.upstream_model_config={minmax}"]))
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
    torch.save(
        dict(state, Featurizer=dict(state["Featurizer"], exit_counts=torch.zeros(NUM_LAYERS, dtype=torch.long))), zeroed
    )
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
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(BIN / "daisy-run-downstream"),
        *ws.train_args("voxceleb1", expdir, 2, extra=["--backend", "gloo"]),
    ]
    proc = subprocess.run(cmd, cwd=ws.root, env=ws.env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-6000:]
    saved = load_runner_checkpoint(expdir / "states-2.ckpt")
    assert saved.get("WorldSize") == 2  # it really ran distributed
    assert saved["Featurizer"]["exit_counts"].tolist() == single.tolist()
