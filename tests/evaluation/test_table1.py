"""``daisy table1``: the pure parts (layout, metric parsing, resume) without running s3prl.

The runner outputs under ``tests/data/table1_runner_outputs/`` were written by s3prl 0.4.18's
downstream experts in a real tiny ``daisy table1`` run (one evaluation per task).
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest
import torch

from daisy_upstream.evaluation import table1 as t1
from daisy_upstream.evaluation.table1 import table as t1_table

DATA = Path(__file__).resolve().parents[1] / "data" / "table1_runner_outputs"


# ---------------------------------------------------------------------------------------
# metric parsing from real runner outputs
# ---------------------------------------------------------------------------------------
def test_parse_asr_wer_recomputed_from_the_arks():
    metric = t1.parse_metric("asr", DATA / "asr")
    # the same number s3prl printed for this evaluation ("test-clean wer: ...")
    printed = float((DATA / "asr" / "printed_wer.txt").read_text())
    assert metric["wer"] == pytest.approx(printed, abs=1e-6)
    assert metric["utterances"] == len((DATA / "asr" / "test-clean-noLM-ref.ark").read_text().splitlines())


def test_parse_sid_accuracy_from_log():
    expected = None
    for line in (DATA / "voxceleb1" / "log.log").read_text().splitlines():
        if line.startswith("test at step"):
            expected = 100 * float(line.rsplit(":", 1)[1])
    assert t1.parse_metric("voxceleb1", DATA / "voxceleb1") == {"acc": pytest.approx(expected)}


def test_parse_se_and_ss_metrics():
    se = t1.parse_metric("enhancement_stft", DATA / "enhancement_stft")
    raw = dict(line.split() for line in (DATA / "enhancement_stft" / "test_metrics.txt").read_text().splitlines())
    assert se["pesq"] == pytest.approx(float(raw["pesq"]))
    assert se["stoi"] == pytest.approx(100 * float(raw["stoi"]))  # STOI in %, as the paper
    ss = t1.parse_metric("separation_stft", DATA / "separation_stft")
    raw = dict(line.split() for line in (DATA / "separation_stft" / "test_metrics.txt").read_text().splitlines())
    assert ss == {"si_sdri": pytest.approx(float(raw["si_sdr"]))}


def test_parse_errors_name_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="test_metrics.txt"):
        t1.parse_metric("separation_stft", tmp_path)
    (tmp_path / "log.log").write_text("dev at step 4: 0.5\n")
    with pytest.raises(ValueError, match="test at step"):
        t1.parse_metric("voxceleb1", tmp_path)


def test_word_errors_by_subset(tmp_path):
    (tmp_path / "h.ark").write_text("a X B C\nb D E\n")
    (tmp_path / "r.ark").write_text("a A B C\nb D E F\n")
    assert t1.word_errors(tmp_path / "h.ark", tmp_path / "r.ark") == (2, 6)
    assert t1.word_errors(tmp_path / "h.ark", tmp_path / "r.ark", keys=["a"]) == (1, 3)


# ---------------------------------------------------------------------------------------
# the Markdown layout
# ---------------------------------------------------------------------------------------
def test_markdown_layout_rows_columns_and_missing_cells():
    rows = t1.default_rows(fixed_layer=6)
    assert [r.key for r in rows] == [
        "rho1.0-mean",
        "rho1.0-threshold",
        "rho1.0-min-max",
        "rho0.7-mean",
        "rho0.7-threshold",
        "rho0.7-min-max",
        "fixed",
        "full",
    ]
    cells = {
        "asr": {
            "rho1.0-threshold": {
                "metric": {"wer": 15.453},
                "saved": 0.31541,
                "span": [4, 5, 6],
                "mean_exit_layer": 5.2,
            },
            "full": {"metric": {"wer": 6.42}, "saved": 0.001},
        },
        "enhancement_stft": {
            "fixed": {"metric": {"pesq": 2.6, "stoi": 94.04, "si_sdr": 9.0}, "saved": 0.5, "span": [6]}
        },
    }
    text = t1.format_markdown(cells, rows, ["asr", "enhancement_stft"])
    lines = text.splitlines()
    assert lines[0] == "| method | ASR WER (CER) ↓ | ASR time saved | SE PESQ / STOI ↑ | SE time saved |"
    body = lines[2:10]
    assert [line.split(" | ")[0][2:] for line in body] == [r.label for r in rows]
    assert body[1] == "| DAISY rho=1.0, threshold | 15.45% | 31.54% | – | – |"
    assert body[6] == "| HuBERT first 6L (fixed exit) | – | – | 2.60 / 94.0 | 50.00% |"
    assert body[7] == "| HuBERT, full model | 6.42% | 0.10% | – | – |"
    assert "| DAISY rho=1.0, threshold | 4..6 (mean 5.20) | – |" in lines
    assert "| HuBERT first 6L (fixed exit) | – | 6 |" in lines


def test_training_runs_strategy_none_for_daisy():
    runs = t1.training_configs(t1.default_rows(3))
    assert runs == {
        "rho1.0": {"rho": 1.0, "strategy": "none"},
        "rho0.7": {"rho": 0.7, "strategy": "none"},
        "fixed": {"strategy": "fixed", "fixed_layer": 3},
        "full": {"strategy": "full"},
    }


# ---------------------------------------------------------------------------------------
# resume: a fake runner records the calls and writes what s3prl would
# ---------------------------------------------------------------------------------------
class FakeRunner:
    def __init__(self, fail_on: str = "") -> None:
        self.calls: List[List[str]] = []
        self.fail_on = fail_on

    def __call__(self, cmd: List[str], log: Path) -> None:
        args = cmd[3:]  # python -c CODE ...
        self.calls.append(args)
        mode = args[args.index("-m") + 1]
        if self.fail_on and self.fail_on in " ".join(args):
            raise RuntimeError("runner failed")
        if mode == "train":  # fresh (-p) or resumed (-e); the steps from the -o schedule
            expdir = Path(args[args.index("-p") + 1]) if "-p" in args else Path(args[args.index("-e") + 1]).parent
            override = dict(kv.split("=", 1) for kv in args[args.index("-o") + 1].split(",,"))
            steps = int(override["config.runner.total_steps"])
            torch.save({"Featurizer": {"exit_counts": torch.tensor([1, 3, 2])}}, expdir / f"states-{steps}.ckpt")
        else:
            override = args[args.index("-o") + 1]
            expdir = Path(dict(kv.split("=", 1) for kv in override.split(",,"))["args.expdir"])
            (expdir / "log.log").write_text("test at step 7: 0.25\n")


def _table(tmp_path, runner, monkeypatch, timings=None):
    def fake_time(ckpt, rows, counts, files, repeats=3, threads=1, device="cpu"):
        timings.append(sorted(counts)) if timings is not None else None
        return {
            "modes": {
                r.key: {
                    "saved": 0.1,
                    "ideal_saved": 0.2,
                    "mean_exit_layer": 2.0,
                    "exit_histogram": [0, 1, 0],
                    "median": 1.0,
                }
                for r in rows
            }
        }

    monkeypatch.setattr(t1_table, "time_rows", fake_time)
    monkeypatch.setattr(t1_table, "test_audio_files", lambda task, config: [Path("a.wav")])
    config = {
        "runner": {"total_steps": 7},
        "downstream_expert": {"datarc": {"file_path": "/data", "meta_data": "/data/m.txt"}},
    }
    return t1.Table1(
        tmp_path / "out", tmp_path / "model.pt", {"voxceleb1": config}, fixed_layer=2, runner=runner, log=lambda m: None
    )


def test_resume_skips_finished_cells(tmp_path, monkeypatch):
    timings: List = []
    runner = FakeRunner()
    table = _table(tmp_path, runner, monkeypatch, timings)
    payload = table.run()
    modes = [c[c.index("-m") + 1] for c in runner.calls]
    assert modes == ["train"] * 4 + ["evaluate"] * 8 and len(timings) == 1
    # the DAISY rows evaluate their rho's checkpoint with the span's config
    evaluate = runner.calls[4]
    assert evaluate[evaluate.index("-e") + 1].endswith("train_rho1.0/states-7.ckpt")
    assert "args.upstream_model_config=" in evaluate[evaluate.index("-o") + 1]
    cell = payload["cells"]["voxceleb1"]["rho1.0-mean"]
    # the span from the data (strategy mean over the counts [1, 3, 2]: mean 2.17), no log read
    assert cell["metric"] == {"acc": 25.0} and cell["span"] == [2, 3] and cell["saved"] == 0.1
    assert payload["cells"]["voxceleb1"]["rho0.7-threshold"]["span"] == [1, 2, 3]  # shares > 0.15
    assert (table.out / "table1.md").read_text().count("25.00%") == 8

    # everything finished: a second run calls nothing
    runner2 = FakeRunner()
    _table(tmp_path, runner2, monkeypatch, timings).run()
    assert runner2.calls == [] and len(timings) == 1

    # one evaluation lost its result: only it runs again
    (table.eval_dir("voxceleb1", "rho0.7-min-max") / "cell.json").unlink()
    runner3 = FakeRunner()
    _table(tmp_path, runner3, monkeypatch, timings).run()
    assert len(runner3.calls) == 1 and "eval_rho0.7-min-max" in runner3.calls[0][-1]


def test_failed_cell_raises_and_leaves_no_result(tmp_path, monkeypatch):
    runner = FakeRunner(fail_on="train_rho0.7")
    table = _table(tmp_path, runner, monkeypatch)
    with pytest.raises(RuntimeError, match="runner failed"):
        table.run()
    assert (table.train_dir("voxceleb1", "rho1.0") / "cell.json").is_file()
    assert not (table.train_dir("voxceleb1", "rho0.7") / "cell.json").exists()
    # the next run starts with the failed training (its half-written folder is cleared)
    (table.train_dir("voxceleb1", "rho0.7") / "stale.txt").write_text("x")
    runner2 = FakeRunner()
    _table(tmp_path, runner2, monkeypatch).run()
    assert "train_rho0.7" in runner2.calls[0][runner2.calls[0].index("-p") + 1]
    assert not (table.train_dir("voxceleb1", "rho0.7") / "stale.txt").exists()


def test_other_settings_in_the_same_folder_are_refused(tmp_path, monkeypatch):
    _table(tmp_path, FakeRunner(), monkeypatch).run()
    config = {
        "runner": {"total_steps": 7},
        "optimizer": {"lr": 1.0},
        "downstream_expert": {"datarc": {"file_path": "/data", "meta_data": "/data/m.txt"}},
    }
    other = t1.Table1(
        tmp_path / "out",
        tmp_path / "model.pt",
        {"voxceleb1": config},
        fixed_layer=2,
        runner=FakeRunner(),
        log=lambda m: None,
    )
    with pytest.raises(ValueError, match="voxceleb1 config differs from this one .other than in its steps"):
        other.run()
    # more steps are not another table: the trainings resume from their last checkpoint
    runner = FakeRunner()
    more = {"runner": {"total_steps": 9}, "downstream_expert": config["downstream_expert"]}
    t1.Table1(
        tmp_path / "out", tmp_path / "model.pt", {"voxceleb1": more}, fixed_layer=2, runner=runner, log=lambda m: None
    ).run()
    resumed = [c for c in runner.calls if "train" in c]
    assert len(resumed) == 4 and all(c[c.index("-e") + 1].endswith("states-7.ckpt") for c in resumed)
    moved = t1.Table1(
        tmp_path / "out",
        tmp_path / "model.pt",
        {"voxceleb1": {**more, "runner": {"total_steps": 7}}},
        fixed_layer=3,
        runner=FakeRunner(),
        log=lambda m: None,
    )
    with pytest.raises(ValueError, match="fixed_layer=2"):
        moved.run()


def test_prepare_task_config_fills_paths_and_refuses_placeholders():
    base = {
        "runner": {},
        "optimizer": {"lr": 1},
        "downstream_expert": {
            "datarc": {"file_path": "/path/to/VoxCeleb1", "meta_data": "/path/to/iden_split.txt"},
            "modelrc": {},
        },
    }
    with pytest.raises(ValueError, match="placeholder data paths: downstream_expert.datarc.file_path"):
        t1.prepare_task_config("voxceleb1", base, 10, "small")
    config = t1.prepare_task_config("voxceleb1", base, 10, "small", {"file_path": "/c/sid", "meta_data": "/c/m.txt"})
    assert config["downstream_expert"]["datarc"]["file_path"] == "/c/sid"
    assert config["runner"]["total_steps"] == 10 and config["runner"]["save_step"] == 10
    assert config["runner"]["exact_resume"] is True and config["runner"]["max_keep"] == 2
    # a checkpoint at least every SAVE_EVERY steps and at the last one
    assert (
        t1.prepare_task_config("voxceleb1", base, 2400, "small", {"file_path": "/c", "meta_data": "/m"})["runner"][
            "save_step"
        ]
        == 100
    )
    assert (
        2450
        % t1.prepare_task_config("voxceleb1", base, 2450, "small", {"file_path": "/c", "meta_data": "/m"})["runner"][
            "save_step"
        ]
        == 0
    )
    assert base["downstream_expert"]["datarc"]["file_path"].startswith("/path/to/")  # input untouched


def test_steps_default_per_task():
    """No --steps: each task trains its own SMALL_STEPS (size small) or its config's total_steps (paper)."""
    layout = {"file_path": "/c/sid", "meta_data": "/c/m.txt"}
    base = {
        "runner": {"total_steps": 200000},
        "optimizer": {"lr": 1},
        "downstream_expert": {
            "datarc": {"file_path": "/path/to/VoxCeleb1", "meta_data": "/path/to/iden_split.txt"},
            "modelrc": {},
        },
    }
    small = t1.prepare_task_config("voxceleb1", base, None, "small", layout)
    assert small["runner"]["total_steps"] == t1.SMALL_STEPS["voxceleb1"]
    assert small["runner"]["total_steps"] % small["runner"]["save_step"] == 0  # the last step is saved
    assert t1.prepare_task_config("voxceleb1", base, None, "paper", layout)["runner"]["total_steps"] == 200000
    assert t1.prepare_task_config("voxceleb1", base, 12, "paper", layout)["runner"]["total_steps"] == 12
    with pytest.raises(ValueError, match="steps must be >= 1"):
        t1.prepare_task_config("voxceleb1", base, 0, "small", layout)
    with pytest.raises(ValueError, match="no runner.total_steps"):
        t1.prepare_task_config("voxceleb1", {**base, "runner": {}}, None, "paper", layout)
    assert set(t1.SMALL_STEPS) == set(t1.TASKS)


