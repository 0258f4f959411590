"""Which corpus feeds which Table 1 task (issue 19: ASR gets its own, bigger corpus by default)."""

from __future__ import annotations

import json

import pytest

from daisy_upstream.cli import main
from daisy_upstream.evaluation.table1.corpora import assign_corpora, parse_corpus_args, task_layout
from daisy_upstream.factory.corpus.build import make_corpus

TASKS = ["asr", "voxceleb1", "enhancement_stft", "separation_stft"]


def test_asr_gets_its_own_corpus_unless_the_hours_are_equal(tmp_path):
    two = assign_corpora(TASKS, {}, tmp_path, hours=1.0, asr_hours=4.0)
    assert two == {
        "asr": tmp_path / "corpus_asr",
        "voxceleb1": tmp_path / "corpus",
        "enhancement_stft": tmp_path / "corpus",
        "separation_stft": tmp_path / "corpus",
    }
    assert set(assign_corpora(TASKS, {}, tmp_path, hours=2.0, asr_hours=2.0).values()) == {tmp_path / "corpus"}


def test_named_corpora_per_task_then_for_every_task(tmp_path):
    for name in ("mine", "big"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "corpus.json").write_text("{}")
    given = parse_corpus_args([str(tmp_path / "mine"), f"asr={tmp_path / 'big'}"])
    assert given == {None: (tmp_path / "mine").resolve(), "asr": (tmp_path / "big").resolve()}
    assigned = assign_corpora(["asr", "voxceleb1"], given, tmp_path / "out", hours=1.0, asr_hours=4.0)
    assert assigned == {"asr": (tmp_path / "big").resolve(), "voxceleb1": (tmp_path / "mine").resolve()}
    only_asr = assign_corpora(["asr", "voxceleb1"], {"asr": given["asr"]}, tmp_path / "out", 1.0, 4.0)
    assert only_asr == {"asr": (tmp_path / "big").resolve(), "voxceleb1": tmp_path / "out" / "corpus"}


@pytest.mark.parametrize(
    "items, message",
    [
        (["tts=somewhere"], "unknown task 'tts'"),
        (["nowhere"], "no corpus.json in nowhere"),
        (["asr=nowhere"], "no corpus.json in nowhere"),
    ],
)
def test_bad_corpus_arguments_say_what_is_wrong(tmp_path, monkeypatch, items, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        parse_corpus_args(items)


def test_a_task_given_twice_is_refused(tmp_path):
    (tmp_path / "corpus.json").write_text("{}")
    with pytest.raises(ValueError, match="given twice"):
        parse_corpus_args([f"asr={tmp_path}", f"asr={tmp_path}"])


class Recorder:
    """Stands in for :class:`daisy_upstream.evaluation.table1.Table1`: records its inputs."""

    calls = []

    def __init__(self, out, ckpt, configs, **kwargs):
        Recorder.calls.append((out, configs, kwargs))
        self.out = out

    def run(self):
        (self.out / "table1.md").write_text("| table |\n")


def test_the_command_makes_two_corpora_and_points_each_task_and_fig5_at_its_own(tmp_path, monkeypatch):
    """Real (tiny) corpora: ASR's has the asr and noisy layouts at --asr-hours, SID's its own at --hours."""
    monkeypatch.setattr("daisy_upstream.evaluation.table1.Table1", Recorder)
    Recorder.calls = []
    out = tmp_path / "t1"
    assert (
        main(
            [
                "table1",
                "--out",
                str(out),
                "--tasks",
                "asr",
                "voxceleb1",
                "--hours",
                "0.01",
                "--asr-hours",
                "0.02",
                "--workers",
                "2",
            ]
        )
        == 0
    )
    ((_, configs, kwargs),) = Recorder.calls
    asr, sid = (
        json.loads((out / "corpus_asr" / "corpus.json").read_text()),
        json.loads((out / "corpus" / "corpus.json").read_text()),
    )
    assert (asr["settings"]["hours"], sid["settings"]["hours"]) == (0.02, 0.01)
    # ASR's: 50 voices an hour, at least 2 per split; the other: make-corpus's default, max(10, 50 x sqrt(h))
    assert (asr["settings"]["num_speakers"], sid["settings"]["num_speakers"]) == (6, 10)
    assert set(asr["layouts"]) == {"asr", "noisy"} and set(sid["layouts"]) == {"asr", "sid", "noisy"}
    assert configs["asr"]["downstream_expert"]["datarc"]["libri_root"] == asr["layouts"]["asr"]["libri_root"]
    assert configs["voxceleb1"]["downstream_expert"]["datarc"]["file_path"] == sid["layouts"]["sid"]["file_path"]
    assert kwargs["mixed_corpus"] == (out / "corpus_asr").resolve()


def test_a_named_asr_corpus_without_the_mixed_set_runs_without_fig5(tmp_path, monkeypatch):
    monkeypatch.setattr("daisy_upstream.evaluation.table1.Table1", Recorder)
    Recorder.calls = []
    corpus = make_corpus(tmp_path / "c", hours=0.01, seed=5, tasks=["asr"], workers=2, progress=False)
    assert main(["table1", "--out", str(tmp_path / "t1"), "--tasks", "asr", "--corpus", f"asr={corpus}"]) == 0
    ((_, configs, kwargs),) = Recorder.calls
    assert configs["asr"]["downstream_expert"]["datarc"]["libri_root"] == task_layout("asr", corpus)["libri_root"]
    assert kwargs["mixed_corpus"] is None and not (tmp_path / "t1" / "corpus_asr").exists()
    with pytest.raises(ValueError, match="no 'sid' layout for voxceleb1; remake it with that task, or give --corpus"):
        task_layout("voxceleb1", corpus)


def test_a_corpus_for_a_task_not_run_is_refused_before_any_work(tmp_path, capsys):
    corpus = make_corpus(tmp_path / "c", hours=0.01, seed=5, tasks=["asr"], workers=2, progress=False)
    assert main(["table1", "--out", str(tmp_path / "t1"), "--tasks", "voxceleb1", "--corpus", f"asr={corpus}"]) == 2
    assert "--corpus given for ['asr'], which --tasks leaves out" in capsys.readouterr().err
    assert not (tmp_path / "t1").exists()
