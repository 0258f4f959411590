"""Every compatibility shim, in one place, each applied once and only where its stack needs it.

Each shim is narrow, names the release it is for, and touches no file of the installed s3prl.
Each is idempotent; :mod:`daisy_upstream.integration.plugin` applies them when the module they
fix is imported (an s3prl module, or :mod:`daisy_upstream.core.precision` for torch's CPU bf16
convolution; never at interpreter start-up). The stacks (docs/install.md): torch 2.8 with
s3prl 0.4.18 (the pinned default) and torch 2.9+ with either s3prl distribution, s3prl or
ESPnet's fork espnet-s3prl, which installs the same ``s3prl`` module without the calls that
torchaudio 2.9 removed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import re
import sys
import types
from pathlib import Path
from typing import List, Optional, Tuple

__all__ = [
    "after_s3prl_module",
    "allow_namespace_in_checkpoints",
    "before_s3prl_module",
    "cpu_bf16_conv_guard",
    "guard_frozen_forward",
    "import_torchaudio",
    "key_voxceleb1_cache_by_dataset",
    "local_rank_from_torchrun",
    "load_with_soundfile",
    "patch_runner_module",
    "require_s3prl",
    "restore_hub_names",
    "s3prl_distribution",
    "s3prl_module_shims_needed",
    "voxceleb1_cache_dir",
]


def allow_namespace_in_checkpoints() -> None:
    # torch >= 2.6 loads with weights_only=True by default; s3prl's runner checkpoints hold
    # the run's argparse.Namespace ('Args'), so resuming / evaluating with -e failed.
    # Allow exactly that class, nothing else.
    import torch

    torch.serialization.add_safe_globals([argparse.Namespace])


def cpu_bf16_conv_guard(device_type: str, dtype) -> "contextlib.AbstractContextManager":
    """oneDNN off around a CPU bf16 autocast forward; elsewhere nothing.

    torch 2.8's oneDNN bf16 grouped ``conv1d`` with 16 groups and an even kernel >= 8 returns
    wrong values on the CPU (relative error > 1, not rounding; 2, 4, 8 groups and odd kernels
    are right): that is HuBERT's / wav2vec 2.0's positional convolution (kernel 128, 16
    groups), so bf16 autocast on the CPU gave other stage-1 targets on a fifth of the frames.
    torch's own kernels (oneDNN off) are right to bf16 rounding (tests/core/test_precision.py).
    """
    import torch

    if device_type != "cpu" or dtype != torch.bfloat16:
        return contextlib.nullcontext()
    return _onednn_off()


def guard_frozen_forward(precision) -> None:
    """Applied to ``daisy_upstream.core.precision`` when it is imported: every autocast
    forward of the frozen model runs inside :func:`cpu_bf16_conv_guard` (idempotent)."""
    if cpu_bf16_conv_guard not in precision.FORWARD_GUARDS:
        precision.FORWARD_GUARDS.append(cpu_bf16_conv_guard)


@contextlib.contextmanager
def _onednn_off():
    import torch

    saved, torch.backends.mkldnn.enabled = torch.backends.mkldnn.enabled, False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = saved


def voxceleb1_cache_dir(root: str, meta_data: str) -> str:
    """Where the VoxCeleb1 file lists of one dataset (root + split file) are cached."""
    meta = Path(meta_data)
    stamp = f"{Path(root).resolve()}|{meta.resolve()}|{meta.stat().st_mtime_ns if meta.exists() else 0}"
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "daisy_upstream" / "voxceleb1"
    return str(base / hashlib.sha1(stamp.encode()).hexdigest()[:16]) + os.sep


def key_voxceleb1_cache_by_dataset(vox) -> None:
    """Applied to ``s3prl.downstream.voxceleb1.dataset`` when it is imported."""
    # s3prl's SpeakerClassifiDataset caches its file lists as <package>/.cache/<split>.pkl,
    # keyed by split only: a second dataset (another root or split file) silently reuses the
    # first one's files. Point the module's CACHE_PATH at a directory keyed by the dataset
    # root, the split file and its mtime for the duration of each constructor call.
    original = vox.SpeakerClassifiDataset.__init__
    if getattr(original, "_daisy_shim", False):
        return

    @functools.wraps(original)
    def __init__(self, mode, file_path, meta_data, *args, **kwargs):
        previous = vox.CACHE_PATH
        vox.CACHE_PATH = voxceleb1_cache_dir(str(file_path), str(meta_data))
        try:
            original(self, mode, file_path, meta_data, *args, **kwargs)
        finally:
            vox.CACHE_PATH = previous

    __init__._daisy_shim = True
    vox.SpeakerClassifiDataset.__init__ = __init__


def _cpu_distributed_runner(runner) -> None:
    # s3prl's runner is written for one GPU per process: run_downstream calls
    # torch.cuda.set_device(local_rank) and wraps models in DDP(device_ids=[local_rank]).
    # With --backend gloo on a machine without CUDA both fail. Only when CUDA is absent:
    # set_device becomes a no-op and DDP gets no device_ids (what DDP requires on CPU).
    import torch

    if torch.cuda.is_available() or getattr(runner.DDP, "_daisy_shim", False):
        return
    ddp = runner.DDP

    def cpu_ddp(module, *args, device_ids=None, **kwargs):
        return ddp(module, *args, **kwargs)

    cpu_ddp._daisy_shim = True
    runner.DDP = cpu_ddp
    torch.cuda.set_device = lambda device: None


def _advance_progress_on_every_rank(runner) -> None:
    # s3prl's Runner.train counts optimizer steps with its 'overall' progress bar (pbar.n is
    # also the loop's stop condition), but only the leader reaches pbar.update(1): the other
    # ranks 'continue' just before it, never reach total_steps, and crash ("Connection closed
    # by peer", gloo) or hang (nccl) in the next collective once the leader has saved and
    # exited. On non-leader ranks only, the optimizer's zero_grad, which train() calls exactly
    # once per optimizer step on every rank, advances that bar by one.
    import torch.distributed as dist

    if getattr(runner.get_optimizer, "_daisy_shim", False):
        return
    overall = {}
    real_tqdm, real_get_optimizer = runner.tqdm, runner.get_optimizer

    class tqdm(real_tqdm):  # remembers the 'overall' bar; everything else as tqdm
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if kwargs.get("desc") == "overall":
                overall["bar"] = self

    def get_optimizer(*args, **kwargs):
        optimizer = real_get_optimizer(*args, **kwargs)
        if dist.is_available() and dist.is_initialized() and dist.get_rank() > 0:
            zero_grad = optimizer.zero_grad

            def zero_grad_and_count_step(*a, **k):
                zero_grad(*a, **k)
                if overall.get("bar") is not None:
                    overall["bar"].update(1)

            optimizer.zero_grad = zero_grad_and_count_step
        return optimizer

    get_optimizer._daisy_shim = True
    runner.tqdm, runner.get_optimizer = tqdm, get_optimizer


def _evaluate_through_unwrapped_models(runner) -> None:
    # s3prl's Runner.train has the leader call Runner.evaluate alone ("always called on a single
    # process even during distributed training") through the models as trained: wrapped in
    # DistributedDataParallel, whose forward broadcasts the module's buffers to every rank
    # (DaisyFeaturizer's exit_counts; SID's downstream best_score, also with -u hubert_local).
    # The other ranks are not there: gloo fails ("Connection closed by peer") or deadlocks,
    # nccl hangs. For the duration of evaluate only, each wrapped entry's model is the module
    # it wraps, so evaluation runs no collective operation; training is unchanged, and the
    # exit statistics are still summed over ranks once, in training, by the featurizer.
    from torch.nn.parallel import DistributedDataParallel

    original = runner.Runner.evaluate
    if getattr(original, "_daisy_shim", False):
        return

    @functools.wraps(original)
    def evaluate(self, *args, **kwargs):
        wrapped = [(e, e.model) for e in self.all_entries if isinstance(e.model, DistributedDataParallel)]
        for entry, model in wrapped:
            entry.model = model.module
        try:
            return original(self, *args, **kwargs)
        finally:
            for entry, model in wrapped:
                entry.model = model

    evaluate._daisy_shim = True
    runner.Runner.evaluate = evaluate


def _running_run_downstream() -> bool:
    """Whether this interpreter's program is s3prl's run_downstream (-m, path or our wrapper)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name == "s3prl.run_downstream":
        return True
    path = Path(getattr(main, "__file__", None) or "")
    return path.name == "run_downstream.py" and path.parent.name == "s3prl"


