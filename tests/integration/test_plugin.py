"""Registration in s3prl.hub, the runner's featurizer swap, the start-up hook and the compat shims."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from daisy_upstream.integration import compat, plugin

REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("DAISY_UPSTREAM_AUTOLOAD", None)
    env.update(extra)
    return env


def _python(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter (the venv's, with its start-up hook); its JSON output."""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=_env(**env), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- registration ---------------------------------------------------------------------------
def test_hub_lists_and_resolves_the_daisy_entries():
    from s3prl import hub

    plugin.install()
    for name in plugin.HUB_ENTRIES:
        assert name in hub.options()
        assert callable(getattr(hub, name))
    with pytest.raises(AttributeError, match="did you mean daisy_hubert_local"):
        getattr(hub, "daisy_hubret_local")
    with pytest.raises(AttributeError, match="no upstream 'zzzz'.*options"):
        getattr(hub, "zzzz")


def test_runner_builds_the_daisy_featurizer():
    import s3prl.downstream.runner as runner

    from daisy_upstream.core.featurizers import DaisyFeaturizer

    plugin.install()
    assert runner.Featurizer is DaisyFeaturizer


def test_s3prl_upstream_returns_per_layer_features(write_checkpoint):
    from s3prl.nn.upstream import S3PRLUpstream

    ckpt = write_checkpoint(num_layers=3, layer_entropy=[2.0, 1.4, 0.8])
    model = S3PRLUpstream(
        "daisy_hubert_local", path_or_url=str(ckpt), extra_conf={"strategy": "fixed", "fixed_layer": 2}
    )
    model.eval()
    lengths = torch.LongTensor([16000, 9600, 24000])
    wavs = torch.zeros(3, 24000)
    for i, n in enumerate(lengths.tolist()):
        wavs[i, :n] = 0.1 * torch.randn(n, generator=torch.Generator().manual_seed(i))
    with torch.no_grad():
        all_hs, all_lens = model(wavs, lengths)
    assert model.num_layers == len(all_hs) == len(all_lens) == 4
    expected = (lengths - 1) // 320 + 1  # frames of a 320x-downsampling upstream
    for hs, hs_len in zip(all_hs, all_lens):
        assert hs.shape == (3, int(expected.max()), 32)
        assert hs_len.tolist() == expected.tolist()
    # a fixed exit at layer 2: layer 3 never ran, layers 0..2 did; inside S3PRLUpstream
    # the layer that did not run holds a copy of the exit layer (docs/s3prl_nn.md)
    assert torch.equal(all_hs[3], all_hs[2]) and all_hs[2].abs().sum() > 0
    assert not torch.equal(all_hs[2], all_hs[1])
    # the ESPnet spelling, "daisy_hubert" with a checkpoint, is the same model
    same = S3PRLUpstream("daisy_hubert", path_or_url=str(ckpt), extra_conf={"strategy": "fixed", "fixed_layer": 2})
    same.eval()
    with torch.no_grad():
        again, _ = same(wavs, lengths)
    assert all(torch.equal(a, b) for a, b in zip(all_hs, again))


# -- the start-up hook ----------------------------------------------------------------------
def test_startup_hook_is_lazy_and_registers_on_s3prl_import():
    out = _python(
        "import sys, json\n"
        "before = {m: m in sys.modules for m in ('torch', 's3prl')}\n"
        "from s3prl import hub\n"
        "import s3prl.downstream.runner as runner\n"
        "print(json.dumps({'before': before, 'names': [n for n in dir(hub) if n.startswith('daisy')],\n"
        "                  'featurizer': runner.Featurizer.__name__}))"
    )
    assert out["before"] == {"torch": False, "s3prl": False}
    assert out["names"] == sorted(plugin.HUB_ENTRIES)
    assert out["featurizer"] == "DaisyFeaturizer"


def test_startup_hook_patches_the_s3prl_nn_featurizer_names():
    # the names a user and ESPnet's S3prlFrontend (``from s3prl.nn import Featurizer``)
    # build their featurizer from (s3prl.problem.base's: tests/integration/test_problem_recipe.py)
    out = _python(
        "import json\n"
        "from s3prl.nn import Featurizer\n"
        "import s3prl.nn, s3prl.nn.upstream\n"
        "names = [s3prl.nn.Featurizer, s3prl.nn.upstream.Featurizer, Featurizer]\n"
        "print(json.dumps({'names': sorted({n.__name__ for n in names}), 'same': len(set(names)) == 1,\n"
        "                  'stock': Featurizer._daisy_stock.__module__ + '.' + Featurizer._daisy_stock.__name__}))"
    )
    assert out == {"names": ["DaisyNNFeaturizer"], "same": True, "stock": "s3prl.nn.upstream.Featurizer"}


