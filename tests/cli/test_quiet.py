"""The third-party messages ``daisy`` filters are the real ones, and only those.

A fresh interpreter imports s3prl's hub (torchaudio's ``set_audio_backend`` deprecation,
s3prl's "ESPnet is not installed" log line) and builds s3prl's HuBERT positional convolution
(torch's ``weight_norm`` FutureWarning) and reads a clip with ``torchaudio.load`` as s3prl's
datasets do (torchaudio's TorchCodec notice), once as it is and once after
:func:`quiet_third_party`; warnings of our own kind still show.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CODE = """
import sys, warnings
warnings.simplefilter("default")
if sys.argv[1] == "quiet":
    from daisy_upstream.integration.quiet import quiet_third_party
    quiet_third_party()
import s3prl.hub
import torch
torch.nn.utils.weight_norm(torch.nn.Conv1d(2, 2, 3), name="weight", dim=2)
import torchaudio
torchaudio.load(sys.argv[2])  # as s3prl's datasets read audio
warnings.warn("a warning of our own about torchaudio", UserWarning)
"""
NOISE = (
    "set_audio_backend has been deprecated",
    "ESPnet is not installed",
    "weight_norm` is deprecated",
    "load_with_torchcodec",
)
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
    for message in NOISE:
        assert message in loud  # the filters have something real to remove
        assert message not in quiet
    assert "a warning of our own about torchaudio" in quiet
