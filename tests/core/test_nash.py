"""core/nash.py: the Bradley-Terry preference, Nash-MP's payoff estimate, its loss and the
exact Mirror Prox iteration on a matrix game (Tiapkin et al. 2025, arXiv 2505.19731)."""

from __future__ import annotations

import math

import pytest
import torch

from goodhartlab.core.losses import grpo_loss
from goodhartlab.core.nash import (
    bt_preference,
    mirror_prox_step,
    nash_mp_loss,
    win_rate_against,
    win_rate_from_preferences,
)


def test_bt_preference_hand_computed_and_antisymmetric():
    # σ(1 − 0) = 1 / (1 + e^{-1}) = 0.7310586; σ(0) = 1/2; σ(−2) = 0.1192029.
    p = bt_preference(torch.tensor([1.0, 0.5, -1.0]), torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(p, torch.tensor([0.7310586, 0.5, 0.1192029]))
    r = torch.randn(50, generator=torch.Generator().manual_seed(0)) * 5
    r2 = torch.randn(50, generator=torch.Generator().manual_seed(1)) * 5
    torch.testing.assert_close(bt_preference(r, r2) + bt_preference(r2, r), torch.ones(50))


def test_win_rate_self_play_hand_computed():
    # One prompt, G = 3, r = (0, ln 3, 0): σ(−ln 3) = 1/4, σ(ln 3) = 3/4, σ(0) = 1/2.
    #   y0: (σ(0 − ln3) + σ(0 − 0)) / 2 = (1/4 + 1/2) / 2 = 3/8
    #   y1: (3/4 + 3/4) / 2 = 3/4
    #   y2: = y0 = 3/8
    # The payoffs of a group sum to (G choose 2) / (G − 1) = G / 2 (each pair adds 1).
    p = win_rate_against(torch.tensor([0.0, math.log(3.0), 0.0]), 3)
    torch.testing.assert_close(p, torch.tensor([3 / 8, 3 / 4, 3 / 8]))
    assert float(p.sum()) == pytest.approx(3 / 2)


def test_win_rate_against_opponents_equals_a_naive_double_loop():
    g = torch.Generator().manual_seed(3)
    B, G, G_opp = 3, 4, 5
    r, r_opp = torch.randn(B * G, generator=g), torch.randn(B * G_opp, generator=g)
    naive = torch.tensor([
        sum(1 / (1 + math.exp(-(float(r[i]) - float(r_opp[(i // G) * G_opp + j]))))
            for j in range(G_opp)) / G_opp
        for i in range(B * G)
    ])  # fmt: skip
    torch.testing.assert_close(win_rate_against(r, G, r_opp, G_opp), naive)
    naive_self = torch.tensor([
        sum(1 / (1 + math.exp(-(float(r[i]) - float(r[(i // G) * G + j]))))
            for j in range(G) if (i // G) * G + j != i) / (G - 1)
        for i in range(B * G)
    ])  # fmt: skip
    torch.testing.assert_close(win_rate_against(r, G), naive_self)


def test_win_rate_rejects_mismatched_opponents():
    with pytest.raises(ValueError, match="r_opp"):
        win_rate_against(torch.zeros(4), 2, torch.zeros(5), 2)
    with pytest.raises(ValueError, match="group_size"):
        win_rate_against(torch.zeros(3), 1)


def test_nash_mp_loss_adds_the_anchor_kl_to_grpo():
    # At θ = θ_k the anchor term is 0; off it, L − L_GRPO = prox_coef · mean_i (mean_t k3),
    # k3 = e^{old − new} − (old − new) − 1. Row 0: one token, new − old = 0.5 →
    # k3 = e^{-0.5} + 0.5 − 1 = 0.1065307; row 1: two tokens at new = old → 0. Mean: 0.0532653.
    logp_old = torch.tensor([[-1.0, 0.0], [-2.0, -1.0]])
    logp = torch.tensor([[-0.5, 0.0], [-2.0, -1.0]])
    mask = torch.tensor([[1, 0], [1, 1]])
    adv = torch.tensor([1.0, -1.0])
    same, stats = nash_mp_loss(logp_old, logp_old, None, adv, mask, prox_coef=2.0)
    assert float(stats["prox_kl"]) == 0.0
    torch.testing.assert_close(same, grpo_loss(logp_old, logp_old, None, adv, mask)[0])
    moved, stats = nash_mp_loss(logp, logp_old, None, adv, mask, prox_coef=2.0)
    base = grpo_loss(logp, logp_old, None, adv, mask)[0]
    assert float(stats["prox_kl"]) == pytest.approx(0.0532653, abs=1e-6)
    assert float(moved - base) == pytest.approx(2.0 * 0.0532653, abs=1e-6)


# -- the matrix game ---------------------------------------------------------------------------
# A biased rock-paper-scissors: P = 1/2 + A, A antisymmetric with A[0,1] = −a, A[0,2] = b,
# A[1,2] = −c. A x = 0 at x ∝ (c, b, a), an interior point, so that is the Nash equilibrium.
A_, B_, C_ = 0.2, 0.4, 0.1
PAYOFF = 0.5 + torch.tensor([[0.0, -A_, B_], [A_, 0.0, -C_], [-B_, C_, 0.0]], dtype=torch.float64)
NASH = torch.tensor([C_, B_, A_], dtype=torch.float64) / (A_ + B_ + C_)
LOG_REF = torch.full((3,), 1 / 3, dtype=torch.float64).log()
START = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64).log()


def _iterate(eta, beta, n, extrapolate=True):
    log_pi = START
    for _ in range(n):
        half, nxt = mirror_prox_step(log_pi, LOG_REF, PAYOFF, eta, beta)
        if extrapolate:
            log_pi = nxt
        else:  # plain mirror descent: the opponent is π_k itself, π_{k+1/2} is the step
            log_pi = half
    return log_pi


def test_mirror_prox_converges_to_the_nash_equilibrium_and_mirror_descent_does_not():
    assert torch.allclose(PAYOFF + PAYOFF.T, torch.ones(3, 3, dtype=torch.float64))
    assert torch.allclose((PAYOFF - 0.5) @ NASH, torch.zeros(3, dtype=torch.float64))
    pi = _iterate(eta=2.0, beta=0.0, n=1000).exp()
    torch.testing.assert_close(pi, NASH, atol=1e-6, rtol=0)
    # Without the extrapolation the last iterate spirals out to the simplex's corners.
    md = _iterate(eta=2.0, beta=0.0, n=1000, extrapolate=False).exp()
    assert float((md - NASH).abs().max()) > 0.1


def test_mirror_prox_reaches_the_regularized_equilibrium_fixed_point():
    # π*_β ∝ π_ref exp(P π*_β / β): log π* − log π_ref − P π* / β is constant over actions.
    beta = 0.05
    log_pi = _iterate(eta=2.0, beta=beta, n=600)
    residual = log_pi - LOG_REF - PAYOFF @ log_pi.exp() / beta
    assert float(residual.max() - residual.min()) < 1e-8
    # ... and it is one Mirror Prox step's fixed point.
    _, nxt = mirror_prox_step(log_pi, LOG_REF, PAYOFF, 2.0, beta)
    torch.testing.assert_close(nxt, log_pi, atol=1e-10, rtol=0)


def test_mirror_prox_step_rejects_a_bad_step_size():
    with pytest.raises(ValueError, match="eta"):
        mirror_prox_step(START, LOG_REF, PAYOFF, 0.0, 0.1)


def test_win_rate_from_preferences_by_hand():
    # One prompt, G = 2 against G' = 3 opponents: rows are the means 0.5 and 0.2.
    pref = torch.tensor([[[0.9, 0.3, 0.3], [0.1, 0.2, 0.3]]], dtype=torch.float64)
    torch.testing.assert_close(
        win_rate_from_preferences(pref, self_play=False),
        torch.tensor([0.5, 0.2], dtype=torch.float64),
    )
    # Self-play, G = 3: the diagonal is left out, (0.8 + 0.6) / 2 = 0.7, (0.2 + 0.5) / 2, ...
    square = torch.tensor(
        [[[0.5, 0.8, 0.6], [0.2, 0.5, 0.5], [0.4, 0.5, 0.5]]], dtype=torch.float64
    )
    torch.testing.assert_close(
        win_rate_from_preferences(square, self_play=True),
        torch.tensor([0.7, 0.35, 0.45], dtype=torch.float64),
    )
    with pytest.raises(ValueError, match="square"):
        win_rate_from_preferences(pref, self_play=True)


def test_win_rate_against_is_win_rate_from_the_bradley_terry_preferences():
    g = torch.Generator().manual_seed(3)
    r, r_opp = torch.randn(2 * 4, generator=g), torch.randn(2 * 5, generator=g)
    mine, theirs = r.reshape(2, 4), r_opp.reshape(2, 5)
    torch.testing.assert_close(
        win_rate_against(r, 4),
        win_rate_from_preferences(
            bt_preference(mine[:, :, None], mine[:, None, :]), self_play=True
        ),
    )
    torch.testing.assert_close(
        win_rate_against(r, 4, r_opp, 5),
        win_rate_from_preferences(
            bt_preference(mine[:, :, None], theirs[:, None, :]), self_play=False
        ),
    )