def test_startup_hook_switched_off_by_env_var():
    import huggingface_hub

    # s3prl's runner imports huggingface_hub's HfFolder, gone from 1.0 on: without the plugin
    # (integration/compat.py restores it) it does not import there, so it is checked after
    stock_runner = tuple(int(p) for p in huggingface_hub.__version__.split(".")[:2]) < (1, 0)
    out = _python(
        "import sys, json\n"
        "from s3prl import hub\n"
        f"if {stock_runner}: import s3prl.downstream.runner as runner\n"
        "off = {'names': [n for n in dir(hub) if n.startswith('daisy')], 'plugin_imported': 'daisy_upstream' in sys.modules}\n"
        f"if {stock_runner}: off['featurizer'] = runner.Featurizer.__name__\n"
        "import daisy_upstream  # an explicit import still registers, s3prl already imported\n"
        "import s3prl.downstream.runner as runner\n"
        "on = {'names': [n for n in dir(hub) if n.startswith('daisy')], 'featurizer': runner.Featurizer.__name__}\n"
        "print(json.dumps({'off': off, 'on': on}))",
        DAISY_UPSTREAM_AUTOLOAD="0",
    )
    assert out["off"] == {
        "names": [],
        "plugin_imported": False,
        **({"featurizer": "Featurizer"} if stock_runner else {}),
    }
    assert out["on"] == {"names": sorted(plugin.HUB_ENTRIES), "featurizer": "DaisyFeaturizer"}


# -- compat shims ---------------------------------------------------------------------------
def test_runner_checkpoints_with_args_load_under_weights_only():
    import s3prl.downstream.runner  # noqa: F401  (applies the shims)

    plugin.install()
    buffer = io.BytesIO()
    torch.save({"Args": argparse.Namespace(upstream="daisy_hubert", seed=1)}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["Args"].upstream == "daisy_hubert"


def _vox_root(root: Path, speakers) -> Path:
    lines = []
    for spk in speakers:
        rel = f"{spk}/v/00001.wav"
        (root / "dev" / "wav" / spk / "v").mkdir(parents=True)
        sf.write(str(root / "dev" / "wav" / rel), np.zeros(1600, dtype=np.float32), 16000)
        lines.append(f"1 {rel}")
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    return root


def test_voxceleb1_file_lists_are_cached_per_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    import s3prl.downstream.voxceleb1.dataset as vox

    plugin.install()
    package_cache = vox.CACHE_PATH
    a = _vox_root(tmp_path / "a", ["id10001", "id10002"])
    b = _vox_root(tmp_path / "b", ["id10003"])
    first = vox.SpeakerClassifiDataset("train", a, str(a / "iden_split.txt"))
    second = vox.SpeakerClassifiDataset("train", b, str(b / "iden_split.txt"))
    again = vox.SpeakerClassifiDataset("train", a, str(a / "iden_split.txt"))
    assert sorted(first.label) == [0, 1] and second.label == [2] and sorted(again.label) == [0, 1]
    assert all(str(b) in path for path in second.dataset)
    assert vox.CACHE_PATH == package_cache  # restored after each constructor
    assert len(list((tmp_path / "cache" / "daisy_upstream" / "voxceleb1").iterdir())) == 2


def test_local_rank_taken_from_torchrun_env(monkeypatch):
    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name="s3prl.run_downstream")
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setenv("LOCAL_RANK", "1")
    argv = ["run_downstream.py", "-m", "train"]
    compat.local_rank_from_torchrun(argv)
    assert argv[-2:] == ["--local_rank", "1"]
    compat.local_rank_from_torchrun(argv)  # given already: unchanged
    assert argv.count("--local_rank") == 1
    other = ["prog"]  # another program: untouched
    main.__spec__ = types.SimpleNamespace(name="something.else")
    compat.local_rank_from_torchrun(other)
    assert other == ["prog"]
    monkeypatch.delenv("LOCAL_RANK")  # not under torchrun: untouched
    main.__spec__ = types.SimpleNamespace(name="s3prl.run_downstream")
    plain = ["run_downstream.py"]
    compat.local_rank_from_torchrun(plain)
    assert plain == ["run_downstream.py"]


def test_runner_module_shims_are_applied():
    import s3prl.downstream.runner as runner

    plugin.install()
    assert getattr(runner.get_optimizer, "_daisy_shim", False)  # every rank counts its steps
    # without CUDA, DDP is built without device_ids (with CUDA, s3prl's own call is kept)
    assert getattr(runner.DDP, "_daisy_shim", False) == (not torch.cuda.is_available())


# -- the installed package ---------------------------------------------------------------------
def test_wheel_carries_the_configs_and_the_hook(tmp_path):
    """An installed copy (not a checkout) must find s3prl_configs/ and the embedded checkpoint."""
    import shutil
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("daisy_upstream", "s3prl_configs"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            ".",
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (wheel,) = (tmp_path / "dist").glob("daisy_upstream-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(site)
    shipped = {p.relative_to(REPO).as_posix() for p in (REPO / "s3prl_configs").rglob("*") if p.is_file()}
    assert {f"daisy_upstream/{p}" for p in shipped} <= names
    assert {"daisy_upstream.pth", "_daisy_upstream_hook.py", "daisy_upstream/resources/daisy_tiny_hubert.pt"} <= names
    code = "from daisy_upstream.integration.plugin import s3prl_configs; print(s3prl_configs())"
    env = {**os.environ, "PYTHONPATH": str(site), "DAISY_UPSTREAM_AUTOLOAD": "0"}
    found = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert found.returncode == 0, found.stderr[-2000:]
    assert Path(found.stdout.strip()) == (site / "daisy_upstream" / "s3prl_configs").resolve()


def test_checkout_finds_the_repository_configs():
    assert plugin.s3prl_configs() == REPO / "s3prl_configs"
    assert (plugin.s3prl_configs() / "voxceleb1" / "config.yaml").is_file()
