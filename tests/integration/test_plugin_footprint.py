"""The plugin is small where s3prl loads it: importing s3prl's hub, runner and ``s3prl.nn`` (the
routes of ``-u daisy_*``, ``S3PRLUpstream`` and ESPnet) loads only ``daisy_upstream.core`` and
``daisy_upstream.integration`` of ours, none of the tools; and s3prl's ``Runner.train`` stays its
own unless a task config asks for exact resume.

Checked in a fresh interpreter (this test process has imported everything the other tests did),
with the venv's start-up hook loading the plugin as it does for users.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

from daisy_upstream.integration import exact_resume

REPO = Path(__file__).resolve().parents[2]
PLUGIN = ("daisy_upstream.core", "daisy_upstream.integration")

CODE = """
import json, sys
import s3prl.hub, s3prl.downstream.runner, s3prl.nn
runner = s3prl.downstream.runner.Runner
print(json.dumps({
    "ours": sorted(m for m in sys.modules if m.split(".")[0] == "daisy_upstream"),
    "registered": hasattr(s3prl.hub, "daisy_hubert"),
    "featurizer": s3prl.downstream.runner.Featurizer.__module__,
    "train": [runner.train.__module__, hasattr(runner.train, "__wrapped__")],
}))
"""


def test_importing_the_plugin_through_s3prl_loads_none_of_the_tools():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("DAISY_UPSTREAM_AUTOLOAD", None)
    proc = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    found = json.loads(proc.stdout.splitlines()[-1])
    # the plugin did load (the check below is not vacuous) ...
    assert found["registered"] and found["featurizer"].startswith("daisy_upstream.core.featurizers")
    assert {"daisy_upstream.core.expert", "daisy_upstream.integration.plugin"} <= set(found["ours"])
    # ... and nothing of ours outside core and integration
    assert [m for m in found["ours"] if m != "daisy_upstream" and not m.startswith(PLUGIN)] == []
    # no exact-resume wrapping of s3prl's training loop for a config that does not ask for it
    assert found["train"] == ["s3prl.downstream.runner", False]


def _fake_runner_module() -> types.ModuleType:
    """A stand-in for ``s3prl.downstream.runner``: its ``Runner(args, config)`` keeps both, as
    s3prl 0.4.18's does, and ``train`` reports the training loader it is given."""

    class Expert:
        def get_dataloader(self, split, epoch=None):
            return [f"{split} batch {i}" for i in range(3)]

    class Runner:
        def __init__(self, args, config):
            self.args, self.config, self.init_ckpt = args, config, {}
            self.downstream = types.SimpleNamespace(model=Expert())

        def train(self):
            return self.downstream.model.get_dataloader("train", epoch=0)

    return types.SimpleNamespace(Runner=Runner)


def test_exact_resume_is_installed_only_for_a_config_that_asks():
    runner = _fake_runner_module()
    stock_train = runner.Runner.train
    exact_resume.install_when_asked(runner)
    exact_resume.install_when_asked(runner)  # idempotent: one wrapper
    args = types.SimpleNamespace(seed=1337)

    plain = runner.Runner(args, {"runner": {"total_steps": 4}})
    assert "train" not in vars(plain) and runner.Runner.train is stock_train
    assert plain.train() == ["train batch 0", "train batch 1", "train batch 2"]

    asked = runner.Runner(args, {"runner": {"total_steps": 4, exact_resume.CONFIG_KEY: True}})
    loader = asked.train()
    assert isinstance(loader, exact_resume.EpochBatches) and list(loader) == plain.train()
    assert "get_dataloader" not in vars(asked.downstream.model)  # the expert is left as it was
    assert not exact_resume.asks_for_it({"runner": {exact_resume.CONFIG_KEY: False}})
