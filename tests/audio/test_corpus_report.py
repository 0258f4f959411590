"""The audio report counts every path it skipped (issue 35): a dangling link in an --audio
folder was skipped while the report said "no audio file skipped"."""

from __future__ import annotations

from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.testing import write_wavs


def test_a_dangling_link_is_counted_in_the_report(tmp_path):
    audio = tmp_path / "audio"
    write_wavs(audio, [1.0, 1.1])
    (audio / "gone.wav").symlink_to(tmp_path / "deleted.wav")  # its target was removed
    corpus = AudioCorpus.from_source(audio)
    assert len(corpus) == 2
    summary = corpus.problems.summary()
    assert summary.startswith("skipped 1 audio file(s): 1 dangling link"), summary
    assert "gone.wav" in summary
