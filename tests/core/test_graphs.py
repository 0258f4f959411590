"""The static-shape loop (core/static_loop.py), its buckets (core/buckets.py) and the bookkeeping
of its captured steps (core/graphs.py), on the CPU: the path CUDA graphs take, run eagerly
(``cuda_graphs="static"``) or with a stand-in capture whose replay reruns the captured step on
the same buffers. The CUDA capture itself: tests/core/test_cuda.py."""

from __future__ import annotations

import pytest
import torch

from daisy_upstream.core.buckets import LENGTH_BUCKETS, ROW_BUCKETS, length_bucket, regroup, row_bucket
from daisy_upstream.core.graphs import StepGraphs
from daisy_upstream.core.policy import DaisyConfig, make_plan
from daisy_upstream.integration import hubconf
from daisy_upstream.testing import HostSyncCounter, assert_exits_independent_of_batch_mates, varied_waves
from daisy_upstream.testing.exits import spread_plan

LENGTHS = (16000, 4000, 11111, 16000, 800, 9000, 13000, 6400)


def test_buckets_are_few_and_bound_the_padding():
    assert len(LENGTH_BUCKETS) <= 32 and LENGTH_BUCKETS == tuple(sorted(set(LENGTH_BUCKETS)))
    assert all(b % 16 == 0 for b in LENGTH_BUCKETS)
    for frames in range(1, LENGTH_BUCKETS[-1] + 1):
        bucket = length_bucket(frames)
        assert bucket >= frames and (frames < 128 or bucket <= 1.25 * frames), frames
    assert length_bucket(LENGTH_BUCKETS[-1] + 1) is None and row_bucket(ROW_BUCKETS[-1] + 1) is None
    assert [row_bucket(n) for n in (1, 2, 3, 5, 8, 9, 33)] == [1, 2, 4, 8, 8, 16, 64]
    with pytest.raises(ValueError, match="count >= 1"):
        row_bucket(0)


def test_regroup_keeps_the_shape_until_the_running_rows_fit_a_smaller_one():
    counts = [100, 40, 90, 100, 20, 60, 70, 30]
    assert regroup([True] * 8, counts, rows=8, frames=112) is None
    # 5 still run: 8 rows are still needed, and the longest running row is still 100 frames
    assert regroup([True, False, True, True, False, True, False, True], counts, 8, 112) is None
    # 3 run (rows 1, 4, 7): 4 rows, the first row that left pads; frames shrink to their bucket
    assert regroup([False, True, False, False, True, False, False, True], counts, 8, 112) == ([1, 4, 7, 0], 48)
    assert regroup([False] * 8, counts, 8, 112) == ([], 0)


class _Replayed:
    """A stand-in for a CUDA graph: replay reruns the captured step on the same buffers."""

    def __init__(self, step):
        self.step = step

    def replay(self):
        self.step()


def test_step_graphs_capture_once_per_key_and_bound_the_shapes():
    made, ran = [], []
    graphs = StepGraphs(capture=_Replayed, max_groups=2)
    for shape in [(64, 8), (64, 8), (48, 4), (32, 1), (64, 8)]:
        group = graphs.group(shape, lambda shape=shape: made.append(shape) or {"shape": shape})
        for key in [(1, "plain"), (2, "check"), (1, "plain")]:
            graphs.run(group, key, lambda key=key: ran.append(key))
    # (64, 8) was made again after (48, 4) and (32, 1) pushed it out (at most 2 shapes)
    assert made == [(64, 8), (48, 4), (32, 1), (64, 8)] and graphs.evictions == 2
    assert list(graphs.groups) == [(32, 1), (64, 8)]
    assert graphs.captures == graphs.eager_runs == 8  # two keys for each of the 4 groups made
    assert graphs.replays == 7 and len(ran) == 15
    eager = StepGraphs(capture=None)
    group = eager.group((32, 1), dict)
    eager.run(group, "k", lambda: None)
    eager.run(group, "k", lambda: None)
    assert (eager.captures, eager.replays, eager.eager_runs) == (0, 0, 2)
    with pytest.raises(ValueError, match="max_groups"):
        StepGraphs(max_groups=0)


def test_the_config_key_is_validated():
    assert DaisyConfig().cuda_graphs == "auto"
    assert DaisyConfig(cuda_graphs="off").cuda_graphs == "off"
    with pytest.raises(ValueError, match="cuda_graphs='on' is unknown; choose one of auto, off"):
        DaisyConfig(cuda_graphs="on")


def _upstream(family_ckpt, family, **kwargs):
    path = family_ckpt(family, num_layers=4, sharpen=4.0, layer_entropy=[3, 2, 1, 0.5], **kwargs)
    return getattr(hubconf, f"daisy_{family}_local")(str(path), model_config={"strategy": "none", "tau": 1.0}).eval()


