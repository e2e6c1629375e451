"""core.rm_objectives, CausalRM part: the naive, IPS and DR losses on tiny hand-computed
tensors, the propensity and the logistic fit."""

from __future__ import annotations

import math

import pytest
import torch

from goodhartlab.core.rm_objectives import (
    causal_dr_bt_loss,
    causal_ips_bt_loss,
    causal_naive_bt_loss,
    fit_logistic,
    observation_propensity,
)
from goodhartlab.registry import RM_OBJECTIVES


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


RC = torch.tensor([1.0, 0.0, -0.5, 2.0])
RR = torch.tensor([0.0, 0.0, 0.5, 1.0])  # gaps 1, 0, -1, 1
OBS = torch.tensor([1.0, 0.0, 1.0, 1.0])
PROP = torch.tensor([0.5, 0.25, 0.8, 0.1])
Q = torch.tensor([0.9, 0.6, 0.5, 0.2])


def test_naive_is_bt_on_observed_pairs_only():
    loss, stats = causal_naive_bt_loss(RC, RR, observed=OBS)
    expected = (softplus(-1) + softplus(1) + softplus(-1)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats["observed_fraction"].item() == pytest.approx(0.75)


def test_ips_weights_observed_errors_by_inverse_propensity_over_all_pairs():
    loss, stats = causal_ips_bt_loss(RC, RR, observed=OBS, propensity=PROP)
    # weights o/p = 2, 0, 1.25, 10; divided by B = 4 pairs, observed or not.
    expected = (2 * softplus(-1) + 1.25 * softplus(1) + 10 * softplus(-1)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats["ips_weight_mean"].item() == pytest.approx((2 + 1.25 + 10) / 4)


def test_ips_with_every_pair_observed_at_propensity_one_is_bt():
    loss, _ = causal_ips_bt_loss(RC, RR, observed=torch.ones(4), propensity=torch.ones(4))
    assert loss.item() == pytest.approx(torch.nn.functional.softplus(-(RC - RR)).mean().item())


def test_dr_formula_on_a_hand_computed_case():
    loss, stats = causal_dr_bt_loss(RC, RR, observed=OBS, propensity=PROP, imputed_label=Q)
    gaps = [1.0, 0.0, -1.0, 1.0]
    total = 0.0
    for g, o, p, q in zip(gaps, OBS.tolist(), PROP.tolist(), Q.tolist(), strict=True):
        e = softplus(-g)
        e_hat = q * softplus(-g) + (1 - q) * softplus(g)
        total += e_hat + o / p * (e - e_hat)
    assert loss.item() == pytest.approx(total / 4, rel=1e-6)
    # Pair 2 (unobserved, gap 0): ê = log 2 whatever q.
    assert stats["imputed_error_mean"].item() > 0


def test_dr_with_q_one_everywhere_is_bt_on_all_pairs():
    # q = 1 for every pair: ê = e, so the correction vanishes and DR = mean e over all pairs.
    loss, _ = causal_dr_bt_loss(RC, RR, observed=OBS, propensity=PROP, imputed_label=torch.ones(4))
    assert loss.item() == pytest.approx(torch.nn.functional.softplus(-(RC - RR)).mean().item())


def test_dr_gradient_reaches_unobserved_pairs_ips_does_not():
    rc = RC.clone().requires_grad_(True)
    causal_ips_bt_loss(rc, RR, observed=OBS, propensity=PROP)[0].backward()
    assert rc.grad[1].item() == 0.0
    rc.grad = None
    causal_dr_bt_loss(rc, RR, observed=OBS, propensity=PROP, imputed_label=Q)[0].backward()
    # d ê/dΔ at Δ = 0: q·(−1/2) + (1 − q)·(1/2) = 0.5 − q = −0.1, over B = 4.
    assert rc.grad[1].item() == pytest.approx(-0.1 / 4, rel=1e-5)


def test_ips_rejects_zero_propensity():
    with pytest.raises(ValueError, match="propensity"):
        causal_ips_bt_loss(RC, RR, observed=OBS, propensity=torch.zeros(4))


def test_observation_propensity_is_a_clipped_logistic():
    p = observation_propensity(torch.tensor([0.0, 1.0, -10.0]), -1.0, 2.0, 0.05)
    assert p.tolist() == pytest.approx([1 / (1 + math.e), 1 / (1 + math.exp(-1)), 0.05])


def test_fit_logistic_recovers_the_coefficients():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20000, generator=gen, dtype=torch.float64)
    y = (torch.rand(20000, generator=gen, dtype=torch.float64) < torch.sigmoid(-1 + 2 * x)).double()
    a, b = fit_logistic(x, y)
    assert a == pytest.approx(-1.0, abs=0.08) and b == pytest.approx(2.0, abs=0.1)
    # Integer weights = repeated rows.
    w = torch.tensor([2.0, 1.0, 1.0])
    xs, ys = torch.tensor([0.0, 1.0, -1.0]), torch.tensor([1.0, 1.0, 0.0])
    assert fit_logistic(xs, ys, w) == pytest.approx(
        fit_logistic(torch.tensor([0.0, 0.0, 1.0, -1.0]), torch.tensor([1.0, 1.0, 1.0, 0.0])),
        abs=1e-6,
    )


def test_registered_with_their_needs():
    assert RM_OBJECTIVES.entry("causal_naive").meta["needs"] == ("observed",)
    assert RM_OBJECTIVES.entry("causal_ips").meta["needs"] == ("observed", "propensity")
    assert RM_OBJECTIVES.entry("causal_dr").meta["needs"] == (
        "observed",
        "propensity",
        "imputed_label",
    )
