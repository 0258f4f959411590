import numpy as np
import pytest

from daisy_upstream.evaluation.noise_report import exit_layers_by_snr
from daisy_upstream.integration.hubconf import daisy_hubert_local


def test_exit_layers_by_snr_mixes_exactly_and_reports_every_clip(tiny_ckpt):
    upstream = daisy_hubert_local(str(tiny_ckpt), model_config={"strategy": "none", "tau": 2.5}).eval()
    rng = np.random.default_rng(0)
    clean = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (8000, 12000, 9000)]
    noises = [rng.standard_normal(20000).astype(np.float32)]
    report = exit_layers_by_snr(upstream, clean, noises, [None, 10.0, 0.0], batch_size=2)
    assert list(report) == ["clean", "10", "0"]
    assert report["clean"]["measured_snr_db"] is None
    assert report["10"]["measured_snr_db"] == pytest.approx(10.0, abs=0.1)
    assert report["0"]["measured_snr_db"] == pytest.approx(0.0, abs=0.1)
    for r in report.values():
        assert len(r["exit_layers"]) == 3
        assert r["min"] <= r["mean"] <= r["max"] and 1 <= r["min"] and r["max"] <= 4


# ---------------------------------------------------------------------------------------
# Fig. 5: DAISY vs a fixed exit of equal average compute on the mixed set
# ---------------------------------------------------------------------------------------
import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from daisy_upstream.evaluation import mixed_set as nr  # noqa: E402

MIXED = [
    ("100-1000-0000", "clean", "A B C"),
    ("100-1000-0001", "snr10", "D E"),
    ("101-1001-0000", "snr5", "F G H I"),
    ("101-1001-0001", "snr0", "J"),
]


def _mixed_corpus(root: Path) -> Path:
    """A corpus.json + noisy/mixed/{wav.scp,meta.tsv} in make-corpus's format."""
    rng = np.random.default_rng(0)
    scp, meta = [], ["condition\tutt\tspeaker\tnoise\ttarget_snr\tmeasured_snr\ttranscript"]
    for n, (utt, cond, text) in enumerate(MIXED):
        path = root / "noisy" / cond / f"{utt}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), (0.1 * rng.standard_normal(8000 + 1000 * n)).astype(np.float32), 16000)
        scp.append(f"{utt} {path}")
        meta.append(f"{cond}\t{utt}\t0\twhite\t0\t0.0\t{text}")
    (root / "noisy" / "mixed").mkdir(parents=True)
    (root / "noisy" / "mixed" / "wav.scp").write_text("\n".join(scp) + "\n")
    (root / "noisy" / "mixed" / "meta.tsv").write_text("\n".join(meta) + "\n")
    (root / "corpus.json").write_text(json.dumps({"layouts": {"noisy": {"root": str(root / "noisy")}}}))
    return root


def test_fixed_layer_of_equal_compute_rounds_half_up():
    assert nr.fixed_layer_of_equal_compute([2, 3]) == 3
    assert nr.fixed_layer_of_equal_compute([2, 2, 3]) == 2
    assert nr.fixed_layer_of_equal_compute([1, 1, 1, 4]) == 2
    with pytest.raises(ValueError):
        nr.fixed_layer_of_equal_compute([])


def test_mixed_set_as_librispeech_layout(tmp_path):
    corpus = _mixed_corpus(tmp_path / "corpus")
    items = nr.read_mixed_set(corpus / "noisy")
    assert [(i["utt"], i["condition"]) for i in items] == [(u, c) for u, c, _ in MIXED]
    layout = nr.write_asr_layout(items, tmp_path / "asr")
    libri = Path(layout["libri_root"])
    assert (libri / "test-clean/100/1000/100-1000.trans.txt").read_text() == "100-1000-0000 A B C\n100-1000-0001 D E\n"
    rows = (Path(layout["bucket_file"]) / "test-clean.csv").read_text().splitlines()
    assert rows[0] == "idx,file_path,length,label" and rows[1] == "0,test-clean/101/1001/101-1001-0001.wav,11000,J"
    assert (libri / "test-clean/101/1001/101-1001-0001.wav").resolve() == (corpus / "noisy/snr0/101-1001-0001.wav")


