"""The stack-dependent shims of integration/compat.py, on whichever stack runs the suite.

What each shim does where its stack needs it, and that it changes nothing where it does not:
the default stack (torch 2.8 + torchaudio 2.8 + s3prl 0.4.18) needs none of them; the current
one (torch 2.11 + torchaudio 2.11 + espnet-s3prl, no torchcodec) needs s3prl's modules to read
audio without torchcodec; s3prl 0.4.18 on torchaudio >= 2.9 also needs the backend names
torchaudio 2.9 removed (checked against the copy .ci/current-stack.sh installs beside the
current stack, in ``<venv>/s3prl-0.4.18``).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import subprocess
import sys
from importlib.metadata import packages_distributions, version
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from daisy_upstream.integration import compat, plugin

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "tests" / "data" / "heldout_clips" / "100-1000-0000.wav"
TORCHAUDIO_2_9 = tuple(int(p) for p in version("torchaudio").split(".")[:2]) >= (2, 9)
TORCHCODEC = importlib.util.find_spec("torchcodec") is not None
S3PRL_0_4_18 = Path(sys.prefix) / "s3prl-0.4.18"  # .ci/current-stack.sh puts it there


def _run(code: str, *path: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    environ["PYTHONPATH"] = os.pathsep.join([*map(str, path), str(REPO)])
    return subprocess.run(
        [sys.executable, "-c", code, str(CLIP)], cwd=REPO, env=environ, capture_output=True, text=True, timeout=300
    )


def _stereo(tmp_path: Path) -> tuple:
    """A 16-bit stereo file at 8 kHz and its samples as the float32 a decoder must return."""
    pcm = np.random.default_rng(0).integers(-32768, 32767, size=(1200, 2), dtype=np.int16)
    path = tmp_path / "stereo.wav"
    sf.write(path, pcm, 8000, subtype="PCM_16")
    return path, torch.from_numpy(pcm.astype(np.float32) / 32768)  # (frames, channels)


def test_the_s3prl_distribution_is_the_one_installed():
    names = {re.sub(r"[-_.]+", "-", n).lower() for n in packages_distributions()["s3prl"]}
    assert names <= {"s3prl", "espnet-s3prl"} and compat.s3prl_distribution() in names


def test_s3prl_datasets_read_audio_on_this_stack(tmp_path):
    import s3prl.downstream.asr.dataset as asr
    import s3prl.downstream.voxceleb1.dataset as vox  # 'import torchaudio' and 'from torchaudio import load'
    import torchaudio

    plugin.install()
    path, samples = _stereo(tmp_path)
    for load in (vox.torchaudio.load, vox.load, asr.torchaudio.load):
        wav, rate = load(str(path))
        assert rate == 8000 and wav.dtype == torch.float32 and torch.equal(wav, samples.T)
    shimmed = TORCHAUDIO_2_9 and not TORCHCODEC  # torchaudio.load needs torchcodec from 2.9 on
    assert (vox.torchaudio is not torchaudio) == shimmed and (asr.torchaudio is not torchaudio) == shimmed
    assert vox.torchaudio.functional is torchaudio.functional  # every other name is torchaudio's


def test_load_with_soundfile_follows_torchaudio_load(tmp_path):
    import torchaudio

    path, samples = _stereo(tmp_path)
    cases = [dict(), dict(frame_offset=100, num_frames=300), dict(frame_offset=1000), dict(channels_first=False)]
    for kwargs in cases:
        wav, rate = compat.load_with_soundfile(path, **kwargs)
        start, count = kwargs.get("frame_offset", 0), kwargs.get("num_frames", -1)
        part = samples[start:] if count < 0 else samples[start : start + count]
        assert rate == 8000 and torch.equal(wav, part.T if kwargs.get("channels_first", True) else part)
        if not TORCHAUDIO_2_9:  # torchaudio 2.8 decodes without torchcodec: the real peer
            assert torch.equal(wav, torchaudio.load(str(path), **kwargs)[0])
    wav, _ = compat.load_with_soundfile(io.BytesIO(path.read_bytes()))  # a file object, as torchaudio takes
    assert torch.equal(wav, samples.T)


def test_no_shim_where_the_stack_does_not_need_it():
    import s3prl.dataio.dataset.load_audio as load_audio
    import s3prl.hub  # noqa: F401
    import torchaudio

    plugin.install()
    if not (TORCHAUDIO_2_9 and compat.s3prl_distribution() == "s3prl"):  # torchaudio's names as it has them
        backend = getattr(torchaudio, "set_audio_backend", None)
        assert backend is None or backend.__module__.startswith("torchaudio")
        sox = sys.modules.get("torchaudio.sox_effects")
        assert sox is None or Path(sox.__file__).is_relative_to(Path(torchaudio.__file__).parent)
    if not TORCHAUDIO_2_9 or TORCHCODEC:
        assert not compat.s3prl_module_shims_needed()
        assert load_audio.torchaudio is torchaudio
        # only the modules plugin._HOOKS names are imported through the plugin's loader
        expert = sys.modules["s3prl.upstream.hubert.expert"]
        assert not isinstance(expert.__loader__, plugin._AfterImport)
    hub = sys.modules["s3prl.hub"]
    if isinstance(hub.__loader__, plugin._AfterImport):  # the wrapper passes the rest to the real loader
        assert "def options" in hub.__loader__.get_source("s3prl.hub")


S3PRL_0_4_18_ON_NEW_TORCHAUDIO = """
import json, sys
import torchaudio
import daisy_upstream
import s3prl.hub, s3prl.dataio.dataset.load_audio
import s3prl.downstream.voxceleb1.dataset as vox
from daisy_upstream.integration import compat
wav, rate = vox.torchaudio.load(sys.argv[1])
try:
    torchaudio.sox_effects.apply_effects_file(sys.argv[1], [])
    sox = ""
