"""core.armo: hand-computed verbosity decorrelation, gating mixture and the two losses."""

from __future__ import annotations

import math

import pytest
import torch

from goodhartlab.core.armo import (
    armo_gating_loss,
    attribute_regression_loss,
    decorrelate_verbosity,
    gated_score,
    gating_weights,
    verbosity_penalties,
)
from goodhartlab.registry import RM_OBJECTIVES


def test_verbosity_penalty_hand_computed():
    # r_v = [1, 2, 3] (mean 2, Var = 2/3); r_0 = [2, 4, 6] = 2 r_v: Cov = 4/3, λ_0 = 2;
    # r_1 = [1, 0, 1]: centred [1/3, -2/3, 1/3] . [-1, 0, 1] / 3 = 0, λ_1 = 0.
    r_v = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    r = torch.tensor([[2.0, 4.0, 6.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    lam = verbosity_penalties(r, r_v)
    torch.testing.assert_close(lam, torch.tensor([2.0, 0.0], dtype=torch.float64))
    # r'_0 = 2 r_v - 2 r_v = 0; r'_1 unchanged.
    r_dec = decorrelate_verbosity(r, r_v, lam)
    torch.testing.assert_close(r_dec[0], torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(r_dec[1], r[1])


def test_decorrelated_attributes_are_uncorrelated_with_verbosity():
    gen = torch.Generator().manual_seed(0)
    r_v = torch.randn(500, generator=gen, dtype=torch.float64)
    r = (
        torch.randn(3, 500, generator=gen, dtype=torch.float64)
        + torch.tensor([[0.5], [-1.0], [0.0]], dtype=torch.float64) * r_v
    )
    r_dec = decorrelate_verbosity(r, r_v, verbosity_penalties(r, r_v))
    for k in range(3):
        rho = torch.corrcoef(torch.stack([r_dec[k], r_v]))[0, 1]
        assert abs(float(rho)) < 1e-10
    # Before: r_1 (slope -1) was strongly correlated with r_v.
    assert abs(float(torch.corrcoef(torch.stack([r[1], r_v]))[0, 1])) > 0.5


def test_constant_verbosity_is_refused():
    with pytest.raises(ValueError, match="verbosity"):
        verbosity_penalties(torch.ones(2, 4), torch.ones(4))


def test_gating_mixture_hand_computed():
    # logits [ln 1, ln 3] / τ with τ = 1: softmax = [1/4, 3/4]; β = 2: g = [0.5, 1.5].
    logits = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    g = gating_weights(logits, 1.0, torch.tensor([2.0], dtype=torch.float64))
    torch.testing.assert_close(g, torch.tensor([[0.5, 1.5]], dtype=torch.float64))
    # s = 0.5 * 4 + 1.5 * (-2) = -1.
    r_dec = torch.tensor([[4.0], [-2.0]], dtype=torch.float64)
    torch.testing.assert_close(gated_score(g, r_dec), torch.tensor([-1.0], dtype=torch.float64))
    # τ → large: the softmax flattens to uniform, rows still sum to β.
    g_flat = gating_weights(logits, 1e6, torch.tensor(2.0, dtype=torch.float64))
    torch.testing.assert_close(
        g_flat, torch.tensor([[1.0, 1.0]], dtype=torch.float64), atol=1e-5, rtol=0
    )


def test_gated_score_against_a_naive_loop():
    gen = torch.Generator().manual_seed(1)
    g = gating_weights(torch.randn(4, 3, generator=gen), 10.0, torch.tensor(1.5))
    r_dec = torch.randn(3, 4, generator=gen)
    naive = torch.tensor([sum(g[b, k] * r_dec[k, b] for k in range(3)) for b in range(4)])
    torch.testing.assert_close(gated_score(g, r_dec), naive)
    torch.testing.assert_close(g.sum(dim=1), torch.full((4,), 1.5))


def test_losses_hand_computed():
    # MSE: errors [1, -1; 0, 2] -> (1 + 1 + 0 + 4) / 4 = 1.5.
    pred = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert float(attribute_regression_loss(pred, torch.tensor([[0.0, 1.0], [0.0, 0.0]]))) == 1.5
    # BT: gaps [0, ln 3]: (log 2 + log(4/3)) / 2 = log(8/3) / 2.
    loss, stats = armo_gating_loss(torch.tensor([0.0, math.log(3.0)]), torch.zeros(2))
    assert float(loss) == pytest.approx(math.log(8 / 3) / 2)
    assert float(stats["accuracy"]) == 0.5


def test_registered_as_a_multi_objective_rm_objective():
    entry = RM_OBJECTIVES.entry("armo")
    assert entry.meta["multi_objective"] is True
    assert "2406.12845" in entry.paper
