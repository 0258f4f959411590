"""``daisy table1 --out``: a working folder claimed like demo's (daisy_upstream/outputs.py), and
every task config read before any work (issue 18). Table1 itself is replaced by a recorder:
what is tested is which folders the command accepts and what it writes before the table runs."""

from __future__ import annotations

import json

import pytest
import yaml

from daisy_upstream.cli import main
from daisy_upstream.integration.plugin import s3prl_configs
from daisy_upstream.outputs import FOLDER_MANIFEST


class Recorder:
    """Stands in for :class:`daisy_upstream.evaluation.table1.Table1`: records the folder it got."""

    runs = []

    def __init__(self, out, ckpt, configs, **kwargs):
        self.out = out

    def run(self):
        Recorder.runs.append(self.out)
        (self.out / "table1.md").write_text("| table |\n")


@pytest.fixture
def table1(tmp_path, monkeypatch):
    monkeypatch.setattr("daisy_upstream.evaluation.table1.Table1", Recorder)
    Recorder.runs = []
    # s3prl's voxceleb1 config with its /path/to/ placeholders filled: the user's own data
    config = yaml.safe_load((s3prl_configs() / "voxceleb1" / "config.yaml").read_text())
    datarc = config["downstream_expert"]["datarc"]
    for key, value in list(datarc.items()):
        if isinstance(value, str) and value.startswith("/path/to/"):
            datarc[key] = str(tmp_path / "data" / key)
    (tmp_path / "sid.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)

    def run(out, data_config="voxceleb1=sid.yaml"):
        return main(["table1", "--tasks", "voxceleb1", "--data-config", data_config, "--out", str(out)])

    return run


def test_new_claimed_and_earlier_table_folders_are_continued(table1, tmp_path):
    assert table1("t1") == 0  # new: claimed
    assert json.loads((tmp_path / "t1" / FOLDER_MANIFEST).read_text()) == {"tool": "daisy table1", "working": True}
    assert table1("t1") == 0  # claimed before: continued
    earlier = tmp_path / "earlier"  # a table made before the manifest existed: its settings.json
    (earlier / "runs").mkdir(parents=True)
    (earlier / "settings.json").write_text(
        json.dumps({"ckpt": "m.pt", "fixed_layer": 2, "seed": 0, "task_configs": {}})
    )
    assert table1("earlier") == 0
    assert Recorder.runs == [(tmp_path / "t1").resolve()] * 2 + [earlier.resolve()]


def test_a_folder_of_the_users_own_files_is_refused(table1, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "settings.json").write_text('{"theme": "dark"}')  # a settings.json that is not a table's
    assert table1("mine") == 2
    err = capsys.readouterr().err
    assert "is not a working folder of daisy table1" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in mine.iterdir()) == ["settings.json"] and not Recorder.runs


def test_a_task_config_that_is_not_one_is_refused_before_any_work(table1, tmp_path, capsys):
    (tmp_path / "metrics.yaml").write_text("SID_acc: 80.5\n")
    assert table1("t1", "voxceleb1=metrics.yaml") == 2
    err = capsys.readouterr().err
    assert "metrics.yaml: expected an s3prl voxceleb1 task config" in err
    assert not (tmp_path / "t1").exists() and not Recorder.runs
