"""Unlabeled audio input: finding files, loading, skipping, resampling, splitting, batching."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from daisy_upstream.audio.corpus import AudioCorpus, files_from_s3prl_config, make_batches, split_heldout
from daisy_upstream.audio.io import NoAudioError, ResampleWarning, find_audio, load_audio
from daisy_upstream.testing import write_wavs


def test_directory_tree_finds_wav_and_flac(tmp_path):
    write_wavs(tmp_path / "a", [0.3, 0.4])
    write_wavs(tmp_path / "b" / "c", [0.5], fmt="flac", prefix="f")
    (tmp_path / "notes.txt").write_text("not audio")
    files, kind, root = find_audio(tmp_path)
    assert kind == "directory" and len(files) == 3 and root == tmp_path.resolve()
    corpus = AudioCorpus.from_source(tmp_path)
    assert sorted(corpus.keys) == ["a/u0.wav", "a/u1.wav", "b/c/f0.flac"]
    assert sorted(corpus.lengths) == [4800, 6400, 8000]


def test_list_file_relative_to_its_folder_and_missing_counted(tmp_path):
    paths = write_wavs(tmp_path / "data", [0.3, 0.4])
    listing = tmp_path / "lists" / "train.txt"
    listing.parent.mkdir()
    listing.write_text(f"# a comment\n../data/u0.wav\t4800\n\n{paths['u1']}\n../data/gone.wav\n")
    corpus = AudioCorpus.from_source(listing)
    assert len(corpus) == 2
    assert corpus.problems.num_skipped == 1 and "missing" in corpus.problems.skipped[0][1]


def test_librispeech_layout_uses_transcripts(tmp_path):
    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123"
    write_wavs(chapter, [0.3, 0.3], fmt="flac", prefix="84-121123-000")
    write_wavs(chapter, [0.3], fmt="flac", prefix="extra")  # not in the transcript: not used
    (chapter / "84-121123.trans.txt").write_text("84-121123-0000 HELLO\n84-121123-0001 WORLD\n84-121123-0002 MISSING\n")
    files, kind, _ = find_audio(tmp_path / "LibriSpeech")
    assert kind == "librispeech" and [f.name for f in files] == ["84-121123-0000.flac", "84-121123-0001.flac"]
    corpus = AudioCorpus.from_source(tmp_path / "LibriSpeech")
    assert len(corpus) == 2 and corpus.problems.num_skipped == 1


def test_load_mono_float32_and_stereo_mixed(tmp_path):
    stereo = np.stack([np.full(800, 0.5), np.full(800, -0.1)], axis=1).astype(np.float32)
    sf.write(tmp_path / "s.wav", stereo, 16000)
    wav = load_audio(tmp_path / "s.wav")
    assert wav.dtype == torch.float32 and wav.shape == (800,)
    assert torch.allclose(wav, torch.full((800,), 0.2), atol=1e-4)


def test_other_rate_resampled_with_warning_or_rejected(tmp_path):
    write_wavs(tmp_path, [0.5], rate=8000)
    with pytest.warns(ResampleWarning, match="8000 Hz"):
        corpus = AudioCorpus.from_source(tmp_path)
    assert corpus.lengths == [8000] and corpus.problems.resampled[8000] == 1
    assert corpus.load(0).shape == (8000,)
    assert "resampled" in corpus.problems.summary()
    with pytest.raises(ValueError, match="8000 Hz but 16000 Hz is required"):
        AudioCorpus.from_source(tmp_path, resample=False)
    with pytest.raises(ValueError, match="expected 16000 Hz"):
        load_audio(next(tmp_path.glob("*.wav")), resample=False)


def test_bad_files_skipped_and_counted(tmp_path):
    write_wavs(tmp_path, [0.5])
    (tmp_path / "garbage.wav").write_bytes(b"RIFF nonsense" * 10)
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    sf.write(tmp_path / "short.wav", np.zeros(100, dtype=np.float32), 16000)
    corpus = AudioCorpus.from_source(tmp_path)
    assert len(corpus) == 1
    reasons = sorted(reason.split(":")[0] for _, reason in corpus.problems.skipped)
    assert reasons == ["empty", "too short", "unreadable"]
    assert "skipped 3 audio file(s)" in corpus.problems.summary()


def test_all_unreadable_or_nothing_found_is_an_error(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"junk")
    (tmp_path / "b.flac").write_bytes(b"junk")
    with pytest.raises(NoAudioError, match="all 2 file"):
        AudioCorpus.from_source(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoAudioError, match="no audio found"):
        AudioCorpus.from_source(empty)
    with pytest.raises(FileNotFoundError):
        AudioCorpus.from_source(tmp_path / "nowhere")


def test_decode_failure_after_scan_is_counted_once(tmp_path):
    paths = write_wavs(tmp_path, [0.3, 0.3])
    corpus = AudioCorpus.from_source(tmp_path)
    paths["u1"].write_bytes(b"broken later")
    for _ in range(2):
        wavs, kept = corpus.load_batch([0, 1])
        assert len(wavs) == 1 and kept == [0]
    assert corpus.problems.num_skipped == 1


def test_split_is_deterministic_and_order_free():
    keys = [f"utt{i}" for i in range(50)]
    train, held = split_heldout(keys, 0.1, seed=3)
    assert len(held) == 5 and sorted(train + held) == list(range(50))
    reversed_keys = keys[::-1]
    _, held_rev = split_heldout(reversed_keys, 0.1, seed=3)
    assert sorted(reversed_keys[i] for i in held_rev) == sorted(keys[i] for i in held)
    assert split_heldout(keys, 0.1, seed=4)[1] != held
    assert split_heldout(keys[:3], 0.01)[1].__len__() == 1  # at least one held out
    assert split_heldout(keys, 0.0)[1] == []
    with pytest.raises(ValueError):
        split_heldout(keys, 1.0)


def test_batches_by_total_seconds():
    lengths = [16000, 8000, 48000, 16000, 4000, 200000]
    batches = make_batches(lengths, max_seconds=3.0)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for batch in batches:
        assert len(batch) == 1 or sum(lengths[i] for i in batch) <= 48000
    assert batches[0] == [4, 1, 0, 3]  # shortest first, ties by index
    assert batches[-1] == [5]  # longer than the limit: alone
    with pytest.raises(ValueError):
        make_batches(lengths, 0)


def test_s3prl_configs_voxceleb1_and_asr(tmp_path):
    import yaml

    vox = tmp_path / "vox"
    write_wavs(vox / "dev" / "wav" / "id10001" / "vidA", [0.3, 0.3], prefix="0000")
    write_wavs(vox / "test" / "wav" / "id10002" / "vidB", [0.3], prefix="0000")
    meta = tmp_path / "iden_split.txt"
    meta.write_text("1 id10001/vidA/00000.wav\n2 id10001/vidA/00001.wav\n3 id10002/vidB/00000.wav\n")
    config = tmp_path / "voxceleb1" / "config.yaml"
    config.parent.mkdir()
    config.write_text(
        yaml.safe_dump({"downstream_expert": {"datarc": {"file_path": str(vox), "meta_data": str(meta)}}})
    )
    files, _, _ = files_from_s3prl_config(config, "voxceleb1", "train")
    assert [f.parts[-3:] for f in files] == [("id10001", "vidA", "00000.wav")]
    assert len(files_from_s3prl_config(config, "voxceleb1", "test")[0]) == 1
    with pytest.raises(ValueError, match="splits"):
        files_from_s3prl_config(config, "voxceleb1", "valid")

    libri = tmp_path / "LibriSpeech"
    chapter = libri / "dev-clean" / "1" / "2"
    write_wavs(chapter, [0.3], fmt="flac", prefix="1-2-000")
    (chapter / "1-2.trans.txt").write_text("1-2-0000 HI\n")
    asr = tmp_path / "asr.yaml"
    asr.write_text(
        yaml.safe_dump(
            {
                "downstream_expert": {
                    "datarc": {"train": ["train-clean-100"], "dev-clean": ["dev-clean"], "libri_root": str(libri)}
                }
            }
        )
    )
    files, _, _ = files_from_s3prl_config(asr, "asr", "dev-clean")
    assert [f.name for f in files] == ["1-2-0000.flac"]
    with pytest.raises(NoAudioError, match="train-clean-100"):
        files_from_s3prl_config(asr, "asr", "train")