def test_asr_at_size_small_drops_its_learning_rate_at_a_fixed_step():
    """Size small: ASR's schedule is the fixed-step drop (before its last step), built by s3prl's
    own get_scheduler; size paper keeps the shipped config's (none)."""
    import yaml
    from s3prl.schedulers import get_scheduler

    from daisy_upstream.integration.plugin import s3prl_configs

    base = yaml.safe_load((s3prl_configs() / "asr" / "config.yaml").read_text())
    layout = {"libri_root": "/c/LibriSpeech", "bucket_file": "/c/len", "dict_path": "/c/char.dict"}
    small = t1.prepare_task_config("asr", base, None, "small", layout)
    assert small["scheduler"] == t1.SMALL_SCHEDULES["asr"] and small["scheduler"] is not t1.SMALL_SCHEDULES["asr"]
    assert max(small["scheduler"]["milestones"]) < small["runner"]["total_steps"] == t1.SMALL_STEPS["asr"]
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=small["optimizer"]["lr"])
    get_scheduler(optimizer, small["runner"]["total_steps"], small["scheduler"])
    assert "scheduler" not in base and "scheduler" not in t1.prepare_task_config("asr", base, None, "paper", layout)


def _write_scp(folder: Path, signals: dict) -> None:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for utt, wav in signals.items():
        sf.write(folder / f"{utt}.wav", wav.astype("float32"), 16000, subtype="FLOAT")
        lines.append(f"{utt} {folder / f'{utt}.wav'}")
    (folder / "wav.scp").write_text("\n".join(lines) + "\n")


