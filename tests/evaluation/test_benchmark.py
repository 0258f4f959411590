import pytest
import torch

from daisy_upstream.core.policy import make_plan
from daisy_upstream.evaluation.benchmark import (
    LayerCosts,
    Mode,
    efficiency,
    fixed_depth_weights,
    ideal_time,
    paired_saving,
    run_benchmark,
    saving,
)
from daisy_upstream.integration.hubconf import daisy_hubert_local
from daisy_upstream.testing import waves


def test_ideal_time_weights_layers_by_running_frames():
    costs = LayerCosts(front=1.0, layers=[2.0, 2.0, 2.0, 2.0])
    assert costs.total == 9.0
    assert ideal_time(costs, [4, 4], [10, 30]) == pytest.approx(9.0)
    # the 10-frame utterance stops after layer 1: layers 2..4 cost 30/40 of their time
    assert ideal_time(costs, [1, 4], [10, 30]) == pytest.approx(1.0 + 2.0 + 3 * 2.0 * 0.75)
    assert ideal_time(costs, [2], [7]) == pytest.approx(5.0)
    with pytest.raises(ValueError):
        ideal_time(costs, [1], [1, 2])


def test_saving_and_efficiency():
    assert saving(6.0, 10.0) == pytest.approx(0.4)
    assert saving(11.0, 10.0) == pytest.approx(-0.1)
    assert efficiency(0.3, 0.4) == pytest.approx(0.75)
    assert efficiency(0.1, 0.005) is None
    with pytest.raises(ValueError):
        saving(1.0, 0.0)


def test_paired_saving_cancels_noise_shared_by_a_repeat():
    full = [1.0, 2.0, 1.0, 2.0, 1.0]  # repeats 2 and 4 hit by a machine-wide slow-down
    mode = [0.8, 1.6, 0.8, 1.6, 0.8]  # always 20% faster than full in the same repeat
    assert paired_saving(mode, full) == pytest.approx(0.2)
    assert paired_saving([1.1, 0.8, 1.6], [1.0, 1.0, 2.0]) == pytest.approx(0.2)  # median of -0.1, 0.2, 0.2
    with pytest.raises(ValueError, match="paired"):
        paired_saving([1.0], [1.0, 2.0])


def test_run_benchmark_reports_every_mode_and_histograms(tiny_ckpt):
    upstream = daisy_hubert_local(str(tiny_ckpt), model_config={"strategy": "none", "tau": 10.0}).eval()
    wavs = waves(8000, 4000, 6000, seed=1)
    modes = [
        Mode("full", make_plan([4], None)),
        Mode("daisy", make_plan(range(1, 5), 10.0), depth_twin=True),
        Mode("fixed", make_plan([2], None)),
    ]
    results = run_benchmark(upstream.net, wavs, modes, batch_sizes=(1, 2), repeats=2, warmup=0)
    assert [(r.batch_size, r.mode) for r in results] == [(b, m.name) for b in (1, 2) for m in modes]
    by = {(r.mode, r.batch_size): r for r in results}
    assert by[("full", 1)].exit_histogram == [0, 0, 0, 3] and by[("full", 1)].ideal_saved == 0.0
    assert by[("daisy", 2)].exit_histogram == [3, 0, 0, 0]  # tau above log(C): all exit at 1
    assert by[("fixed", 1)].exit_histogram == [0, 3, 0, 0]
    assert 0 < by[("fixed", 1)].ideal_saved < by[("daisy", 1)].ideal_saved < 1
    assert all(len(r.times) == 2 and r.median > 0 for r in results)
    # the fixed-depth model at daisy's mean exit layer (1) was timed beside, not reported as a mode
    assert by[("daisy", 1)].depth_saved is not None and by[("fixed", 1)].depth_saved is None
    with pytest.raises(ValueError, match="first mode must be the full model"):
        run_benchmark(upstream.net, wavs, modes[1:], batch_sizes=(1,))


def test_per_batch_rule_makes_the_batch_exit_together(tiny_ckpt):
    upstream = daisy_hubert_local(str(tiny_ckpt), model_config={"strategy": "none", "tau": 1.0}).eval()
    batch = waves(16000, 3200, 16000, 8000, 12000, seed=5)
    with torch.no_grad():
        table = upstream.run(batch, make_plan(range(1, 5), 0.0)).entropies
        tau = float(table[:, 0].median()) + 1e-6
        per_utt = upstream.net(batch, make_plan(range(1, 5), tau))
        per_batch = upstream.net(batch, make_plan(range(1, 5), tau), per_batch=True)
    assert len(set(per_utt.exit_layers.tolist())) > 1
    assert len(set(per_batch.exit_layers.tolist())) == 1
    frames = per_utt.lengths.float()
    batch_entropy = float((table[:, 0] * frames).sum() / frames.sum())
    assert (int(per_batch.exit_layers[0]) == 1) == (batch_entropy < tau)


def test_a_fractional_mean_exit_layer_interpolates_the_two_nearest_depths():
    assert fixed_depth_weights(3.0) == [(3, 1.0)]
    assert [(d, round(w, 6)) for d, w in fixed_depth_weights(2.25)] == [(2, 0.75), (3, 0.25)]
