"""s3prl's downstream runner from the outside: run it, read what it writes.

The one place every tool (``daisy table1``, ``daisy demo``, ``daisy noise-report``) goes through:

* :func:`runner_command` - the command line of one ``run_downstream`` call, in a fresh
  interpreter, with the plugin registered;
* :func:`subprocess_runner` - run it, its output appended to a log (and echoed, if asked);
  a failure raises :class:`RunnerFailed` with the log's tail;
* :func:`load_runner_checkpoint`, :func:`runner_args`, :func:`exit_counts` - a runner
  checkpoint (``states-N.ckpt``, ``dev-best.ckpt``, ...) read with ``weights_only=True``;
* :func:`parse_metric` and its parts - the metric s3prl 0.4.18's downstream experts write:
  ASR ``<split>-noLM-{hyp,ref}.ark`` (WER recomputed over words as ``asr/expert.py`` does),
  SID ``log.log`` (``test at step N: acc``), SE / SS ``<split>_metrics.txt`` (``pesq``,
  ``stoi``, ``si_sdr``; SS's ``si_sdr`` is the improvement over the mixture, SI-SDRi);
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from daisy_upstream.integration.compat import allow_namespace_in_checkpoints

__all__ = [
    "RUNNER_CODE",
    "TASKS",
    "TEST_SPLIT",
    "Runner",
    "RunnerFailed",
    "exit_counts",
    "load_runner_checkpoint",
    "parse_metric",
    "read_ark",
    "runner_args",
    "runner_command",
    "sid_accuracy",
    "subprocess_runner",
    "word_errors",
]

#: s3prl ``-d`` names of the four MiniSUPERB tasks, in the paper's column order.
TASKS = ("asr", "voxceleb1", "enhancement_stft", "separation_stft")
#: the split ``-t`` evaluates for each task (the names s3prl 0.4.18's experts use)
TEST_SPLIT = {"asr": "test-clean", "voxceleb1": "test", "enhancement_stft": "test", "separation_stft": "test"}
#: ``python -c`` code of the runner: s3prl's run_downstream with the plugin installed, without
#: the third-party warnings the ``daisy`` commands filter (:mod:`daisy_upstream.integration.quiet`)
RUNNER_CODE = (
    "import sys; from daisy_upstream.integration.quiet import quiet_third_party; quiet_third_party(); "
    "from daisy_upstream.integration.plugin import run_downstream; sys.exit(run_downstream())"
)

#: runs one runner command line, its output going to the log file
Runner = Callable[[List[str], Path], None]
PathLike = Union[str, Path]


class RunnerFailed(RuntimeError):
    """s3prl's runner exited with an error; the message ends with the tail of its log."""


# ---------------------------------------------------------------------------------------
# running it
# ---------------------------------------------------------------------------------------
def runner_command(args: Sequence[str]) -> List[str]:
    """``[python, -c, RUNNER_CODE, *args]``: ``run_downstream`` with ``args`` in a fresh interpreter."""
    return [sys.executable, "-c", RUNNER_CODE, *[str(a) for a in args]]


def subprocess_runner(cmd: List[str], log: Path, threads: Optional[int] = 1, echo: bool = False) -> None:
    """Run ``cmd``, its output appended to ``log``; raise :class:`RunnerFailed` on failure.

    ``threads`` sets the child's OMP/MKL threads (None: leave the environment as it is).
    ``echo`` also copies the output, line by line, to this process's stdout. The child
    imports the same daisy_upstream as this process (a checkout beside an install).
    """
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    here = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        if echo:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, bufsize=1
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                f.write(line)
            returncode = proc.wait()
        else:
            returncode = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise RunnerFailed(f"s3prl's runner failed (exit {returncode}); full log {log}:\n{tail}")


