import math

import pytest
import torch

from daisy_upstream.core.branches import ExitBranches, frame_entropy, mean_entropy


def test_entropy_of_uniform_and_one_hot():
    uniform = torch.zeros(1, 3, 8)
    assert torch.allclose(frame_entropy(uniform), torch.full((1, 3), math.log(8)))
    one_hot = torch.tensor([[[1e4, 0.0, 0.0]]])
    assert frame_entropy(one_hot).item() == pytest.approx(0.0, abs=1e-6)


def test_entropy_never_nan_on_extreme_logits():
    logits = torch.tensor([[[1e30, -1e30, 0.0], [-1e38, 1e38, 3.0], [88.0, -104.0, 50.0]]])
    ent = frame_entropy(logits)
    assert torch.isfinite(ent).all()
    # the naive log(softmax) gives NaN here: the test would catch a regression to it
    p = torch.softmax(logits, -1)
    assert torch.isnan(-(p * p.log()).sum(-1)).any()


def test_mean_entropy_excludes_padding():
    logits = torch.zeros(2, 4, 5)
    logits[0, 2:] = torch.tensor([100.0, 0, 0, 0, 0])  # padding frames of row 0: entropy 0
    lengths = torch.tensor([2, 4])
    ent = mean_entropy(logits, lengths)
    assert torch.allclose(ent, torch.full((2,), math.log(5)))


def test_branches_state_dict_layout_and_checks():
    branches = ExitBranches(3, 16, 10)
    state = branches.state_dict()
    assert sorted(state) == ["0.bias", "0.weight", "1.bias", "1.weight", "2.bias", "2.weight"]
    again = ExitBranches.from_state_dict(state, num_layers=3, embed_dim=16)
    assert torch.equal(again[2].weight, branches[2].weight)
    with pytest.raises(ValueError, match="3 branches but the model has 4"):
        ExitBranches.from_state_dict(state, num_layers=4)
    with pytest.raises(ValueError, match="16-dim input but the model's hidden size is 8"):
        ExitBranches.from_state_dict(state, num_layers=3, embed_dim=8)
    with pytest.raises(ValueError, match="consecutively"):
        ExitBranches.from_state_dict({"1.weight": state["1.weight"], "1.bias": state["1.bias"]}, 1)


@pytest.mark.parametrize("groups", [1, 2, 3])
@pytest.mark.parametrize("padded", [False, True])
def test_fused_check_equals_the_eager_entropy(groups, padded):
    """The loop's check (one addmm, a log-softmax, p log p and one batched product with the frame
    weights) against today's eager reference, ``mean_entropy`` of the branch's logits."""
    torch.manual_seed(groups)
    branches = ExitBranches(3, 24, 17, groups=groups)
    for k, branch in enumerate(branches, start=1):  # sharper deeper: low and high entropies both
        branch.weight.data *= 2.0 * k
    hidden = torch.randn(5, 9, 24)
    lengths = torch.tensor([9, 1, 4, 9, 7]) if padded else None
    for layer in (1, 2, 3):
        expected = mean_entropy(branches.logits(layer, hidden), lengths, groups)
        torch.testing.assert_close(branches.entropy(layer, hidden, lengths), expected, atol=1e-5, rtol=0)
    # padding frames do not count, whatever they hold
    if padded:
        noisy = hidden.clone()
        noisy[1, 1:] = 1e3 * torch.randn(8, 24)
        torch.testing.assert_close(branches.entropy(2, noisy, lengths), branches.entropy(2, hidden, lengths))