def local_rank_from_torchrun(argv: Optional[List[str]] = None) -> None:
    """Applied when s3prl's runner is imported, i.e. before run_downstream parses its arguments."""
    # torchrun (torch.distributed.run) gives each process its rank only in the LOCAL_RANK
    # environment variable; s3prl's run_downstream reads it only from --local_rank, and without
    # it each process silently trains undistributed on all the data. Only when run_downstream
    # is the program, LOCAL_RANK is set and no --local_rank was given: append it to argv.
    argv = sys.argv if argv is None else argv
    rank = os.environ.get("LOCAL_RANK")
    if rank is None or not _running_run_downstream():
        return
    if any(a == "--local_rank" or a.startswith("--local_rank=") for a in argv[1:]):
        return
    argv.extend(["--local_rank", rank])


def patch_runner_module(runner) -> None:
    """Applied to ``s3prl.downstream.runner`` when it is imported."""
    allow_namespace_in_checkpoints()
    _cpu_distributed_runner(runner)
    _advance_progress_on_every_rank(runner)
    _evaluate_through_unwrapped_models(runner)
    local_rank_from_torchrun()


# -- which s3prl, which torchaudio ------------------------------------------------------------
def s3prl_distribution() -> Optional[str]:
    """The distribution whose ``s3prl`` module this interpreter imports: ``"s3prl"``,
    ``"espnet-s3prl"``, or None (no s3prl, or a source checkout without metadata)."""
    module = sys.modules.get("s3prl")
    origin = getattr(module, "__file__", None)
    if origin is None:
        spec = importlib.machinery.PathFinder.find_spec("s3prl")  # sys.path only: no hook runs
        origin = spec.origin if spec is not None else None
    if origin is None:
        return None
    site = [str(Path(origin).parents[1])]  # the distribution installed beside the module imported
    for name in ("s3prl", "espnet-s3prl"):
        if next(iter(importlib.metadata.distributions(name=name, path=site)), None) is not None:
            return name
    return None


