"""The synthetic corpus generator: text, exact-SNR mixing, and the four s3prl layouts,
each parsed by s3prl's own dataset classes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from daisy_upstream.audio import noise
from daisy_upstream.audio.io import read_audio
from daisy_upstream.audio.write import to_pcm16
from daisy_upstream.factory.corpus import text, tts
from daisy_upstream.factory.corpus.build import make_corpus
from daisy_upstream.factory.corpus.plan import plan_corpus

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="needs espeak-ng and sox (apt-get install espeak-ng sox)",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    # 6 speakers (2 per split), ~3-4 utterances each: a few seconds to make
    return make_corpus(tmp_path_factory.mktemp("corpus"), hours=0.03, seed=3, workers=2, num_speakers=6, progress=False)


def test_sentences_distinct_deterministic():
    a = text.generate_sentences(3000, seed=5)
    assert a == text.generate_sentences(3000, seed=5)
    assert a != text.generate_sentences(3000, seed=6)
    assert len(set(a)) == 3000
    assert all(set(s) <= set(text.ALPHABET + " ") for s in a)


def test_mix_at_snr_exact():
    rng = np.random.default_rng(0)
    clean = 0.1 * rng.standard_normal(16000).astype(np.float32)
    for colour in noise.NOISE_COLOURS:
        n = noise.fit_length(noise.sox_noise(colour, 2.0, seed=1), clean.size)
        for snr in (-5.0, 0.0, 5.0, 10.0, 20.0):
            mix = noise.mix_at_snr(clean, n, snr)
            assert abs(noise.measure_snr(clean, mix - clean) - snr) < 1e-3
            # still within 0.1 dB after 16-bit storage
            c, m = to_pcm16(clean), to_pcm16(mix)
            assert abs(noise.measure_snr(c, m - c) - snr) < 0.1
    with pytest.raises(ValueError):
        noise.mix_at_snr(clean, n[:100], 5.0)
    with pytest.raises(ValueError):
        noise.mix_at_snr(np.zeros(10), np.ones(10), 5.0)


def test_noise_augment_mixes_a_share_at_drawn_snrs():
    augment = noise.NoiseAugment(0.5, (3.0, 6.0), seconds=2.0, seed=0)
    clean = np.sin(np.arange(8000) / 7.0).astype(np.float32) * 0.3
    rng = np.random.default_rng(0)
    outs = [augment(clean, rng) for _ in range(40)]
    mixed = [o for o in outs if not np.array_equal(o, clean)]
    assert 10 < len(mixed) < 30 and all(o.dtype == np.float32 for o in outs)
    for o in mixed:
        assert 3.0 - 1e-3 <= noise.measure_snr(clean, o - clean) <= 6.0 + 1e-3
    again = [augment(clean, np.random.default_rng(0)) for _ in range(1)]
    assert np.array_equal(again[0], outs[0])  # deterministic for the generator's seed
    assert np.array_equal(noise.NoiseAugment(0.0)(clean, rng), clean)
    with pytest.raises(ValueError, match="probability"):
        noise.NoiseAugment(1.5)


def test_bad_arguments(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="hours"):
        make_corpus(tmp_path, hours=0)
    with pytest.raises(ValueError, match="unknown task"):
        make_corpus(tmp_path, hours=0.01, tasks=["asr", "tts"])
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="apt-get install espeak-ng"):
        make_corpus(tmp_path, hours=0.01)


def test_plan_and_synthesis_deterministic():
    variants = tts.espeak_variants()
    p1, p2 = plan_corpus(0.05, 11, variants), plan_corpus(0.05, 11, variants)
    assert p1.utterances == p2.utterances and p1.speakers == p2.speakers
    u = p1.utterances[0]
    w1 = tts.synthesize(p1.speakers[u.speaker], u.tts_text)
    w2 = tts.synthesize(p1.speakers[u.speaker], u.tts_text)
    assert np.array_equal(w1, w2) and w1.dtype == np.float32 and w1.size > 8000
    # held-out speakers and sentences
    spk = {s: {x.speaker for x in p1.by_split(s)} for s in ("train", "dev", "test")}
    assert not (spk["train"] & spk["test"]) and not (spk["train"] & spk["dev"])
    assert len({x.transcript for x in p1.utterances}) == len(p1.utterances)


def test_manifest(corpus):
    m = json.loads((corpus / "corpus.json").read_text())
    assert m["seed"] == 3 and set(m["layouts"]) >= {"asr", "sid", "se", "ss", "noisy"}
    assert m["counts"]["train_speakers"] == 2 and sum(m["hours"].values()) > 0


def test_asr_layout_parses(corpus):
    pytest.importorskip("pandas")
    from s3prl.downstream.asr.dataset import SequenceDataset
    from s3prl.downstream.asr.dictionary import Dictionary

    root = corpus / "asr"
    d = Dictionary.load(str(root / "char.dict"))
    assert len(d.symbols) - d.nspecial == 28
    ds = SequenceDataset(
        "test",
        2,
        d,
        libri_root=str(root / "LibriSpeech"),
        bucket_file=str(root / "len_for_bucket"),
        test=["test-clean"],
    )
    wavs, labels, names = ds[0]
    trans = {}
    for f in (root / "LibriSpeech" / "test-clean").rglob("*.trans.txt"):
        for line in f.read_text().splitlines():
            k, v = line.split(" ", 1)
            trans[k] = v
    for w, lab, name in zip(wavs, labels, names):
        assert w.ndim == 1 and w.size > 1000
        decoded = d.string(lab).replace(" ", "").replace("|", " ").strip()
        assert decoded == trans[name]


def test_sid_layout_parses(corpus, tmp_path, monkeypatch):
    pytest.importorskip("librosa")
    import s3prl.downstream.voxceleb1.dataset as vox

    # s3prl caches the file lists in its package folder keyed only by split: use a fresh one
    monkeypatch.setattr(vox, "CACHE_PATH", str(tmp_path) + "/")
    root = corpus / "sid"
    sets = {
        mode: vox.SpeakerClassifiDataset(mode, root, str(root / "iden_split.txt")) for mode in ("train", "dev", "test")
    }
    assert all(len(s) > 0 for s in sets.values())
    assert set(sets["test"].label) <= set(sets["train"].label) == set(range(6))
    wav, label, name = sets["dev"][0]
    assert wav.ndim == 1 and 0 <= label < 6


def test_se_layout_parses(corpus):
    pytest.importorskip("librosa")
    from s3prl.downstream.enhancement_stft.dataset import SeparationDataset

    ds = SeparationDataset(str(corpus / "se" / "test"), src=["noisy"], tgt=["clean"], hop_length=320)
    reco, src, src_feat, tgt_samps, tgt_feats = ds[0]
    assert src.shape == tgt_samps[0].shape and src_feat.shape[1] == 257
    meta = (corpus / "se" / "train" / "meta.tsv").read_text().splitlines()[1:]
    for line in meta:
        _, _, target, measured = line.split("\t")
        assert abs(float(target) - float(measured)) < 0.1


def test_ss_layout_parses(corpus):
    pytest.importorskip("librosa")
    from s3prl.downstream.separation_stft.dataset import SeparationDataset

    ds = SeparationDataset(str(corpus / "ss" / "train"), src=["mix_clean"], tgt=["s1", "s2"], hop_length=320)
    assert len(ds) >= 1
    reco, mix, _, (s1, s2), _ = ds[0]
    assert mix.shape == s1.shape == s2.shape
    assert np.max(np.abs(mix - (s1 + s2))) < 1e-4


def test_noisy_copies_exact_snr(corpus):
    root = corpus / "noisy"
    for cond, target in (("snr10", 10.0), ("snr5", 5.0), ("snr0", 0.0)):
        rows = (root / cond / "meta.tsv").read_text().splitlines()[1:]
        assert rows
        for row in rows:
            utt, _, kind, tgt, measured, _ = row.split("\t")
            assert float(tgt) == target and abs(float(measured) - target) < 0.1
            clean = read_audio(root / "clean" / f"{utt}.wav")
            mix = read_audio(root / cond / f"{utt}.wav")
            if np.max(np.abs(mix)) < 0.98:  # not rescaled against clipping
                assert abs(noise.measure_snr(clean, mix - clean) - target) < 0.1
    mixed = (root / "mixed" / "meta.tsv").read_text().splitlines()[1:]
    conds = [r.split("\t")[0] for r in mixed]
    assert set(conds) <= {"clean", "snr10", "snr5", "snr0"} and len(conds) == len(
        (root / "clean" / "wav.scp").read_text().splitlines()
    )


def test_real_recordings(corpus):
    from daisy_upstream.factory.corpus.derived import real_speech_available

    if not real_speech_available():
        pytest.skip("pocketsphinx-testdata is not installed")
    rows = (corpus / "real" / "snr5" / "meta.tsv").read_text().splitlines()[1:]
    assert len(rows) == 5
    for row in rows:
        utt, spk, kind, target, measured, transcript = row.split("\t")
        assert abs(float(measured) - 5.0) < 0.1 and transcript.isupper()
        assert read_audio(corpus / "real" / "snr5" / f"{utt}.wav").size > 16000


def test_cli_errors_are_clear(tmp_path, capsys):
    from daisy_upstream.cli import main

    with pytest.raises(SystemExit) as exit_:  # argparse's own one line
        main(["make-corpus", str(tmp_path / "c"), "--hours", "0"])
    assert exit_.value.code == 2
    assert (
        capsys.readouterr().err
        == "daisy make-corpus: error: argument --hours: must be > 0, got 0 (see daisy make-corpus --help)\n"
    )
    assert main(["make-corpus", str(tmp_path / "c"), "--tasks", "asr,nope"]) == 2
    assert "unknown task" in capsys.readouterr().err


def test_corpus_deterministic_for_a_seed(tmp_path):
    a = make_corpus(tmp_path / "a", hours=0.01, seed=9, tasks=["asr"], workers=2, num_speakers=6, progress=False)
    b = make_corpus(tmp_path / "b", hours=0.01, seed=9, tasks=["asr"], workers=1, num_speakers=6, progress=False)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "corpus.json")
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != "corpus.json")
    assert files_a == files_b and len(files_a) > 6
    for rel in files_a:
        if rel.suffix == ".flac":
            assert np.array_equal(read_audio(a / rel), read_audio(b / rel)), rel
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_folder_with_other_settings_is_refused(corpus):
    with pytest.raises(ValueError, match="already holds a corpus"):
        make_corpus(corpus, hours=0.03, seed=4, workers=2, num_speakers=6, progress=False)


@pytest.mark.parametrize("given", ["new", "empty"])
def test_a_full_disk_is_one_line_and_leaves_no_corpus(given, tmp_path, monkeypatch, capsys):
    """On a full disk make-corpus ended in ``LibsndfileError`` and left a partial folder. The
    fault is injected where the audio is written (tests/test_atomic.py turns a real OS error of
    libsndfile into this one); the first files are written, the third meets a full disk."""
    import errno
    import os

    from daisy_upstream.cli import main
    from daisy_upstream.factory.corpus import build

    written = []

    def fill_up(path, wav, *args, **kwargs):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path) + ".partial")
        written.append(path)
        return build_write(path, wav, *args, **kwargs)

    build_write = build.write_audio
    monkeypatch.setattr(build, "write_audio", fill_up)
    out = tmp_path / "corpus"
    if given == "empty":  # a folder the user made for it: it stays, with nothing of the run in it
        out.mkdir()
    args = ["make-corpus", str(out), "--hours", "0.01", "--speakers", "6", "--tasks", "asr", "--workers", "1"]
    assert main([*args, "--quiet"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"daisy make-corpus: error: cannot write {out}: No space left on device (free some space or write elsewhere)"
    ]
    assert len(written) == 2
    if given == "new":
        assert list(tmp_path.iterdir()) == []
    else:
        assert list(tmp_path.iterdir()) == [out] and list(out.iterdir()) == []


def test_a_folder_claimed_by_another_command_is_refused(tmp_path):
    from daisy_upstream.outputs import FOLDER_MANIFEST, OutputRefused, claim_working_folder

    claim_working_folder(tmp_path / "d", "demo")
    (tmp_path / "d" / "notes.txt").write_text("demo's")
    with pytest.raises(OutputRefused, match="not a working folder of daisy make-corpus"):
        make_corpus(tmp_path / "d", hours=0.01, tasks=["asr"], workers=1, num_speakers=6, progress=False)
    assert json.loads((tmp_path / "d" / FOLDER_MANIFEST).read_text())["tool"] == "daisy demo"
