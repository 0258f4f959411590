"""Loaded at start-up on the device machine only (tests/gpu/device_check.sh puts this folder on
PYTHONPATH): s3prl 0.4.18 calls ``torchaudio.set_audio_backend`` and names
``torchaudio.sox_effects`` at import time (s3prl/dataio/dataset/load_audio.py:10, 73), both gone
from the device's torchaudio 2.11; neither is used by the upstreams timed there."""

import sys
import types

try:
    import torchaudio
except ImportError:  # no torchaudio at all: s3prl fails to import and says so
    torchaudio = None

if torchaudio is not None:
    if not hasattr(torchaudio, "set_audio_backend"):
        torchaudio.set_audio_backend = lambda backend=None: None
    if "torchaudio.sox_effects" not in sys.modules and not hasattr(torchaudio, "sox_effects"):
        stub = types.ModuleType("torchaudio.sox_effects")
        sys.modules["torchaudio.sox_effects"] = stub
        torchaudio.sox_effects = stub