def test_unprocessed_baselines_have_the_snr_they_were_mixed_at(tmp_path):
    """SE: noisy = clean + noise at 10 dB scores SI-SDR 10 dB; SS: a mixture of two equal-power
    independent sources scores SI-SDR 0 dB against each (SI-SDRi 0 by definition)."""
    import numpy as np

    from daisy_upstream.evaluation.table1.baselines import unprocessed_metric

    rng = np.random.default_rng(0)
    clean = {f"u{i}": 0.1 * rng.standard_normal(32000) for i in range(2)}
    noise = {k: 0.1 * rng.standard_normal(32000) * 10 ** (-10 / 20) for k in clean}
    _write_scp(tmp_path / "se" / "clean", clean)
    _write_scp(tmp_path / "se" / "noisy", {k: clean[k] + noise[k] for k in clean})
    se = unprocessed_metric("enhancement_stft", {"downstream_expert": {"loaderrc": {"test_dir": str(tmp_path / "se")}}})
    assert se["utterances"] == 2 and abs(se["si_sdr"] - 10.0) < 0.3 and 0 < se["stoi"] <= 100 and se["pesq"] > 0
    s1 = {f"m{i}": 0.1 * rng.standard_normal(32000) for i in range(2)}
    s2 = {k: 0.1 * rng.standard_normal(32000) for k in s1}
    _write_scp(tmp_path / "ss" / "s1", s1)
    _write_scp(tmp_path / "ss" / "s2", s2)
    _write_scp(tmp_path / "ss" / "mix_clean", {k: s1[k] + s2[k] for k in s1})
    ss = unprocessed_metric("separation_stft", {"downstream_expert": {"loaderrc": {"test_dir": str(tmp_path / "ss")}}})
    assert ss["si_sdri"] == 0.0 and abs(ss["mixture_si_sdr"]) < 0.2 and ss["utterances"] == 2
    assert unprocessed_metric("asr", {}) is None and unprocessed_metric("voxceleb1", {}) is None
    assert t1.format_metric("separation_stft", ss).startswith("0 (mixture SI-SDR")


