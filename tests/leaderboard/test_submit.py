"""``daisy submit``: the public-set predict.zip layout for every task, and the refusals.

Fixtures are experiment directories holding the exact files s3prl 0.4.18's runner writes for
the test split (source of each name in the installed s3prl, ``s3prl/downstream/...``):

* pr, sf: ``ctc/expert.py`` writes ``f"{split}-hyp.ark"`` -> ``test-hyp.ark``
* sid: ``voxceleb1/expert.py``; ks: ``speech_commands/expert.py``; sv: ``sv_voxceleb1/expert.py``:
  ``f"{mode}_predict.txt"`` -> ``test_predict.txt``
* ic: ``fluent_commands/expert.py`` ``f"{mode}_predict.csv"`` -> ``test_predict.csv``
* er: ``emotion/expert.py`` ``f"{mode}_{self.fold}_predict.txt"`` -> ``test_fold1_predict.txt``
* asr: ``asr/expert.py`` ``f"{split}-{lm}-hyp.ark"`` with split ``test-clean`` and lm ``noLM``/``LM``
* qbe: ``quesst14_dtw/expert.py`` ``benchmark.stdlist.xml``
* sd: ``diarization/expert.py`` ``scoring/predictions/{rec_id}.h5`` and ``frame_shift`` in the expdir
* se: ``enhancement_stft/expert.py``; ss: ``separation_stft/expert.py``: ``f"{mode}_metrics.txt"``
* st: ``speech_translation/expert.py`` ``f"{output_prefix}-st-{mode}.tsv"`` -> ``output-st-test.tsv``

The zip members are those of s3prl's ``s3prl/submit/submit.py`` (see SUPERB_SUBMISSION.md).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from daisy_upstream.leaderboard.submit import TASKS, SubmissionError, parse_pairs, write_predict_zip

# task -> (files the runner writes in its expdir, members expected in predict.zip)
RUNNER_FILES = {
    "pr": (["test-hyp.ark"], ["predict/pr_public/predict.ark"]),
    "sid": (["test_predict.txt"], ["predict/sid_public/predict.txt"]),
    "ks": (["test_predict.txt"], ["predict/ks_public/predict.txt"]),
    "ic": (["test_predict.csv"], ["predict/ic_public/predict.csv"]),
    **{f"er_fold{k}": ([f"test_fold{k}_predict.txt"], [f"predict/er_fold{k}_public/predict.txt"]) for k in range(1, 6)},
    "asr_no_lm": (["test-clean-noLM-hyp.ark"], ["predict/asr_public/predict.ark"]),
    "asr_with_lm": (["test-clean-LM-hyp.ark"], ["predict/asr_lm_public/predict.ark"]),
    "qbe": (["benchmark.stdlist.xml"], ["predict/qbe_public/benchmark.stdlist.xml"]),
    "sf": (["test-hyp.ark"], ["predict/sf_public/predict.ark"]),
    "sv": (["test_predict.txt"], ["predict/sv_public/predict.txt"]),
    "sd": (
        ["scoring/predictions/reco1.h5", "scoring/predictions/reco2.h5", "frame_shift"],
        [
            "predict/sd_public/scoring/predictions/reco1.h5",
            "predict/sd_public/scoring/predictions/reco2.h5",
            "predict/sd_public/frame_shift",
        ],
    ),
    "se": (["test_metrics.txt"], ["predict/se_public/metrics.txt"]),
    "ss": (["test_metrics.txt"], ["predict/ss_public/metrics.txt"]),
    "st": (["output-st-test.tsv"], ["predict/st_public/predict.tsv"]),
}


def make_expdir(root: Path, task: str) -> Path:
    expdir = root / task
    for name in RUNNER_FILES[task][0]:
        path = expdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{task} {name}\n")
    # runner by-products that must not be submitted
    (expdir / "log.log").write_text("training log\n")
    (expdir / "dev_predict.txt").write_text("dev\n")
    return expdir


def test_every_task_of_submit_py_is_covered():
    assert set(RUNNER_FILES) == set(TASKS)


@pytest.mark.parametrize("task", sorted(RUNNER_FILES))
def test_layout_of_each_task(tmp_path, task):
    expdir = make_expdir(tmp_path, task)
    out = tmp_path / "predict.zip"
    members, _ = write_predict_zip({task: expdir}, out)
    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == sorted(RUNNER_FILES[task][1]) == sorted(members)
        for name, member in zip(RUNNER_FILES[task][0], RUNNER_FILES[task][1]):
            assert archive.read(member).decode() == f"{task} {name}\n"


def test_all_tasks_together_and_the_asr_alias(tmp_path):
    pairs = [f"{t}={make_expdir(tmp_path, t)}" for t in RUNNER_FILES if t != "asr_no_lm"]
    pairs.append(f"asr={make_expdir(tmp_path, 'asr_no_lm')}")
    out = tmp_path / "predict.zip"
    members, warnings = write_predict_zip(parse_pairs(pairs), out)
    assert warnings == []  # all five ER folds
    assert sorted(zipfile.ZipFile(out).namelist()) == sorted(m for _, ms in RUNNER_FILES.values() for m in ms)


def test_fewer_than_five_er_folds_is_a_warning(tmp_path):
    tasks = {t: make_expdir(tmp_path, t) for t in ("er_fold1", "er_fold2", "sid")}
    members, warnings = write_predict_zip(tasks, tmp_path / "predict.zip")
    assert len(members) == 3
    assert len(warnings) == 1 and "2 of 5 folds" in warnings[0] and "NOT be scored" in warnings[0]


@pytest.mark.parametrize("problem", ["missing", "empty", "whitespace", "no_expdir", "sd_empty"])
def test_refusals_name_task_and_file_and_write_no_zip(tmp_path, problem):
    good = make_expdir(tmp_path, "sid")
    task = "sd" if problem == "sd_empty" else "pr"
    bad = make_expdir(tmp_path, task)
    if problem == "missing":
        (bad / "test-hyp.ark").unlink()
    elif problem == "empty":
        (bad / "test-hyp.ark").write_text("")
    elif problem == "whitespace":  # issue 18: used to be zipped as a prediction file
        (bad / "test-hyp.ark").write_text("  \n\t\n")
    elif problem == "no_expdir":
        bad = tmp_path / "nowhere"
    else:
        for f in (bad / "scoring" / "predictions").iterdir():
            f.unlink()
    out = tmp_path / "predict.zip"
    with pytest.raises(SubmissionError) as error:
        write_predict_zip({"sid": good, task: bad}, out)
    message = str(error.value)
    assert message.startswith(f"{task}:") and "\n" not in message
    assert str(bad) in message
    assert not out.exists() and list(tmp_path.glob(".predict.zip*")) == []


def test_bad_pairs_are_refused():
    with pytest.raises(SubmissionError, match="unknown task 'asr_lm'"):
        parse_pairs(["asr_lm=x"])
    with pytest.raises(SubmissionError, match="TASK=EXPDIR"):
        parse_pairs(["sid"])
    with pytest.raises(SubmissionError, match="given twice"):
        parse_pairs(["asr=x", "asr_no_lm=y"])


# --- issue 35: nothing outside the experiment directories goes into the zip ----------------------


def test_a_prediction_that_links_outside_its_experiment_is_refused(tmp_path, capsys):
    """A link to a file outside the experiment folder (a system secret) was packed, exit 0."""
    from daisy_upstream.cli import main

    secret = tmp_path / "secret.txt"
    secret.write_text("root:password\n")
    exp = tmp_path / "sid_exp"
    exp.mkdir()
    (exp / "test_predict.txt").symlink_to(secret)
    with pytest.raises(SubmissionError, match=r"sid: .*test_predict.txt is a symbolic link to .*secret.txt, outside"):
        write_predict_zip({"sid": exp}, tmp_path / "predict.zip")
    sd = tmp_path / "sd_exp"
    (sd / "scoring" / "predictions").mkdir(parents=True)
    (sd / "scoring" / "predictions" / "a.h5").symlink_to(secret)
    with pytest.raises(SubmissionError, match="a.h5 is a symbolic link to .*outside the experiment directory"):
        write_predict_zip({"sd": sd}, tmp_path / "predict.zip")
    assert main(["submit", f"sid={exp}", "--out", str(tmp_path / "predict.zip")]) == 2
    assert "outside the experiment directory" in capsys.readouterr().err
    assert not (tmp_path / "predict.zip").exists()


def test_links_inside_the_experiment_and_a_linked_experiment_are_followed(tmp_path):
    exp = tmp_path / "runs" / "sid"
    (exp / "preds").mkdir(parents=True)
    (exp / "preds" / "final.txt").write_text("utt1 id10001\n")
    (exp / "test_predict.txt").symlink_to(exp / "preds" / "final.txt")  # inside: fine
    link = tmp_path / "sid_link"
    link.symlink_to(exp, target_is_directory=True)  # the folder the user named is a link: said so
    members, warnings = write_predict_zip({"sid": link}, tmp_path / "predict.zip")
    assert members == ["predict/sid_public/predict.txt"]
    assert warnings == [f"sid: the experiment directory {link} is a link; reading {exp}"]
    with zipfile.ZipFile(tmp_path / "predict.zip") as archive:
        assert archive.read("predict/sid_public/predict.txt") == b"utt1 id10001\n"