except RuntimeError as error:
    sox = str(error)
print(json.dumps({"dist": compat.s3prl_distribution(), "hub": s3prl.hub.__file__, "frames": wav.shape[-1],
                  "daisy": "daisy_hubert_local" in s3prl.hub.options(), "sox": sox}))
"""


@pytest.mark.skipif(not TORCHAUDIO_2_9, reason="torchaudio < 2.9 has the backend names s3prl 0.4.18 calls")
@pytest.mark.skipif(not S3PRL_0_4_18.is_dir(), reason="no s3prl 0.4.18 beside this stack (.ci/current-stack.sh)")
def test_s3prl_0_4_18_runs_on_torchaudio_2_9_with_the_backend_names_stubbed():
    bare = _run("import s3prl.hub", S3PRL_0_4_18, DAISY_UPSTREAM_AUTOLOAD="0")  # without the plugin
    assert bare.returncode != 0 and "set_audio_backend" in bare.stderr
    proc = _run(S3PRL_0_4_18_ON_NEW_TORCHAUDIO, S3PRL_0_4_18)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["dist"] == "s3prl" and Path(out["hub"]).is_relative_to(S3PRL_0_4_18) and out["daisy"]
    assert out["frames"] == sf.info(str(CLIP)).frames
    assert out["sox"].startswith("torchaudio.sox_effects.apply_effects_file: torchaudio 2.9 removed sox_effects")


def test_without_s3prl_the_import_names_the_install_line():
    proc = subprocess.run(  # -S: no site-packages, so neither s3prl distribution
        [sys.executable, "-S", "-c", "import daisy_upstream"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and last.startswith("ImportError: daisy_upstream needs the s3prl module")
    assert "pip install 'daisy_upstream[s3prl]'" in last and "espnet-s3prl" in last


def test_a_torchaudio_that_does_not_load_beside_torch_is_one_line(tmp_path):
    fake = tmp_path / "torchaudio"  # what torchaudio 2.11.1 does beside torch 2.11.0
    fake.mkdir()
    (fake / "__init__.py").write_text("raise OSError('libtorchaudio.so: undefined symbol: _ZN3c104impl3cowE')\n")
    proc = _run("from daisy_upstream.integration import compat; compat.import_torchaudio()", tmp_path)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and f"torchaudio {version('torchaudio')} does not load beside torch" in last
    assert "undefined symbol" in last and "install the torchaudio release paired with this torch" in last


def test_hub_names_s3prl_imports_are_there_and_only_added_where_removed():
    import huggingface_hub
    import s3prl.downstream.runner  # noqa: F401  (imports HfApi, HfFolder, Repository at its top)

    plugin.install()
    if tuple(int(p) for p in huggingface_hub.__version__.split(".")[:2]) < (1, 0):
        assert huggingface_hub.HfFolder.__module__.startswith("huggingface_hub")  # its own, untouched
        assert huggingface_hub.Repository.__module__.startswith("huggingface_hub")
    else:  # removed in 1.0: get_token is its successor's, Repository one line
        assert huggingface_hub.HfFolder.get_token() == huggingface_hub.get_token()
        with pytest.raises(RuntimeError, match="huggingface_hub 1.0 removed Repository.*--push_to_hf_hub"):
            huggingface_hub.Repository(local_dir="x", clone_from="y")


def test_s3prl_run_downstream_starts_as_a_file():
    """``python .../s3prl/run_downstream.py``, the route s3prl documents: it imports
    huggingface_hub before s3prl, so the start-up hook must catch that import."""
    import s3prl

    script = Path(s3prl.__file__).parent / "run_downstream.py"
    proc = subprocess.run(
        [sys.executable, str(script), "-h"],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("usage: run_downstream.py"), proc.stderr[-3000:]