def test_fig5_cell_trains_the_fixed_exit_of_equal_compute(tmp_path, monkeypatch):
    """With a mixed-noise corpus, ASR gets a Fig. 5 cell: it trains the fixed exit at the layer of
    equal compute (here 3, not the table's 2) and compares it with the rho 1.0 downstream."""

    calls = {}

    def fake_exits(corpus, ckpt, daisy_config=None, device="cpu"):
        calls["exits_ckpt"] = Path(ckpt)
        return {"fixed_layer": 3, "exits": [3, 3, 2, 4]}

    def fake_comparison(out, corpus, ckpt, fixed_downstream_ckpt=None, prepared=None, **kwargs):
        calls["fixed_ckpt"], calls["prepared"] = Path(fixed_downstream_ckpt), prepared
        return {"wer": {"DAISY": {"overall": {"wer": 50.0}}, "fixed exit at layer 3": {"overall": {"wer": 60.0}}}}

    monkeypatch.setattr(t1_table, "mixed_set_exits", fake_exits)
    monkeypatch.setattr(t1_table, "mixed_set_comparison", fake_comparison)
    monkeypatch.setattr(t1_table, "time_rows", lambda *a, **k: {"modes": {}})
    monkeypatch.setattr(t1_table, "test_audio_files", lambda task, config: [Path("a.wav")])
    runner = FakeRunner()
    config = {"runner": {"total_steps": 7}, "downstream_expert": {"datarc": {}}}
    table = t1.Table1(
        tmp_path / "out",
        tmp_path / "model.pt",
        {"asr": config},
        fixed_layer=2,
        runner=runner,
        mixed_corpus=tmp_path / "corpus",
        log=lambda m: None,
    )
    monkeypatch.setattr(t1_table, "parse_metric", lambda task, expdir: {"wer": 10.0})
    payload = table.run()
    trained = [c[c.index("-p") + 1] for c in runner.calls if "train" in c]
    assert trained[-1].endswith("train_fixed3") and len(trained) == 5
    fixed_config = table.upstream_config_path("train_fixed3").read_text()
    assert "fixed_layer: 3" in fixed_config and "strategy: fixed" in fixed_config
    assert calls["exits_ckpt"].name == "states-7.ckpt" and calls["exits_ckpt"].parent.name == "train_rho1.0"
    assert calls["fixed_ckpt"].parent.name == "train_fixed3" and calls["prepared"]["fixed_layer"] == 3
    assert payload["mixed"]["fixed_layer"] == 3 and "Fig. 5" in (table.out / "table1.md").read_text()
    # resumed: nothing runs again
    runner2 = FakeRunner()
    t1.Table1(
        tmp_path / "out",
        tmp_path / "model.pt",
        {"asr": config},
        fixed_layer=2,
        runner=runner2,
        mixed_corpus=tmp_path / "corpus",
        log=lambda m: None,
    ).run()
    assert runner2.calls == []


def test_asr_cer_counts_characters_of_the_space_joined_words(tmp_path):
    """CER beside WER: 'THE CAT' -> 'THE CAD SAT' is 2 word edits of 2 words (WER 100%) and
    4 character edits ('D SA' inserted before the last 'T') of its 7 characters."""
    (tmp_path / "test-clean-noLM-hyp.ark").write_text("u1 THE CAD SAT\nu2 A\n")
    (tmp_path / "test-clean-noLM-ref.ark").write_text("u1 THE CAT\nu2 A\n")
    metric = t1.parse_metric("asr", tmp_path)
    assert metric["wer"] == pytest.approx(100.0 * 2 / 3)  # u1: 1 substitution + 1 insertion; u2: none; 3 words
    assert metric["cer"] == pytest.approx(100.0 * 4 / 8)  # "THE CAT" -> "THE CA(D SA)T": 4 ins; 7 + 1 chars
    assert t1.format_metric("asr", metric) == f"{metric['wer']:.2f}% ({metric['cer']:.1f}%)"