# ---------------------------------------------------------------------------------------
# runner checkpoints
# ---------------------------------------------------------------------------------------
def load_runner_checkpoint(path: PathLike) -> Dict[str, Any]:
    """A runner checkpoint, loaded with ``weights_only=True`` (its ``argparse.Namespace`` allowed).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a runner checkpoint (unreadable, truncated, or not a dict).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"runner checkpoint {path} does not exist")
    allow_namespace_in_checkpoints()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a truncated or foreign file: named, one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"{path} is not an s3prl runner checkpoint (states-N.ckpt) readable with "
            f"weights_only=True ({type(error).__name__}: {first[:200]})"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not an s3prl runner checkpoint (states-N.ckpt)")
    return state


def runner_args(state: Dict[str, Any]) -> Dict[str, Any]:
    """The ``run_downstream`` arguments saved in a runner checkpoint (``{}`` if none)."""
    args = state.get("Args")
    return dict(vars(args)) if args is not None else {}


def exit_counts(checkpoint: Union[PathLike, Dict[str, Any]]) -> List[int]:
    """The DAISY featurizer's training exit counts saved in a runner checkpoint (path or state).

    Raises:
        ValueError: the checkpoint holds none (not trained with ``-u daisy_hubert*``).
    """
    state = checkpoint if isinstance(checkpoint, dict) else load_runner_checkpoint(checkpoint)
    featurizer = state.get("Featurizer") or {}
    if "exit_counts" not in featurizer:
        where = "the checkpoint" if isinstance(checkpoint, dict) else str(checkpoint)
        raise ValueError(f"{where} holds no DAISY exit counts (was it trained with -u daisy_hubert*?)")
    return [int(c) for c in featurizer["exit_counts"].tolist()]


# ---------------------------------------------------------------------------------------
# metrics from what the experts write
# ---------------------------------------------------------------------------------------
def read_ark(path: Path) -> Dict[str, List[str]]:
    """An s3prl ``.ark`` text file: ``{utterance: words}``."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        parts = line.split()
        out[parts[0]] = parts[1:]
    return out


def word_errors(
    hyp_ark: Path, ref_ark: Path, keys: Optional[Sequence[str]] = None, chars: bool = False
) -> Tuple[int, int]:
    """(edits, reference units) over the utterances of two s3prl ``.ark`` files.

    Units are words, or with ``chars`` the characters of the space-joined words (as s3prl's
    ASR expert counts its character error rate).
    """
    import editdistance

    hyp, ref = read_ark(hyp_ark), read_ark(ref_ark)
    if set(hyp) != set(ref):
        raise ValueError(f"{hyp_ark} and {ref_ark} list different utterances")
    errors = units = 0
    for key in ref if keys is None else keys:
        h, r = (" ".join(hyp[key]), " ".join(ref[key])) if chars else (hyp[key], ref[key])
        errors += editdistance.eval(h, r)
        units += len(r)
    return errors, units


def sid_accuracy(log: Path, split: str = "test") -> Optional[float]:
    """The last ``<split> at step N: acc`` of a voxceleb1 ``log.log`` (a fraction), or None."""
    acc = None
    for line in Path(log).read_text().splitlines():
        if line.startswith(f"{split} at step"):
            acc = float(line.rsplit(":", 1)[1])
    return acc


def _metrics_txt(path: Path) -> Dict[str, float]:
    values = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            values[parts[0]] = float(parts[1])
    return values


def parse_metric(task: str, expdir: PathLike, split: Optional[str] = None) -> Dict[str, float]:
    """The task metric of an evaluation from the files in its experiment directory.

    Returns ``{"wer": %, "utterances"}`` (ASR), ``{"acc": %}`` (SID), ``{"pesq", "stoi" (%),
    "si_sdr"}`` (SE) or ``{"si_sdri"}`` (SS).

    Raises:
        FileNotFoundError / ValueError: the evaluation did not write what is expected.
    """
    expdir = Path(expdir)
    if task not in TEST_SPLIT:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    split = split or TEST_SPLIT[task]
    if task == "asr":
        hyp, ref = expdir / f"{split}-noLM-hyp.ark", expdir / f"{split}-noLM-ref.ark"
        if not hyp.is_file():
            raise FileNotFoundError(f"ASR evaluation wrote no {hyp}")
        errors, words = word_errors(hyp, ref)
        if words == 0:
            raise ValueError(f"{ref} holds no reference words")
        char_errors, chars = word_errors(hyp, ref, chars=True)
        return {"wer": 100.0 * errors / words, "cer": 100.0 * char_errors / chars, "utterances": len(read_ark(ref))}
    if task == "voxceleb1":
        log = expdir / "log.log"
        if not log.is_file():
            raise FileNotFoundError(f"SID evaluation wrote no {log}")
        acc = sid_accuracy(log, split)
        if acc is None:
            raise ValueError(f"{log} has no '{split} at step N: accuracy' line")
        return {"acc": 100.0 * acc}
    path = expdir / f"{split}_metrics.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{task} evaluation wrote no {path}")
    values = _metrics_txt(path)
    if task == "enhancement_stft":
        missing = {"pesq", "stoi", "si_sdr"} - set(values)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}")
        return {"pesq": values["pesq"], "stoi": 100.0 * values["stoi"], "si_sdr": values["si_sdr"]}
    if "si_sdr" not in values:
        raise ValueError(f"{path} lacks si_sdr")
    return {"si_sdri": values["si_sdr"]}
