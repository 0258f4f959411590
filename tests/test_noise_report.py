import numpy as np
import pytest

from daisy_upstream.cli.noise_report import exit_layers_by_snr
from daisy_upstream.hubconf import daisy_hubert_local


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
