"""Stage 1's DataLoader: the sampler holds the batch order, workers change nothing, problems reach the caller."""

from __future__ import annotations

import itertools

import torch

from daisy_upstream.audio.corpus import AudioCorpus
from daisy_upstream.training.batch_feed import EpochSampler
from daisy_upstream.training.stage1 import train_branches
from daisy_upstream.training.stage1_state import epoch_order


def test_sampler_continues_from_a_saved_position_through_later_epochs():
    keys = list(itertools.islice(EpochSampler(7, 3, rank=1, world=2, epoch=1, position=2), 5))
    one, two = epoch_order(7, 3, 1, 1, 2), epoch_order(7, 3, 2, 1, 2)
    assert len(one) == 3  # 7 batches, 2 ranks: 3 each
    assert keys == [
        (1, 2, one[2]),
        (2, 0, two[0]),
        (2, 1, two[1]),
        (2, 2, two[2]),
        (3, 0, epoch_order(7, 3, 3, 1, 2)[0]),
    ]
    assert list(itertools.islice(EpochSampler(7, 3, 0, 1, epoch=0, position=7), 1))[0][:2] == (1, 0)  # epoch done


def test_two_workers_and_a_resume_equal_one_process(write_checkpoint, audio_dir, tmp_path, fast_config):
    """Noise mixed in the workers, a stop and resume across an epoch boundary, a file that fails to
    decode in a worker: the branches equal a run without workers, and the failure is counted."""
    ckpt = write_checkpoint(num_layers=2, branches=False)
    runs = {}
    for name, workers, stops in (("plain", 0, [None]), ("workers", 2, [3, None])):
        corpus = AudioCorpus.from_source(audio_dir)
        broken = corpus.split(0.2, 0)[0].items[0].path  # a training file, fine when scanned
        good = broken.read_bytes()
        broken.write_bytes(b"RIFF" + bytes(200))  # ... and undecodable when loaded
        try:
            for stop in stops:
                train_branches(
                    ckpt,
                    corpus,
                    tmp_path / f"{name}.pt",
                    tmp_path / f"w_{name}",
                    fast_config(max_steps=7, noise_prob=1.0, workers=workers, stop_after=stop),
                    progress=False,
                )
        finally:
            broken.write_bytes(good)
        runs[name] = (torch.load(tmp_path / f"{name}.pt", weights_only=True)["daisy"]["branches"], corpus.problems)
    for key, value in runs["plain"][0].items():
        assert torch.equal(value, runs["workers"][0][key]), key
    for _, problems in runs.values():  # the worker's failure reached the caller's record
        assert [reason.split(":")[0] for _, reason in problems.skipped] == ["unreadable"]
