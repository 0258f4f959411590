"""``daisy superb-score``: a hand-computed case (Score-P included), missing tasks, parameters."""

from __future__ import annotations

import json

import pytest

from daisy_upstream.cli import main
from daisy_upstream.leaderboard.superb_score import parse_params, read_metrics, superb_score

# Every public-set metric at a point whose score is easy by hand, s = 1000 (v - b) / (t - b)
# with the reference points [baseline, topline] of SUPERB_SUBMISSION.md:
PUBLIC = {
    "PR_per": 42.77,  # (82.01 + 3.53) / 2, the midpoint      -> 500
    "SID_acc": 90.3,  # topline                               -> 1000
    "QbE_mtwv": 0.58,  # baseline                              -> 0
    "ASR_wer": 3.62,  # topline                               -> 1000
    "SV_eer": 9.56,  # baseline                              -> 0
    "ER_acc": 67.62,  # topline                               -> 1000
    "SD_der": 5.62,  # topline                               -> 1000
    "ST_bleu": 20.01,  # topline                               -> 1000
    "SE_pesq": 2.50,  # 1000 (2.50 - 2.55) / (2.64 - 2.55)    -> -5000 / 9
    "SE_stoi": 94.2,  # topline                               -> 1000
    "SS_sisdri": 9.2341,  # baseline                              -> 0
}


def test_hand_computed_public_score_and_score_p():
    result = superb_score(PUBLIC, "public", params_millions=parse_params("95000000"))
    assert result["params_millions"] == 95.0
    se = (-5000 / 9 + 1000) / 2  # SE: the mean of its two metric scores
    assert result["tasks"]["SE"]["score"] == pytest.approx(se)
    # 10 tasks: PR 500, SID 1000, QbE 0, ASR 1000, SV 0, ER 1000, SD 1000, ST 1000, SE, SS 0
    assert result["score"] == pytest.approx((500 + 5 * 1000 + se) / 10)  # 572.22
    # Score-P: each metric score > 0 divided by max(95, 1), scores <= 0 kept, then the averages:
    se_p = (-5000 / 9 + 1000 / 95) / 2
    assert result["tasks"]["SE"]["score_p"] == pytest.approx(se_p)
    assert result["score_p"] == pytest.approx((500 / 95 + 5 * 1000 / 95 + 0 + se_p) / 10)  # -21.46
    assert result["missing"] == []


def test_a_small_model_is_divided_by_one_and_missing_tasks_are_named():
    result = superb_score({"SID_acc": 55.179087, "KS_acc": 96.66}, "paper", params_millions=0.5)
    # SID: 1000 (55.179087 - 20.058174) / (90.3 - 20.058174) = 500; Score-P divides by max(0.5, 1) = 1
    assert result["tasks"]["SID"]["score"] == pytest.approx(500.0)
    assert result["tasks"]["SID"]["score_p"] == pytest.approx(500.0)
    assert result["score"] is None and result["score_p"] is None
    assert result["missing"] == [
        "PR_per",
        "QbE_mtwv",
        "IC_acc",
        "ASR_wer",
        "SV_eer",
        "ER_acc",
        "SD_der",
        "SF_f1",
        "SF_cer",
    ]
    assert result["tasks"]["SF"]["score"] is None  # neither SF metric given


def test_params_forms(tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"params": {"upstream": 94_700_000, "branches": 1}}))
    assert parse_params("94.7") == parse_params("94700000") == parse_params("94.7M") == pytest.approx(94.7)
    assert parse_params("94700k") == pytest.approx(94.7) and parse_params(str(profile)) == pytest.approx(94.7)
    with pytest.raises(ValueError, match="--params"):
        parse_params("lots")


def test_names_values_and_warnings(tmp_path):
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"SID_acc_public": 80.5, "SE_stoi": 0.94, "ERfold1_acc": 60.0}))
    values = read_metrics(metrics)
    assert values == {"SID_acc": 80.5, "SE_stoi": 0.94, "ERfold1_acc": 60.0}
    result = superb_score(values)
    assert result["ignored"] == ["ERfold1_acc"] and "SE_stoi 0.94 looks like a fraction" in result["warnings"][0]
    with pytest.raises(ValueError, match="unknown metric"):
        superb_score({"SID_accuracy": 80.0})
    bad = tmp_path / "bad.yaml"
    bad.write_text("SID_acc: high\n")
    with pytest.raises(ValueError, match="must be a number"):
        read_metrics(bad)


def test_cli_writes_json(tmp_path, capsys):
    metrics = tmp_path / "m.yaml"
    metrics.write_text("".join(f"{k}: {v}\n" for k, v in PUBLIC.items()))
    assert main(["superb-score", str(metrics), "--params", "95", "--json", str(tmp_path / "s.json")]) == 0
    assert "SUPERB score (public): 572" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["score_p"] == pytest.approx(
        superb_score(PUBLIC, params_millions=95.0)["score_p"]
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("SID_acc: .nan\n", r"SID_acc is nan; expected a finite number"),
        ("ASR_wer: .inf\n", r"ASR_wer is inf; expected a finite number"),
        ("SID_acc: 180.5\n", r"SID_acc = 180.5 is outside 0..100"),
        ("SID_acc: 0.805\nSE_pesq: 12\n", r"SE_pesq = 12 is outside -0.5..4.5"),
        ("ASR_wer: -3\n", r"ASR_wer = -3 is outside 0..inf"),
    ],
)
def test_non_finite_or_out_of_range_metrics_are_refused(text, message, tmp_path):
    """Issue 18: NaN / inf / out-of-range metrics used to be scored and written as NaN into the JSON."""
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_metrics(path)
    with pytest.raises(ValueError, match=message.split(" is")[0]):
        superb_score(
            {
                k: float(v)
                for k, v in (
                    line.split(": ") for line in text.replace(".nan", "nan").replace(".inf", "inf").splitlines()
                )
            }
        )


def test_params_inf_and_a_json_that_is_not_a_profile_are_refused(tmp_path):
    with pytest.raises(ValueError, match="params must be a finite number > 0"):
        superb_score({"SID_acc": 80.5}, params_millions=float("inf"))
    other = tmp_path / "scores.json"
    other.write_text('{"score": 1}')
    with pytest.raises(ValueError, match="not a 'daisy profile' profile.json"):
        parse_params(str(other))
