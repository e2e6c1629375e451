"""Tests for goodhartlab.core.step_rewards (Gao et al. 2024's Clip and Delta)."""

import pytest
import torch

from goodhartlab.core.step_rewards import (
    clip_step_rewards,
    delta_step_rewards,
    scatter_step_rewards,
    step_returns,
)

# Two completions: three steps scored 0.5, 2, 1; one step scored 3 (then padding).
R = torch.tensor([[0.5, 2.0, 1.0], [3.0, 9.0, 9.0]], dtype=torch.float64)
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)


def test_clip_hand_computed():
    # η = 1: min(0.5 − 1, 0) = −0.5; min(2 − 1, 0) = 0; min(1 − 1, 0) = 0; min(3 − 1, 0) = 0.
    out = clip_step_rewards(R, MASK, eta=1.0)
    torch.testing.assert_close(out, torch.tensor([[-0.5, 0.0, 0.0], [0.0, 0.0, 0.0]]).double())
    # η = 2.5: −2, −0.5, −1.5; −0 (3 > 2.5). Padding stays 0 however large its value.
    out = clip_step_rewards(R, MASK, eta=2.5)
    torch.testing.assert_close(out, torch.tensor([[-2.0, -0.5, -1.5], [0.0, 0.0, 0.0]]).double())


def test_delta_hand_computed():
    # Row 0: 0.5 − 2 = −1.5, 2 − 1 = 1, last step 1 itself; row 1: its only step, 3.
    out = delta_step_rewards(R, MASK)
    torch.testing.assert_close(out, torch.tensor([[-1.5, 1.0, 1.0], [3.0, 0.0, 0.0]]).double())
    # The paper's form: the last step dropped, so row 0 is 0.5 − 2, then 2 itself, then 0;
    # a single-step row gets nothing.
    out = delta_step_rewards(R, MASK, drop_last=True)
    torch.testing.assert_close(out, torch.tensor([[-1.5, 2.0, 0.0], [0.0, 0.0, 0.0]]).double())


def test_delta_return_from_each_step_is_that_steps_score():
    # Σ_{j ≥ k} (r_j − r_{j+1}) + r_K telescopes to r_k.
    gen = torch.Generator().manual_seed(0)
    r = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    counts = torch.tensor([1, 2, 3, 6, 4])
    mask = torch.arange(6) < counts.unsqueeze(1)
    returns = step_returns(delta_step_rewards(r, mask), mask)
    torch.testing.assert_close(returns[mask], r[mask])
    assert bool((returns[~mask] == 0).all())


def test_repeating_a_step_pays_under_the_sum_but_not_under_clip_or_delta():
    # A proxy that scores each prefix by its number of good steps (1 per step): appending
    # copies of a good step raises Σ_k r_k by the new prefixes' scores; Delta's return stays
    # r_1 and Clip's stays ≤ 0 (here exactly 0 with η = 1).
    short = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    long = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    m2, m4 = torch.ones_like(short, dtype=torch.bool), torch.ones_like(long, dtype=torch.bool)
    assert long.sum() > short.sum()
    assert delta_step_rewards(long, m4).sum() == delta_step_rewards(short, m2).sum() == 1.0
    assert clip_step_rewards(long, m4, 1.0).sum() == clip_step_rewards(short, m2, 1.0).sum() == 0


def test_step_returns_hand_computed():
    out = step_returns(torch.tensor([[1.0, -2.0, 4.0], [5.0, 7.0, 7.0]]), MASK)
    torch.testing.assert_close(out, torch.tensor([[3.0, 2.0, 4.0], [5.0, 0.0, 0.0]]))


def test_scatter_hand_computed():
    # Row 0: steps end at tokens 1, 1 (two steps on one token add) and 3; row 1 at token 2.
    rewards = torch.tensor([[1.0, 2.0, 4.0], [5.0, 8.0, 8.0]])
    token = torch.tensor([[1, 1, 3], [2, 9, 9]])  # padding indices are ignored
    out = scatter_step_rewards(rewards, MASK, token, num_tokens=4)
    torch.testing.assert_close(out, torch.tensor([[0.0, 3.0, 0.0, 4.0], [0.0, 0.0, 5.0, 0.0]]))
    torch.testing.assert_close(out.sum(dim=1), (rewards * MASK).sum(dim=1))


def test_bad_masks_and_indices_are_named():
    with pytest.raises(ValueError, match="left-aligned"):
        clip_step_rewards(R, torch.tensor([[1, 0, 1], [1, 0, 0]]), 0.0)
    with pytest.raises(ValueError, match="at least one step"):
        delta_step_rewards(R, torch.tensor([[1, 1, 1], [0, 0, 0]]))
    with pytest.raises(ValueError, match="shape"):
        delta_step_rewards(R, MASK[:, :2])
    with pytest.raises(ValueError, match=r"step_token: indices must be in \[0, 3\)"):
        scatter_step_rewards(R, MASK, torch.tensor([[0, 1, 3], [0, 0, 0]]), num_tokens=3)
