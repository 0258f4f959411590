"""The third-party messages ``daisy`` filters are the real ones, and only those.

A fresh interpreter, with the plugin loaded as under ``daisy``, imports s3prl's hub (s3prl's
"ESPnet is not installed" log line; with s3prl 0.4.18 on torchaudio 2.8, torchaudio's
``set_audio_backend`` deprecation), builds s3prl's HuBERT positional convolution (torch's
``weight_norm`` FutureWarning) and reads a clip through an s3prl dataset module's
``torchaudio.load`` (on torchaudio 2.8, its TorchCodec notice; on 2.9+ that name reads through
integration/compat.py's shim where torchcodec is absent), once as it is and once after
:func:`quiet_third_party`; warnings of our own kind still show.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from daisy_upstream.integration.compat import s3prl_distribution

REPO = Path(__file__).resolve().parents[2]
CODE = """
import sys, warnings
warnings.simplefilter("default")
if sys.argv[1] == "quiet":
    from daisy_upstream.integration.quiet import quiet_third_party
    quiet_third_party()
import daisy_upstream
import s3prl.hub
import torch
torch.nn.utils.weight_norm(torch.nn.Conv1d(2, 2, 3), name="weight", dim=2)
import s3prl.downstream.voxceleb1.dataset as dataset
dataset.torchaudio.load(sys.argv[2])  # as s3prl's datasets read audio
warnings.warn("a warning of our own about torchaudio", UserWarning)
"""
TORCHAUDIO_2_8 = version("torchaudio").startswith("2.8.")
#: message -> whether this stack raises it (torchaudio 2.9 removed both torchaudio messages)
NOISE = {
    "set_audio_backend has been deprecated": TORCHAUDIO_2_8 and s3prl_distribution() == "s3prl",
    "ESPnet is not installed": True,
    "weight_norm` is deprecated": True,
    "load_with_torchcodec": TORCHAUDIO_2_8,
}
CLIP = REPO / "tests" / "data" / "heldout_clips" / "100-1000-0000.wav"


def _stderr(mode: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DAISY_UPSTREAM_AUTOLOAD": "0"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run(
        [sys.executable, "-c", CODE, mode, str(CLIP)], env=env, capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_filters_drop_exactly_the_third_party_noise():
    loud, quiet = _stderr("loud"), _stderr("quiet")
    for message, raised in NOISE.items():
        assert (message in loud) == raised  # the filters have something real to remove
        assert message not in quiet
    assert "a warning of our own about torchaudio" in quiet
