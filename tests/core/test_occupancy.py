"""core.occupancy: sequence-level χ², √χ², TV and KL (Laidlaw et al. 2024, arXiv 2403.03185)."""

from __future__ import annotations

import math

import pytest
import torch

from goodhartlab.core.occupancy import (
    LOG_RATIO_CLIP,
    OCCUPANCY_DIVERGENCES,
    chi2,
    inverse_ratio_minus_one,
    kl,
    occupancy_lambda,
    ratio_minus_one,
    sequence_log_ratio,
    sqrt_chi2,
    tv,
)

LN2 = math.log(2.0)


def _exact(name: str, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The divergence between two categorical distributions, by its definition."""
    if name == "chi2":
        return (p * p / q).sum() - 1.0
    if name == "sqrt_chi2":
        return ((p * p / q).sum() - 1.0).sqrt()
    if name == "tv":
        return 0.5 * (p - q).abs().sum()
    if name == "kl":
        return (p * (p.log() - q.log())).sum()
    raise AssertionError(name)


def test_three_sequences_by_hand():
    # log w = [0, ln 2, −ln 2]: w = [1, 2, 1/2], w − 1 = [0, 1, −1/2], 1/w − 1 = [0, −1/2, 1].
    x = torch.tensor([0.0, LN2, -LN2], dtype=torch.float64)
    # χ² terms w + 1/w − 2 = [0, 1/2, 1/2]: mean 1/3; reward term 2(w − 1) = [0, 2, −1].
    c = chi2(x)
    assert float(c.value) == pytest.approx(1 / 3)
    assert c.reward_terms.tolist() == pytest.approx([0.0, 2.0, -1.0])
    # √χ² = √(1/3); term (w − 1)/√(1/3) = [0, √3, −√3/2].
    s = sqrt_chi2(x)
    assert float(s.value) == pytest.approx(math.sqrt(1 / 3))
    assert s.reward_terms.tolist() == pytest.approx([0.0, math.sqrt(3), -math.sqrt(3) / 2])
    # TV terms max(0, 1 − 1/w) = [0, 1/2, 0]: mean 1/6; reward term 1[w > 1] = [0, 1, 0].
    t = tv(x)
    assert float(t.value) == pytest.approx(1 / 6)
    assert t.reward_terms.tolist() == [0.0, 1.0, 0.0]
    # KL terms log w + 1/w − 1 = [0, ln 2 − 1/2, 1 − ln 2]: sum 1/2, mean 1/6; term log w.
    k = kl(x)
    assert float(k.value) == pytest.approx(1 / 6)
    assert k.reward_terms.tolist() == pytest.approx([0.0, LN2, -LN2])
    assert all(float(d.clipfrac) == 0.0 for d in (c, s, t, k))


def test_every_divergence_is_zero_at_the_reference():
    x = torch.zeros(5, dtype=torch.float64)
    for name in OCCUPANCY_DIVERGENCES:
        d = OCCUPANCY_DIVERGENCES[name](x)
        assert torch.all(d.reward_terms == 0.0), name
    assert float(chi2(x).value) == 0.0 and float(tv(x).value) == 0.0 and float(kl(x).value) == 0
    assert float(sqrt_chi2(x).value) == pytest.approx(1e-2)  # the floor √1e-4


def test_sequence_log_ratio_sums_the_completion_tokens():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, float("-inf")]])
    ref = torch.tensor([[-1.5, -1.0, -3.0], [-1.0, -2.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    # Row 0: (−1 + 1.5) + (−2 + 1) = −0.5; row 1: 0.5 + 1.5 = 2 (the padded −inf ignored).
    assert sequence_log_ratio(logp, ref, mask).tolist() == pytest.approx([-0.5, 2.0])


@pytest.mark.parametrize("name", ["chi2", "sqrt_chi2", "tv", "kl"])
def test_enumerated_support_gives_the_exact_divergence(name):
    # Rows = the whole support, weights = π(y): the estimators are exact expectations.
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    q = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    d = OCCUPANCY_DIVERGENCES[name](p.log() - q.log(), weights=p)
    assert float(d.value) == pytest.approx(float(_exact(name, p, q)), rel=1e-10)


@pytest.mark.parametrize("name", ["chi2", "sqrt_chi2", "tv", "kl"])
def test_monte_carlo_estimate_matches_the_definition(name):
    # Naive: the definition over 5 outcomes against the estimator on 200,000 samples of π.
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(5, generator=g, dtype=torch.float64), 0)
    q = torch.softmax(torch.randn(5, generator=g, dtype=torch.float64), 0)
    y = torch.multinomial(p, 200_000, replacement=True, generator=g)
    d = OCCUPANCY_DIVERGENCES[name]((p.log() - q.log())[y])
    assert float(d.value) == pytest.approx(float(_exact(name, p, q)), rel=0.02)


@pytest.mark.parametrize("name", ["chi2", "sqrt_chi2", "tv", "kl"])
def test_reward_terms_are_the_policy_gradient_of_the_divergence(name):
    # π_θ = softmax(θ) over 4 sequences: E_π[t ∇log π] (exact sum) must equal ∇D(π_θ ‖ q).
    g = torch.Generator().manual_seed(2)
    theta = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.softmax(torch.randn(4, generator=g, dtype=torch.float64), 0)
    p = torch.softmax(theta, 0)
    (grad_exact,) = torch.autograd.grad(_exact(name, p, q), theta)
    p_fixed = p.detach()
    terms = OCCUPANCY_DIVERGENCES[name](p_fixed.log() - q.log(), weights=p_fixed).reward_terms
    surrogate = (p_fixed * terms * torch.log_softmax(theta, 0)).sum()
    (grad_pg,) = torch.autograd.grad(surrogate, theta)
    assert torch.allclose(grad_pg, grad_exact, atol=1e-12), (grad_pg, grad_exact)


def test_ratios_continue_linearly_past_the_clip():
    c = LOG_RATIO_CLIP
    x = torch.tensor([c - 1.0, c, c + 2.0, -(c + 2.0)], dtype=torch.float64)
    r = ratio_minus_one(x)
    assert float(r[0]) == pytest.approx(math.expm1(c - 1.0))
    assert float(r[1]) == pytest.approx(math.expm1(c))  # continuous at the clip
    assert float(r[2]) == pytest.approx(math.exp(c) * 3.0 - 1.0)  # e^c (1 + 2) − 1
    assert float(inverse_ratio_minus_one(x)[3]) == pytest.approx(math.exp(c) * 3.0 - 1.0)
    # Slope e^c on both sides of the clip.
    h = 1e-6
    left = (math.expm1(c) - math.expm1(c - h)) / h
    right = float(ratio_minus_one(torch.tensor([c + h], dtype=torch.float64)) - r[1]) / h
    assert right == pytest.approx(left, rel=1e-4)
    # A runaway sequence (log w = 200) gives a finite penalty, and is counted.
    d = sqrt_chi2(torch.tensor([0.0, 200.0], dtype=torch.float64))
    assert math.isfinite(float(d.value)) and bool(torch.isfinite(d.reward_terms).all())
    assert float(d.clipfrac) == 0.5


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="log_ratio"):
        chi2(torch.tensor([0.0, float("nan")]))
    with pytest.raises(AssertionError):
        chi2(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="r_base"):
        occupancy_lambda(torch.tensor([1.0]), 0.1)
    with pytest.raises(ValueError, match="coef"):
        occupancy_lambda(torch.tensor([1.0, 2.0]), -1.0)


def test_lambda_is_the_coefficient_times_the_proxy_std_on_base_samples():
    # r = [1, 2, 3, 4] (prompts × samples, flattened): sample std √(5/3).
    r = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert occupancy_lambda(r, 0.5) == pytest.approx(0.5 * math.sqrt(5 / 3))
