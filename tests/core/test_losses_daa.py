"""DPO, IPO, SLiC and RPO losses: hand-computed cases, identities, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from goodhartlab.core.losses import dpo_loss, ipo_loss, rpo_loss, slic_loss


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def _pairs_with_margin(h: torch.Tensor):
    """Log-probs whose log-ratio margin is exactly h: ρ_w = h, ρ_l = 0."""
    policy_chosen = (t(*[-2.0] * len(h)) + h).requires_grad_()
    return policy_chosen, t(*[-3.0] * len(h)), t(*[-2.0] * len(h)), t(*[-3.0] * len(h))


def _random_pairs(seed: int, B: int = 6):
    gen = torch.Generator().manual_seed(seed)
    pc, pr, rc, rr = (-10 * torch.rand(4, B, generator=gen, dtype=torch.float64)).unbind(0)
    return pc.requires_grad_(), pr.requires_grad_(), rc, rr


def test_dpo_hand_computed():
    # β = 0.5; ρ_w = −1 − (−2) = 1, ρ_l = −3 − (−2) = −1, h = 2, βh = 1.
    # L = −log σ(1) = log(1 + e^−1) = 0.3132617. Rewards β·ρ: chosen 0.5, rejected −0.5.
    loss, stats = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-12)
    assert stats["reward_chosen"].item() == pytest.approx(0.5)
    assert stats["reward_rejected"].item() == pytest.approx(-0.5)
    assert stats["reward_margin"].item() == pytest.approx(1.0)
    assert stats["reward_accuracy"].item() == 1.0


def test_dpo_label_smoothing_hand_computed():
    # βh = 1, ε = 0.1: 0.9 · log(1 + e^−1) + 0.1 · log(1 + e) = 0.2819355 + 0.1313262 = 0.4132617.
    loss, _ = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5, label_smoothing=0.1)
    expected = 0.9 * math.log1p(math.exp(-1.0)) + 0.1 * math.log1p(math.exp(1.0))
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.4132617, abs=1e-7)


def test_dpo_without_smoothing_is_minus_log_sigmoid_and_its_gradient():
    # L = mean −log σ(βh); ∂L/∂log π(y_w) = −β σ(−βh) / B, ∂L/∂log π(y_l) = +β σ(−βh) / B.
    pc, pr, rc, rr = _random_pairs(0)
    beta = 0.3
    loss, _ = dpo_loss(pc, pr, rc, rr, beta)
    h = (pc - rc) - (pr - rr)
    torch.testing.assert_close(loss, -torch.log(torch.sigmoid(beta * h)).mean())
    loss.backward()
    g = beta * torch.sigmoid(-beta * h.detach()) / 6
    torch.testing.assert_close(pc.grad, -g)
    torch.testing.assert_close(pr.grad, g)


def test_dpo_stable_for_large_margins():
    # βh = ±800: σ underflows in float64, the softplus form does not.
    loss, _ = dpo_loss(*_pairs_with_margin(t(8000.0, -8000.0)), beta=0.1)
    assert loss.item() == pytest.approx(800.0 / 2, rel=1e-12)


def test_ipo_hand_computed_and_minimum():
    # β = 0.5 → target margin 1/(2β) = 1. h = 2: (2 − 1)² = 1; h = 1: 0; h = −1: 4.
    for h, expected in [(2.0, 1.0), (1.0, 0.0), (-1.0, 4.0)]:
        loss, _ = ipo_loss(*_pairs_with_margin(t(h)), beta=0.5)
        assert loss.item() == pytest.approx(expected, abs=1e-12)
    # The minimum sits at h = 1/(2β) for any β: zero gradient there, larger loss on both sides.
    for beta in (0.1, 0.5, 2.0):
        target = 1.0 / (2.0 * beta)
        pc, pr, rc, rr = _pairs_with_margin(t(target))
        loss, _ = ipo_loss(pc, pr, rc, rr, beta)
        loss.backward()
        assert loss.item() == pytest.approx(0.0, abs=1e-20)
        assert pc.grad.item() == pytest.approx(0.0, abs=1e-12)
        for dh in (-0.1, 0.1):
            off, _ = ipo_loss(*_pairs_with_margin(t(target + dh)), beta)
            assert off.item() == pytest.approx(0.01, abs=1e-12)


def test_slic_hand_computed():
    # β = 0.5: max(0, 1 − βh). h = 2 → 0; h = 1 → 0.5; h = −2 → 2.
    loss, stats = slic_loss(*_pairs_with_margin(t(2.0, 1.0, -2.0)), beta=0.5)
    assert loss.item() == pytest.approx((0.0 + 0.5 + 2.0) / 3, abs=1e-12)
    assert stats["reward_accuracy"].item() == pytest.approx(2 / 3)


def test_slic_is_inactive_past_the_margin():
    # h ≥ 1/β: no loss, no gradient; below it the gradient on log π(y_w) is −β/B.
    pc, pr, rc, rr = _pairs_with_margin(t(2.5, 0.5))
    loss, _ = slic_loss(pc, pr, rc, rr, beta=0.5)
    loss.backward()
    torch.testing.assert_close(pc.grad, t(0.0, -0.25))


def test_rpo_hand_computed_and_eta_zero_is_dpo():
    # DPO term as in test_dpo_hand_computed: log(1 + e^−1); NLL = 1.2, η = 0.5:
    # L = 0.3132617 + 0.6 = 0.9132617. ∂L/∂NLL_i = η / B.
    nll = t(1.2).requires_grad_()
    loss, stats = rpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5, eta=0.5, chosen_nll=nll)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)) + 0.6, abs=1e-12)
    assert stats["nll"].item() == pytest.approx(1.2)
    assert stats["dpo_loss"].item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-12)
    loss.backward()
    assert nll.grad.item() == pytest.approx(0.5)

    pc, pr, rc, rr = _random_pairs(1)
    zero_eta, _ = rpo_loss(pc, pr, rc, rr, 0.2, 0.0, torch.full((6,), 3.0, dtype=torch.float64))
    dpo, _ = dpo_loss(pc, pr, rc, rr, 0.2)
    torch.testing.assert_close(zero_eta, dpo, rtol=0, atol=0)


def test_daa_stats_are_detached():
    for loss_fn in (dpo_loss, ipo_loss, slic_loss):
        _, stats = loss_fn(*_random_pairs(2), 0.1)
        assert all(not v.requires_grad for v in stats.values())


def _args(**overrides):
    args = {
        "policy_chosen_logps": torch.zeros(3),
        "policy_rejected_logps": torch.zeros(3),
        "ref_chosen_logps": torch.zeros(3),
        "ref_rejected_logps": torch.zeros(3),
        "beta": 0.1,
    }
    args.update(overrides)
    return args


@pytest.mark.parametrize("loss_fn", [dpo_loss, ipo_loss, slic_loss])
@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"policy_chosen_logps": torch.zeros(3, 1)}, r"policy_chosen_logps must have shape \(B,\)"),
        ({"ref_rejected_logps": torch.zeros(2)}, "ref_rejected_logps must have shape"),
        ({"beta": 0.0}, "beta must be > 0"),
        ({"policy_rejected_logps": t(0.0, math.nan, 0.0)}, "policy_rejected_logps must be finite"),
        ({"ref_chosen_logps": t(0.0, 0.0, -math.inf)}, "ref_chosen_logps must be finite"),
    ],
)
def test_daa_bad_input(loss_fn, overrides, match):
    with pytest.raises(ValueError, match=match):
        loss_fn(**_args(**overrides))


def test_dpo_and_rpo_bad_input():
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(**_args(), label_smoothing=0.5)
    with pytest.raises(ValueError, match="eta must be >= 0"):
        rpo_loss(**_args(), eta=-1.0, chosen_nll=torch.zeros(3))
    with pytest.raises(ValueError, match="chosen_nll must have shape"):
        rpo_loss(**_args(), eta=1.0, chosen_nll=torch.zeros(2))
    with pytest.raises(ValueError, match="chosen_nll must be finite"):
        rpo_loss(**_args(), eta=1.0, chosen_nll=t(0.0, math.inf, 0.0))


def test_dpo_softplus_matches_logsigmoid_in_float32():
    # The float32 path agrees with F.logsigmoid (what TRL uses).
    pc, pr, rc, rr = (x.detach().float() for x in _random_pairs(3))
    loss, _ = dpo_loss(pc, pr, rc, rr, 0.7)
    expected = -F.logsigmoid(0.7 * ((pc - rc) - (pr - rr))).mean()
    torch.testing.assert_close(loss, expected)
