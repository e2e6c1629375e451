"""PAL's ideal-point reward and prototype mixture (core.pal) against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from goodhartlab.core.pal import (
    ideal_point_reward,
    ideal_points,
    mixture_prior_penalty,
    mixture_weights,
    pal_loss,
)
from goodhartlab.registry import RM_OBJECTIVES


def test_ideal_points_are_softmax_mixtures_of_the_prototypes():
    # Prototypes p1 = (0, 0), p2 = (2, 4). User 0: θ = (0, 0) -> w = (1/2, 1/2), a = (1, 2).
    # User 1: θ = (0, ln 3) -> w = (1/4, 3/4), a = (1.5, 3).
    prototypes = torch.tensor([[0.0, 0.0], [2.0, 4.0]])
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])
    torch.testing.assert_close(mixture_weights(logits), torch.tensor([[0.5, 0.5], [0.25, 0.75]]))
    torch.testing.assert_close(
        ideal_points(logits, prototypes), torch.tensor([[1.0, 2.0], [1.5, 3.0]])
    )


def test_a_one_hot_mixture_is_its_prototype():
    prototypes = torch.tensor([[1.0, -1.0, 0.5], [3.0, 2.0, -2.0]])
    logits = torch.tensor([[50.0, -50.0], [-50.0, 50.0]])
    torch.testing.assert_close(ideal_points(logits, prototypes), prototypes)


def test_ideal_point_reward_is_the_negated_squared_distance():
    # f = (1, 2), a = (1, 2): r = 0 (at the ideal point, the best possible reward);
    # f = (4, 6), a = (1, 2): r = -(3² + 4²) = -25; f = (0, 0), a = (1, 2): r = -(1 + 4) = -5.
    f = torch.tensor([[1.0, 2.0], [4.0, 6.0], [0.0, 0.0]])
    a = torch.tensor([[1.0, 2.0]]).expand(3, 2)
    torch.testing.assert_close(ideal_point_reward(f, a), torch.tensor([0.0, -25.0, -5.0]))


def test_two_users_prefer_opposite_completions():
    # Prototypes at -1 and +1 on a line; users with one-hot weights sit on them. A completion
    # at f = 0.8 is closer to user B's ideal point (r = -0.04) than one at f = -0.6 (r = -2.56);
    # for user A it is the other way round (-3.24 against -0.16).
    prototypes = torch.tensor([[-1.0], [1.0]])
    a = ideal_points(torch.tensor([[30.0, -30.0], [-30.0, 30.0]]), prototypes)
    y1, y2 = torch.tensor([[0.8], [0.8]]), torch.tensor([[-0.6], [-0.6]])
    r1, r2 = ideal_point_reward(y1, a), ideal_point_reward(y2, a)
    torch.testing.assert_close(r1, torch.tensor([-3.24, -0.04]))
    torch.testing.assert_close(r2, torch.tensor([-0.16, -2.56]))
    loss, stats = pal_loss(r1, r2)
    # -log σ(-3.08) and -log σ(2.52), averaged; user B's pair is right, user A's wrong.
    expected = 0.5 * (math.log1p(math.exp(3.08)) + math.log1p(math.exp(-2.52)))
    assert abs(loss.item() - expected) < 1e-5
    assert stats["accuracy"].item() == 0.5


def test_pal_is_registered_with_its_own_training_loop():
    entry = RM_OBJECTIVES.entry("pal")
    assert entry.meta.get("ideal_point") is True
    assert "2406.08469" in entry.paper


def test_mixture_prior_penalty_is_a_gaussian_prior_per_pair():
    # θ = (1, -2, 0), θ̄ = (0, 0, 1): ‖θ − θ̄‖² = 1 + 4 + 1 = 6; λ = 2, n = 4: 2 / 8 · 6 = 1.5.
    theta = torch.tensor([[1.0, -2.0, 0.0]], requires_grad=True)
    prior = torch.tensor([0.0, 0.0, 1.0])
    penalty = mixture_prior_penalty(theta, prior, 2.0, 4)
    assert abs(penalty.item() - 1.5) < 1e-6
    # Its gradient is λ/n (θ − θ̄) = 0.5 · (1, -2, -1).
    penalty.backward()
    torch.testing.assert_close(theta.grad, torch.tensor([[0.5, -1.0, -0.5]]))
    # Four times the pairs, a quarter of the pull; no prior, no penalty.
    assert abs(mixture_prior_penalty(theta, prior, 2.0, 16).item() - 0.375) < 1e-6
    assert mixture_prior_penalty(theta, prior, 0.0, 4).item() == 0.0
    with pytest.raises(ValueError):
        mixture_prior_penalty(theta, prior, -1.0, 4)