@pytest.mark.parametrize("family", ["hubert", "wav2vec2", "wavlm"])
@pytest.mark.parametrize("read_ahead", [True, False])
def test_static_loop_gives_each_row_what_the_plain_loop_and_the_row_alone_give(family_ckpt, family, read_ahead):
    upstream = _upstream(family_ckpt, family)
    batch = varied_waves(*LENGTHS)
    with torch.no_grad():
        plan = spread_plan(upstream, batch)
        plain = upstream.run(batch, plan)
        upstream.net.cuda_graphs, upstream.net.read_ahead = "static", read_ahead
        static = upstream.run(batch, plan)
        assert static.exit_layers.tolist() == plain.exit_layers.tolist()
        assert len(set(static.exit_layers.tolist())) >= 3
        for ours, reference in zip(static.hidden_states, plain.hidden_states):
            torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)  # zeros past exits and frames too
        torch.testing.assert_close(static.entropies, plain.entropies, atol=1e-5, rtol=0, equal_nan=True)
        torch.testing.assert_close(static.exit_states(), plain.exit_states(), atol=1e-5, rtol=0)
        # padded to buckets and regrouped, each row still has what it has alone (alone: 1 row, 1 group)
        assert_exits_independent_of_batch_mates(upstream, batch, order=[7, 0, 5, 2, 6, 1, 4, 3])
    shapes = {shape for graphs in upstream.net._static.caches.values() for shape in graphs.groups}
    assert (length_bucket(max(plain.lengths.tolist())), 8) in shapes and len(shapes) > 1  # it did regroup


@pytest.mark.parametrize("read_ahead", [True, False])
def test_static_loop_reads_one_mask_per_checked_layer(family_ckpt, read_ahead):
    upstream = _upstream(family_ckpt, "hubert")
    batch = varied_waves(*LENGTHS)
    upstream.net.cuda_graphs, upstream.net.read_ahead = "static", read_ahead
    with torch.no_grad():
        plan = spread_plan(upstream, batch)
        with HostSyncCounter() as counter:
            out = upstream.run(batch, plan)
    assert len(set(out.exit_layers.tolist())) >= 3
    # at most one read per checked layer before the deepest (fewer when all rows left) + the finiteness check
    assert sum(counter.counts.values()) <= len(plan.check_layers) + 1, counter.counts
    assert "aten.nonzero.default" not in counter.counts
    with torch.no_grad(), HostSyncCounter() as counter:
        upstream.run(batch, make_plan([4], None))  # nothing checked: only the finiteness check
    assert sum(counter.counts.values()) == 1, counter.counts


def test_replayed_steps_give_the_same_outputs_as_the_first_run(family_ckpt):
    """Captured once per (shape, layer, kind), a step replayed on a new batch of that shape reads
    only its group's buffers: the outputs equal the plain loop's."""
    upstream = _upstream(family_ckpt, "wavlm")  # its position bias is carried from layer 1 on
    upstream.net.cuda_graphs = "static"
    graphs = StepGraphs(capture=_Replayed)
    upstream.net._static.graphs = lambda device, mode, weights: graphs
    first, second = varied_waves(*LENGTHS), varied_waves(*LENGTHS[::-1], seed=7)
    with torch.no_grad():
        plan = spread_plan(upstream, first)
        upstream.run(first, plan)
        captures = graphs.captures
        static = upstream.run(second, plan)
        upstream.net.cuda_graphs = "off"
        plain = upstream.run(second, plan)
    assert graphs.replays > 0 and graphs.captures <= captures + 2
    assert static.exit_layers.tolist() == plain.exit_layers.tolist()
    for ours, reference in zip(static.hidden_states, plain.hidden_states):
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_auto_changes_nothing_on_the_cpu(family_ckpt):
    upstream = _upstream(family_ckpt, "hubert")
    assert upstream.net.cuda_graphs == "auto"
    with torch.no_grad():
        upstream.run(varied_waves(*LENGTHS[:3]), make_plan([1, 2, 3], 1.0))
    assert upstream.net.graph_stats() == {"shapes": 0, "captures": 0, "replays": 0, "evictions": 0}  # plain loop


def test_step_caches_are_dropped_when_the_weights_move(family_ckpt):
    """Captured steps read the weights where they were: a model whose weights live elsewhere
    (here: loaded with ``assign``) gets fresh caches."""
    upstream = _upstream(family_ckpt, "hubert")
    upstream.net.cuda_graphs = "static"
    batch = varied_waves(*LENGTHS[:3])
    with torch.no_grad():
        upstream.run(batch, make_plan([4], None))
        before = upstream.net.graph_stats()["shapes"]
        state = {k: v.clone() for k, v in upstream.net.model.state_dict().items()}
        upstream.net.model.load_state_dict(state, assign=True)
        upstream.run(varied_waves(*LENGTHS[3:4]), make_plan([4], None))
    assert before >= 1 and upstream.net.graph_stats()["shapes"] == 1