def require_s3prl() -> None:
    """One clear line where neither s3prl distribution is installed (``import daisy_upstream``)."""
    if "s3prl" in sys.modules or importlib.machinery.PathFinder.find_spec("s3prl") is not None:
        return
    raise ImportError(
        "daisy_upstream needs the s3prl module and neither s3prl nor espnet-s3prl is installed: "
        "pip install 'daisy_upstream[s3prl]' (or 'daisy_upstream[espnet-s3prl]', ESPnet's fork; docs/install.md)"
    )


def _release(version: str) -> Tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def import_torchaudio() -> types.ModuleType:
    """torchaudio, or one clear line when its build does not load beside this torch."""
    try:
        import torchaudio
    except (ImportError, OSError) as error:  # an undefined symbol of torch's C++ library
        import torch

        raise ImportError(
            f"torchaudio {importlib.metadata.version('torchaudio')} does not load beside torch {torch.__version__} "
            f"({error}); install the torchaudio release paired with this torch (docs/install.md)"
        ) from error
    return torchaudio


@functools.lru_cache(maxsize=None)
def _needs() -> Tuple[bool, bool]:
    """(backend names to stub, torchaudio.load to read with soundfile) for this interpreter,
    from the installed metadata (nothing imported)."""
    try:
        after_2_8 = _release(importlib.metadata.version("torchaudio")) >= (2, 9)
    except importlib.metadata.PackageNotFoundError:
        return (False, False)
    return (
        after_2_8 and s3prl_distribution() == "s3prl",
        after_2_8 and importlib.util.find_spec("torchcodec") is None,
    )


def s3prl_module_shims_needed() -> bool:
    """Whether :func:`before_s3prl_module` / :func:`after_s3prl_module` do anything here."""
    return any(_needs())


# -- torchaudio >= 2.9 --------------------------------------------------------------------------
def load_with_soundfile(
    uri,
    frame_offset: int = 0,
    num_frames: int = -1,
    normalize: bool = True,
    channels_first: bool = True,
    format: Optional[str] = None,
    buffer_size: int = 4096,
    backend: Optional[str] = None,
):
    """``torchaudio.load`` as torchaudio 2.9+ documents it, decoded by soundfile: ``(float32
    (channels, frames), or (frames, channels), rate)``; as there, the last four are not used."""
    import soundfile
    import torch

    source = uri if hasattr(uri, "read") else os.fspath(uri)
    data, rate = soundfile.read(source, start=frame_offset, frames=num_frames, dtype="float32", always_2d=True)
    wav = torch.from_numpy(data)
    return (wav.T.contiguous() if channels_first else wav), int(rate)


