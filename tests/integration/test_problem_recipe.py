"""s3prl's own problem recipe ``SuperbSID`` with ``daisy_hubert_local``, through s3prl's ``main``.

``SuperbSID().main([...])`` is what ``s3prl-main SuperbSID --config ...`` runs: it builds
``S3PRLUpstream`` + ``Featurizer`` in s3prl/problem/base.py, trains, saves
``train/<step>/model/state_dict.pt``, and tests ``train/valid_best`` (stage 3). Stage 0 parses
VoxCeleb1 into three CSVs (``id, wav_path, label``, the format SuperbSID.prepare_data
documents); we write those CSVs for a tiny synthetic corpus and start at stage 1 (``start: 1``,
s3prl's own option), so nothing needs VoxCeleb1 or a download.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml
from torch.nn.utils.rnn import pad_sequence

try:
    import s3prl.problem.base as problem_base
    from s3prl.problem import SuperbSID
except ImportError as error:  # pragma: no cover - depends on the 'tasks' extra
    pytest.skip(
        f"s3prl.problem is not importable ({error}); it needs tensorboard, sed_eval, dcase_util and "
        "setuptools<81 (pip install '.[tasks]')",
        allow_module_level=True,
    )

from daisy_upstream.core.featurizers import DaisyFeaturizer
from daisy_upstream.core.policy import exit_span
from daisy_upstream.integration.hubconf import daisy_hubert_local
from daisy_upstream.testing import waves

CONFIG = {"strategy": "threshold", "tau": 0.77, "span_threshold": 0.3}


def _corpus(root: Path) -> None:
    """Three CSVs over 12 short clips of 2 'speakers' (seeded noise, 0.5-1 s at 16 kHz)."""
    clips = waves(*[8000 + 700 * i for i in range(12)], seed=5)
    rows = {"train": [], "valid": [], "test": []}
    for i, clip in enumerate(clips):
        path = root / "wav" / f"utt{i:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), clip.numpy(), 16000)
        split = "train" if i < 8 else "valid" if i < 10 else "test"
        rows[split].append(f"utt{i:02d},{path},speaker_{i % 2}")
    for split, lines in rows.items():
        (root / f"{split}.csv").write_text("id,wav_path,label\n" + "\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from daisy_upstream.atomic import atomic_torch_save
    from daisy_upstream.testing import make_random_checkpoint, sharpen_branches

    root = tmp_path_factory.mktemp("sid")
    ckpt = root / "daisy.pt"
    state = make_random_checkpoint(num_layers=4, layer_entropy=[2.9, 2.8, 2.7, 2.6])
    atomic_torch_save(sharpen_branches(state, 4.0), ckpt)  # as tests/conftest.py tiny_ckpt
    target = root / "exp"
    _corpus(target)
    config = {
        "target_dir": str(target),
        "cache_dir": str(root / "cache"),
        "start": 1,
        "device": "cpu",
        "num_workers": 0,
        "prepare_data": {"dataset_root": str(root)},
        "build_upstream": {"name": "daisy_hubert_local", "path_or_url": str(ckpt), "extra_conf": CONFIG},
        "build_downstream": {"hidden_size": 8},
        "build_batch_sampler": {"train": {"batch_size": 2, "shuffle": False}},
        "train": {"total_steps": 4, "log_step": 2, "eval_step": 2, "save_step": 2, "gradient_accumulate": 1},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    torch.set_num_threads(1)
    root_logger = logging.getLogger()
    handlers, level = list(root_logger.handlers), root_logger.level
    try:
        SuperbSID().main(["--config", str(root / "config.yaml")])
    finally:  # main() replaces the root logger's handlers
        root_logger.handlers, root_logger.level = handlers, level
    return target, ckpt


def test_recipe_builds_the_daisy_featurizer_and_saves_the_exit_statistics(trained):
    target, _ = trained
    assert problem_base.Featurizer.__name__ == "DaisyNNFeaturizer"
    saved = sorted(p.parent.parent for p in (target / "train").glob("*/model/state_dict.pt"))
    assert [p.name for p in saved] == ["step_2", "step_4", "valid_best"]
    for checkpoint in saved:
        state = torch.load(checkpoint / "model" / "state_dict.pt", weights_only=True)
        counts = state["featurizer.exit_counts"]
        step = yaml.safe_load((checkpoint / "training_stats.yaml").read_text())["global_step"]
        # every training step's 2 utterances, each counted once at its exit layer
        assert counts.numel() == 4 and counts.sum().item() == 2 * step
    assert (counts > 0).sum() >= 2  # utterances exited at different layers
    assert (target / "evaluate" / "valid_best" / "test" / "result.yaml").is_file()  # stage 3 ran


def test_restored_model_spans_follow_the_saved_statistics_and_match_the_runner(trained):
    target, ckpt = trained
    model = SuperbSID().load_model(target / "train" / "valid_best" / "model")
    model.eval()
    counts = model.featurizer.exit_counts.clone()
    daisy = model.upstream.upstream
    assert daisy.current_span() == exit_span("threshold", 4, counts.tolist(), 0.3)
    assert daisy.current_span() != [1, 2, 3, 4]

    clips = waves(9000, 12000, 15000, seed=11)
    wavs, lens = pad_sequence(clips, batch_first=True), torch.tensor([len(c) for c in clips])
    runner_upstream = daisy_hubert_local(str(ckpt), model_config=CONFIG)
    runner = DaisyFeaturizer(runner_upstream, upstream_device="cpu")
    runner.load_state_dict(model.featurizer.state_dict())  # the same weights and statistics
    runner.eval()

    def both():
        with torch.no_grad():
            ours, ours_lens = model.featurizer(*model.upstream(wavs, lens))
            theirs = runner(clips, runner_upstream(clips))
        for row, (want, n) in enumerate(zip(theirs, ours_lens.tolist())):
            n = min(n, len(want))
            torch.testing.assert_close(ours[row, :n], want[:n], atol=1e-5, rtol=1e-5)
        return ours

    before = both()
    # other statistics, another evaluation span: every utterance now runs to layer 4
    model.featurizer.exit_counts.copy_(torch.tensor([0, 0, 0, 8]))
    runner.exit_counts.copy_(model.featurizer.exit_counts)
    assert daisy.current_span() == [4]
    after = both()
    assert not torch.allclose(before, after)
