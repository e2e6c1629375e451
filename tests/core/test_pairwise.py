"""The pairwise preference model's preference and loss (core/pairwise.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from goodhartlab.core.nash import bt_preference
from goodhartlab.core.pairwise import (
    pairwise_preference,
    pairwise_preference_logit,
    pairwise_preference_loss,
)
from goodhartlab.registry import RM_OBJECTIVES


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_preference_by_hand():
    # f(x, a, b) = 2, f(x, b, a) = −1: z = (2 − (−1)) / 2 = 1.5, P(a ≻ b) = σ(1.5) = 0.81757.
    p = pairwise_preference(torch.tensor([2.0]), torch.tensor([-1.0]))
    assert p.item() == pytest.approx(_sigmoid(1.5), abs=1e-7)
    assert p.item() == pytest.approx(0.8175745, abs=1e-6)


def test_antisymmetry_and_a_completion_against_itself_is_one_half():
    g = torch.Generator().manual_seed(0)
    f_ab, f_ba = torch.randn(50, generator=g) * 3, torch.randn(50, generator=g) * 3
    # P(a ≻ b) + P(b ≻ a) = σ(z) + σ(−z) = 1 for any two logits.
    torch.testing.assert_close(
        pairwise_preference(f_ab, f_ba) + pairwise_preference(f_ba, f_ab), torch.ones(50)
    )
    # a = b: both orders are the same input, so the same logit, z = 0, P = 1/2 exactly.
    assert torch.equal(pairwise_preference(f_ab, f_ab), torch.full((50,), 0.5))


def test_a_difference_of_scores_is_bradley_terry():
    # f(x, a, b) = r_a − r_b: z = ((r_a − r_b) − (r_b − r_a)) / 2 = r_a − r_b.
    r_a, r_b = torch.tensor([0.3, -1.0, 2.5]), torch.tensor([1.0, -2.0, 2.5])
    torch.testing.assert_close(pairwise_preference(r_a - r_b, r_b - r_a), bt_preference(r_a, r_b))


def test_loss_by_hand():
    # f_cr = [2, 6], f_rc = [0, 0]: z = [1, 3];
    # L = mean(softplus(−1), softplus(−3)) = mean(0.3132617, 0.0485874) = 0.1809245.
    f_cr, f_rc = torch.tensor([2.0, 6.0]), torch.tensor([0.0, 0.0])
    loss, stats = pairwise_preference_loss(f_cr, f_rc)
    assert loss.item() == pytest.approx(0.1809245, abs=1e-6)
    assert stats["accuracy"].item() == 1.0
    assert stats["margin_mean"].item() == pytest.approx(2.0)
    assert stats["order_logit_mean"].item() == pytest.approx((1.0 + 3.0) / 2)  # (f_cr + f_rc)/2
    # ε = 0.1: pair 1 0.9·0.3132617 + 0.1·1.3132617 = 0.4132617,
    #          pair 2 0.9·0.0485874 + 0.1·3.0485874 = 0.3485874; mean 0.3809245.
    smoothed, _ = pairwise_preference_loss(f_cr, f_rc, label_smoothing=0.1)
    assert smoothed.item() == pytest.approx(0.3809245, abs=1e-6)


def test_loss_is_the_cross_entropy_of_both_orders():
    # Each pair as two examples: (c, r) labelled 1 and (r, c) labelled 0.
    g = torch.Generator().manual_seed(1)
    f_cr, f_rc = torch.randn(20, generator=g), torch.randn(20, generator=g)
    loss, _ = pairwise_preference_loss(f_cr, f_rc)
    both = F.binary_cross_entropy(
        torch.cat([pairwise_preference(f_cr, f_rc), pairwise_preference(f_rc, f_cr)]),
        torch.cat([torch.ones(20), torch.zeros(20)]),
    )
    torch.testing.assert_close(loss, both)


def test_loss_has_a_gradient_and_checks_its_inputs():
    f_cr = torch.tensor([0.5, -0.5], requires_grad=True)
    loss, _ = pairwise_preference_loss(f_cr, torch.zeros(2))
    loss.backward()
    # dL/df_cr = −σ(−z) / 2 / B with z = f_cr / 2: both negative (raising f_cr lowers L).
    assert (f_cr.grad < 0).all()
    with pytest.raises(ValueError, match="label_smoothing"):
        pairwise_preference_loss(torch.zeros(2), torch.zeros(2), label_smoothing=0.5)
    with pytest.raises(AssertionError):
        pairwise_preference_logit(torch.zeros(2, 1), torch.zeros(2, 1))


def test_registered_as_a_pairwise_objective():
    entry = RM_OBJECTIVES.entry("pairwise")
    assert entry.obj is pairwise_preference_loss
    assert entry.meta["pairwise"] is True and entry.version == "1"
    assert "2312.00886" in entry.paper
    assert set(entry.params.model_fields) == {"label_smoothing"}