def test_wer_by_condition(tmp_path):
    (tmp_path / "hyp.ark").write_text("a A X\nb B\nc C C\n")
    (tmp_path / "ref.ark").write_text("a A B\nb B\nc C D E\n")
    got = nr.wer_by_condition(tmp_path / "hyp.ark", tmp_path / "ref.ark", {"a": "clean", "b": "clean", "c": "snr0"})
    assert got["clean"]["wer"] == pytest.approx(100 / 3) and got["snr0"]["wer"] == pytest.approx(200 / 3)
    assert got["overall"] == {"wer": pytest.approx(100 * 3 / 6), "utterances": 3, "words": 6}


def test_mixed_set_comparison_evaluates_daisy_and_the_equal_compute_fixed_exit(tmp_path, tiny_ckpt):
    corpus = _mixed_corpus(tmp_path / "corpus")
    config = tmp_path / "daisy.yaml"
    config.write_text("rho: 1.0\nstrategy: none\n")
    ckpt = tmp_path / "states-5.ckpt"
    torch.save(
        {
            "Args": argparse.Namespace(
                downstream="asr",
                upstream="daisy_hubert_local",
                upstream_ckpt=str(tiny_ckpt),
                upstream_model_config=str(config),
            ),
            "Featurizer": {"exit_counts": torch.tensor([1, 1, 1, 1])},
        },
        ckpt,
    )
    calls = []

    def fake_runner(cmd, log):
        args = cmd[3:]
        calls.append(args)
        over = dict(kv.split("=", 1) for kv in args[args.index("-o") + 1].split(",,"))
        expdir = Path(over["args.expdir"])
        refs = {u: t for u, _, t in MIXED}
        hyp = {u: (t if "fixed" not in over["args.upstream_model_config"] else "Z") for u, t in refs.items()}
        (expdir / "test-clean-noLM-hyp.ark").write_text("".join(f"{u} {h}\n" for u, h in hyp.items()))
        (expdir / "test-clean-noLM-ref.ark").write_text("".join(f"{u} {t}\n" for u, t in refs.items()))

    payload = nr.mixed_set_comparison(tmp_path / "out", corpus, ckpt, runner=fake_runner)
    exits = list(payload["daisy_exit_layers"].values())
    assert payload["fixed_layer"] == nr.fixed_layer_of_equal_compute(exits)
    assert len(calls) == 2 and all(c[c.index("-e") + 1] == str(ckpt) for c in calls)
    fixed_cfg = (tmp_path / "out/mixed_set/fixed_upstream.yaml").read_text()
    assert f"fixed_layer: {payload['fixed_layer']}" in fixed_cfg and "strategy: fixed" in fixed_cfg
    daisy, fixed = payload["wer"].values()
    assert daisy["overall"]["wer"] == 0.0 and fixed["snr5"]["wer"] == 100.0
    assert (tmp_path / "out/mixed_set/wer_by_snr.png").stat().st_size > 0


def test_mixed_set_refuses_a_non_asr_downstream(tmp_path, tiny_ckpt):
    corpus = _mixed_corpus(tmp_path / "corpus")
    ckpt = tmp_path / "sid.ckpt"
    torch.save(
        {
            "Args": argparse.Namespace(downstream="voxceleb1", upstream="daisy_hubert_local"),
            "Featurizer": {"exit_counts": torch.tensor([1, 1, 1, 1])},
        },
        ckpt,
    )
    with pytest.raises(ValueError, match="needs an ASR one"):
        nr.mixed_set_comparison(tmp_path / "out", corpus, ckpt, runner=lambda cmd, log: None)
