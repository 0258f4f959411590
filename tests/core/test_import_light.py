"""Importing the upstream core loads nothing of training, evaluation, the embedded model's
factory, the leaderboard tools or the CLI, and neither matplotlib nor tensorboardX.

Checked in a fresh interpreter (``sys.modules`` of this test process holds everything the
other tests imported). s3prl is imported by the core (its ``UpstreamBase``); the start-up
hook then registers the plugin (``daisy_upstream.integration.plugin``), which is allowed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = (
    "daisy_upstream.training",
    "daisy_upstream.evaluation",
    "daisy_upstream.factory",
    "daisy_upstream.leaderboard",
    "daisy_upstream.cli",
    "matplotlib",
    "tensorboardX",
)

CODE = f"""
import json, sys
import daisy_upstream.core.expert, daisy_upstream.core.featurizers
heavy = {HEAVY!r}
print(json.dumps(sorted(m for m in sys.modules if m.startswith(heavy))))
print(json.dumps(sorted(m for m in sys.modules if m.startswith("daisy_upstream"))))
"""


def test_core_imports_no_heavy_module():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    heavy, ours = (json.loads(line) for line in proc.stdout.splitlines()[-2:])
    assert heavy == []
    # the core itself was imported (the check above is not vacuous)
    assert {"daisy_upstream.core.expert", "daisy_upstream.core.featurizers"} <= set(ours)