class _TorchaudioReadingWithSoundfile(types.ModuleType):
    """torchaudio as s3prl's modules see it: ``load`` by soundfile, every other name torchaudio's."""

    def __init__(self, torchaudio: types.ModuleType) -> None:
        super().__init__(torchaudio.__name__, torchaudio.__doc__)
        self._torchaudio, self.load = torchaudio, load_with_soundfile

    def __getattr__(self, name: str):
        return getattr(self.__dict__["_torchaudio"], name)


@functools.lru_cache(maxsize=None)
def _torchaudio_for_s3prl() -> types.ModuleType:
    return _TorchaudioReadingWithSoundfile(import_torchaudio())


def after_s3prl_module(module: types.ModuleType) -> None:
    """Applied to every s3prl module right after its import; only with torchaudio >= 2.9
    without torchcodec.

    torchaudio 2.9 made ``torchaudio.load`` decode through torchcodec, a separate install
    (with FFmpeg); without it every s3prl dataset's ``torchaudio.load`` raises ImportError.
    In that module only, the name ``torchaudio`` (and ``load`` where it did ``from torchaudio
    import load``) reads with soundfile, a dependency of ours; torchaudio itself is unchanged.
    """
    if not _needs()[1]:
        return
    torchaudio, namespace = import_torchaudio(), vars(module)
    if namespace.get("torchaudio") is torchaudio:
        module.torchaudio = _torchaudio_for_s3prl()
    if namespace.get("load") is torchaudio.load:
        module.load = load_with_soundfile


def _sox_effects_function(name: str):
    if name.startswith("__"):
        raise AttributeError(name)

    def removed(*args, **kwargs):
        raise RuntimeError(
            f"torchaudio.sox_effects.{name}: torchaudio 2.9 removed sox_effects, which this s3prl dataset "
            "uses; run it with torchaudio < 2.9 (docs/install.md)"
        )

    return removed


def before_s3prl_module() -> None:
    """Applied before every s3prl module executes; only for the s3prl distribution (0.4.18)
    on torchaudio >= 2.9.

    torchaudio 2.9 removed ``set_audio_backend`` and ``sox_effects``. s3prl 0.4.18 calls the
    first when its modules are imported (``dataio/dataset/load_audio.py``,
    ``upstream/byol_s/byol_a/common.py``: ``import s3prl.hub`` fails) and imports the second
    in some datasets (sv_voxceleb1, speech_commands, ...); espnet-s3prl removed those calls.
    ``set_audio_backend`` becomes what it was in torchaudio 2.8, a no-op; ``sox_effects``
    imports, and each of its functions raises one line saying why when called.
    """
    if not _needs()[0]:
        return
    torchaudio = import_torchaudio()
    if not hasattr(torchaudio, "set_audio_backend"):
        torchaudio.set_audio_backend = lambda backend: None
    if "torchaudio.sox_effects" not in sys.modules and not hasattr(torchaudio, "sox_effects"):
        stub = types.ModuleType("torchaudio.sox_effects", "Removed in torchaudio 2.9 (daisy_upstream's stub).")
        stub.__getattr__ = _sox_effects_function
        torchaudio.sox_effects = sys.modules[stub.__name__] = stub


# -- huggingface_hub >= 1.0 -------------------------------------------------------------------
class _HfFolder:
    """``huggingface_hub.HfFolder`` as s3prl's runner uses it: ``get_token``, by its successor."""

    @staticmethod
    def get_token() -> Optional[str]:
        import huggingface_hub

        return huggingface_hub.get_token()


class _Repository:
    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError(
            "huggingface_hub 1.0 removed Repository, which s3prl's --push_to_hf_hub uses; "
            "push with huggingface_hub < 1 (docs/install.md)"
        )


def restore_hub_names(huggingface_hub: types.ModuleType) -> None:
    """Applied to ``huggingface_hub`` when it is imported; only with huggingface_hub >= 1.0.

    huggingface_hub 1.0 (transformers 5 needs it) removed ``HfFolder`` and ``Repository``;
    s3prl's ``downstream/runner.py`` and ``run_downstream.py`` (both distributions) import them
    at their top, for ``--push_to_hf_hub`` only, so ``run_downstream`` did not start. Only where
    the names are missing: ``HfFolder.get_token`` returns ``huggingface_hub.get_token()``;
    ``Repository`` raises one line when built.
    """
    if _release(getattr(huggingface_hub, "__version__", "0")) < (1, 0):
        return
    if not hasattr(huggingface_hub, "HfFolder"):
        huggingface_hub.HfFolder = _HfFolder
    if not hasattr(huggingface_hub, "Repository"):
        huggingface_hub.Repository = _Repository
