"""core.lm_rewards: each formula against a hand-computed case."""

from __future__ import annotations

import math

import pytest
import torch

from goodhartlab.core.lm_rewards import (
    crew_confidence,
    endogenous_reward,
    followup_likelihood,
    reference_loglik,
    token_logprobs,
)

L3, L2 = math.log(3.0), math.log(2.0)
# Two states over a 2-token vocabulary: p(s0) = (1/4, 3/4), p(s1) = (1/2, 1/2).
LOGITS = torch.tensor([[[0.0, L3], [L2, L2]]])
TARGETS = torch.tensor([[1, 0]])


def test_token_logprobs_are_log_softmax_at_the_target():
    lp = token_logprobs(LOGITS, TARGETS)
    assert torch.allclose(lp, torch.tensor([[math.log(0.75), math.log(0.5)]]))


def test_crew_confidence_is_the_mean_token_probability_over_the_mask():
    assert crew_confidence(LOGITS, TARGETS, torch.tensor([[1, 1]])).item() == pytest.approx(0.625)
    assert crew_confidence(LOGITS, TARGETS, torch.tensor([[1, 0]])).item() == pytest.approx(0.75)
    assert crew_confidence(LOGITS, TARGETS, torch.tensor([[0, 0]])).item() == 0.0


def test_reference_loglik_sums_or_averages_the_reference_tokens():
    m = torch.tensor([[1, 1]])
    total = math.log(0.75) + math.log(0.5)
    assert reference_loglik(LOGITS, TARGETS, m).item() == pytest.approx(total)
    assert reference_loglik(LOGITS, TARGETS, m, reduction="mean").item() == pytest.approx(total / 2)
    assert reference_loglik(LOGITS, TARGETS, torch.tensor([[0, 1]])).item() == pytest.approx(
        math.log(0.5)
    )
    with pytest.raises(ValueError, match="reduction"):
        reference_loglik(LOGITS, TARGETS, m, reduction="max")


def test_followup_likelihood_is_mean_positive_minus_mean_negative():
    pos = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]])
    neg = torch.tensor([[-0.5, -1.0]])
    assert torch.allclose(followup_likelihood(pos, neg), torch.tensor([-1.5, -2.0]))
    assert torch.allclose(followup_likelihood(pos), torch.tensor([-2.0, -3.0]))
    with pytest.raises(ValueError, match="negative"):
        followup_likelihood(pos, torch.zeros(1, 3))


def test_endogenous_reward_by_hand():
    # States s0, s1, s2; actions a0 = 1, a1 = 0. V(s0) = V(s1) = log 4, V(s2) = log 2.
    logits = torch.tensor([[[0.0, L3], [L2, L2], [0.0, 0.0]]])
    m = torch.tensor([[1, 1]])
    # Terminal: Q(s0,1) - V(s1) + Q(s1,0) - 0 = log 3 - log 4 + log 2 = log 3/2.
    assert endogenous_reward(logits, TARGETS, m).item() == pytest.approx(math.log(1.5))
    # Not terminal: also - V(s2) = - log 2.
    r = endogenous_reward(logits, TARGETS, m, terminal=False)
    assert r.item() == pytest.approx(math.log(0.75))
    # gamma = 1/2: log 3 - log 4 / 2 + log 2 = log 3.
    r = endogenous_reward(logits, TARGETS, m, gamma=0.5)
    assert r.item() == pytest.approx(math.log(3.0))
    # One action only (mask): Q(s0, 1) - 0 = log 3.
    assert endogenous_reward(logits, TARGETS, torch.tensor([[1, 0]])).item() == pytest.approx(L3)


def test_endogenous_reward_telescopes_to_loglik_plus_the_first_value():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 7, generator=g)
    actions = torch.randint(0, 7, (3, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    for alpha in (1.0, 0.5):
        r = endogenous_reward(logits, actions, mask, alpha=alpha)
        lp = token_logprobs(logits[:, :-1] / alpha, actions)
        v0 = alpha * torch.logsumexp(logits[:, 0] / alpha, -1)
        assert torch.allclose(r, alpha * (lp * mask).sum(-1) + v0, atol=1e-5)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="expected"):
        crew_confidence(LOGITS, TARGETS, torch.ones(1, 3))
    with pytest.raises(ValueError, match="T \\+ 1"):
        endogenous_reward(LOGITS, TARGETS, torch.ones(1, 2))
    with pytest.raises(ValueError, match="alpha"):
        endogenous_reward(torch.zeros(1, 3, 2), TARGETS, torch.ones(1, 2), alpha=0.0)
