import numpy as np
import pytest

from daisy_upstream.audio.noise import measure_snr
from daisy_upstream.evaluation.speech_sets import noisy_copies, pocketsphinx_recordings, segment


def test_noisy_copies_hit_the_snr_within_0_1_db():
    rng = np.random.default_rng(0)
    clean = [rng.standard_normal(16000).astype(np.float32) * 0.1 for _ in range(8)]
    clips = noisy_copies(clean, [None, 10.0, 5.0, 0.0], seed=3)
    assert [c.snr_db for c in clips] == [None, 10.0, 5.0, 0.0] * 2
    for c, x in zip(clips, clean):
        if c.snr_db is None:
            assert np.array_equal(c.wav, x)
        else:
            assert abs(measure_snr(x, c.wav.astype(np.float64) - x) - c.snr_db) < 0.1


def test_segments_of_real_recordings():
    try:
        recordings = pocketsphinx_recordings()
    except FileNotFoundError:
        pytest.fail("pocketsphinx-testdata is part of the set-up (make install); it is missing")
    parts = segment(recordings, [1.0, 2.5, 4.0])
    assert [len(p) for p in parts] == [16000, 40000, 64000]
    assert all(np.abs(p).max() > 0.01 for p in parts)
