"""core.rm_objectives: hand-computed cases and identities for the ordinal and the noise-robust
reward-model objectives (issue 14)."""

from __future__ import annotations

import math

import pytest
import torch

from goodhartlab.core.losses import bradley_terry_loss
from goodhartlab.core.rm_objectives import (
    detection_precision_recall,
    flag_suspect_pairs,
    noise_robust_bt_loss,
    ordinal_preference_loss,
    ordinal_rating_probs,
    ordinal_thresholds,
    preference_strength,
)
from goodhartlab.registry import RM_OBJECTIVES


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# --------------------------------------------------------------------------------- ordinal


def test_thresholds_are_symmetric_and_evenly_spaced():
    # θ_k = spacing · (k − K/2): K = 9, spacing 1 -> −3.5, −2.5, ..., 3.5.
    assert ordinal_thresholds(9, 1.0).tolist() == [-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5]
    assert ordinal_thresholds(2, 5.0).tolist() == [0.0]
    with pytest.raises(ValueError, match="ordinal_levels"):
        ordinal_thresholds(1, 1.0)
    with pytest.raises(ValueError, match="ordinal_spacing"):
        ordinal_thresholds(3, 0.0)


def test_rating_probs_hand_computed():
    # K = 3, θ = (−1, 1).
    # r = 0: P(S≤1) = σ(−1), P(S≤2) = σ(1) -> p = (σ(−1), σ(1) − σ(−1), 1 − σ(1))
    # r = 1: P(S≤1) = σ(−2), P(S≤2) = σ(0) = ½ -> p = (σ(−2), ½ − σ(−2), ½)
    p = ordinal_rating_probs(
        torch.tensor([0.0, 1.0], dtype=torch.float64), ordinal_thresholds(3, 2.0)
    )
    expected = [
        [sig(-1), sig(1) - sig(-1), 1 - sig(1)],
        [sig(-2), 0.5 - sig(-2), 0.5],
    ]
    torch.testing.assert_close(p, torch.tensor(expected, dtype=torch.float64))


def test_rating_probs_sum_to_one_and_shift_up_with_the_reward():
    theta = ordinal_thresholds(9, 1.0)
    r = torch.linspace(-6, 6, 13)
    p = ordinal_rating_probs(r, theta)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(13))
    expected_rating = (p * torch.arange(1, 10)).sum(dim=1)
    assert bool((expected_rating.diff() > 0).all())


def test_ordinal_loss_hand_computed_three_levels():
    # K = 3, θ = (−1, 1), r_c = r_r = 0, so p_c = p_r = (a, b, a) with a = σ(−1),
    # b = σ(1) − σ(−1).
    # grade 1: P(S_c − S_r ≥ 1) = p_c(2)p_r(1) + p_c(3)p_r(1) + p_c(3)p_r(2) = ba + a² + ab
    # grade 2: P(S_c − S_r ≥ 2) = p_c(3)p_r(1) = a²
    # L = −½ (log(2ab + a²) + log a²)
    a, b = sig(-1), sig(1) - sig(-1)
    loss, stats = ordinal_preference_loss(
        torch.zeros(2, dtype=torch.float64),
        torch.zeros(2, dtype=torch.float64),
        grade=torch.tensor([1, 2]),
        ordinal_levels=3,
        ordinal_spacing=2.0,
    )
    expected = -0.5 * (math.log(2 * a * b + a * a) + math.log(a * a))
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert stats["p_preferred"].item() == pytest.approx(2 * a * b + a * a, rel=1e-9)
    assert stats["p_region"].item() == pytest.approx(0.5 * (2 * a * b + 2 * a * a), rel=1e-9)
    assert stats["expected_rating_gap"].item() == pytest.approx(0.0, abs=1e-12)


def test_ordinal_with_two_levels_is_a_product_of_two_logistic_terms():
    # K = 2, θ = (0): p(2 | r) = σ(r), p(1 | r) = σ(−r), and the only cell with i − j ≥ 1 is
    # (2, 1): P = σ(r_c) σ(−r_r), so L = softplus(−r_c) + softplus(r_r).
    # r_c = 1, r_r = −1: L = 2 softplus(−1); r_c = r_r = 0: L = log 4.
    r_c = torch.tensor([1.0, 0.0, 2.5], dtype=torch.float64)
    r_r = torch.tensor([-1.0, 0.0, 0.3], dtype=torch.float64)
    loss, _ = ordinal_preference_loss(
        r_c, r_r, grade=torch.ones(3, dtype=torch.long), ordinal_levels=2, ordinal_spacing=1.0
    )
    expected = (2 * softplus(-1.0) + math.log(4.0) + softplus(-2.5) + softplus(0.3)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_higher_grades_ask_for_more_and_reward_a_larger_gap():
    # The band i − j ≥ g shrinks as g grows, so P_g falls and the loss rises; the loss of a
    # grade falls as the reward gap grows.
    r_c, r_r = torch.tensor([1.0]), torch.tensor([0.0])
    losses = [
        ordinal_preference_loss(r_c, r_r, grade=torch.tensor([g]))[0].item() for g in (1, 2, 3)
    ]
    assert losses[0] < losses[1] < losses[2]
    gaps = [
        ordinal_preference_loss(torch.tensor([d]), r_r, grade=torch.tensor([2]))[0].item()
        for d in (0.0, 1.0, 3.0)
    ]
    assert gaps[0] > gaps[1] > gaps[2]


def test_ordinal_refuses_grades_outside_the_scale():
    with pytest.raises(ValueError, match="grade"):
        ordinal_preference_loss(
            torch.zeros(2), torch.zeros(2), grade=torch.tensor([1, 3]), ordinal_levels=3
        )
    with pytest.raises(ValueError, match="grade"):
        ordinal_preference_loss(torch.zeros(1), torch.zeros(1), grade=torch.tensor([0]))


# ------------------------------------------------------------------------------ noise robust


def test_preference_strength_hand_computed():
    # d = chosen − rejected = [[1, 2], [2, −1]] -> μ̂ = (1.5, 0.5), σ̂ = (0.5, 1.5).
    mu, sigma = preference_strength(
        torch.tensor([[1.0, 2.0], [3.0, 0.0]]), torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    )
    torch.testing.assert_close(mu, torch.tensor([1.5, 0.5]))
    torch.testing.assert_close(sigma, torch.tensor([0.5, 1.5]))


def test_flag_suspect_pairs_takes_the_lowest_strengths():
    strength = torch.tensor([0.3, -1.0, 2.0, -1.0, 0.0])
    # round(0.4 · 5) = 2 lowest: the two −1.0s (indices 1 and 3).
    assert flag_suspect_pairs(strength, 0.4).tolist() == [False, True, False, True, False]
    # round(0.2 · 5) = 1: of the tied −1.0s, the lower index.
    assert flag_suspect_pairs(strength, 0.2).tolist() == [False, True, False, False, False]
    assert not flag_suspect_pairs(strength, 0.0).any()
    with pytest.raises(ValueError, match="suspect_fraction"):
        flag_suspect_pairs(strength, 1.0)


def test_detection_precision_recall_hand_computed():
    # suspects {0, 1}, flipped {0, 2}: caught {0}: precision 1/2, recall 1/2, chance 2/4.
    out = detection_precision_recall(
        torch.tensor([True, True, False, False]), torch.tensor([True, False, True, False])
    )
    assert out == {
        "n_pairs": 4,
        "n_suspect": 2,
        "n_flipped": 2,
        "n_caught": 1,
        "precision": 0.5,
        "recall": 0.5,
        "chance_precision": 0.5,
    }
    none = detection_precision_recall(
        torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)
    )
    assert math.isnan(none["precision"]) and math.isnan(none["recall"])


def test_noise_robust_hand_computed_flip_and_adaptive_margin():
    # Δ = 0 for every pair, μ̂ = (2, 0.5, −1, −3), only pair 3 suspect, flip, λ = 1, ε = 0:
    #   s = (1, 1, 1, −1), m = max(0, s μ̂) = (2, 0.5, 0, 3), z = sΔ − m = (−2, −0.5, 0, −3)
    #   L = mean softplus(−z) = (softplus(2) + softplus(0.5) + log 2 + softplus(3)) / 4
    loss, stats = noise_robust_bt_loss(
        torch.zeros(4, dtype=torch.float64),
        torch.zeros(4, dtype=torch.float64),
        strength=torch.tensor([2.0, 0.5, -1.0, -3.0]),
        suspect=torch.tensor([False, False, False, True]),
    )
    expected = (softplus(2.0) + softplus(0.5) + math.log(2.0) + softplus(3.0)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert stats["suspect_fraction"].item() == 0.25
    assert stats["adaptive_margin_mean"].item() == pytest.approx(5.5 / 4)


def test_noise_robust_hand_computed_downweight_and_smoothing():
    # Δ = (1, −2), μ̂ = (0, 0), pair 1 suspect with weight ½, λ = 0, ε = 0.1:
    #   ℓ_0 = 0.9 softplus(−1) + 0.1 softplus(1), ℓ_1 = 0.9 softplus(2) + 0.1 softplus(−2)
    #   L = (ℓ_0 + ½ ℓ_1) / 1.5
    loss, _ = noise_robust_bt_loss(
        torch.tensor([1.0, -2.0], dtype=torch.float64),
        torch.zeros(2, dtype=torch.float64),
        strength=torch.zeros(2),
        suspect=torch.tensor([False, True]),
        suspect_action="downweight",
        suspect_weight=0.5,
        strength_margin=0.0,
        label_smoothing=0.1,
    )
    l0 = 0.9 * softplus(-1.0) + 0.1 * softplus(1.0)
    l1 = 0.9 * softplus(2.0) + 0.1 * softplus(-2.0)
    assert loss.item() == pytest.approx((l0 + 0.5 * l1) / 1.5, rel=1e-9)


def test_noise_robust_without_suspects_or_margin_is_bradley_terry():
    gen = torch.Generator().manual_seed(0)
    r_c, r_r = torch.randn(16, generator=gen), torch.randn(16, generator=gen)
    kwargs = {
        "strength": torch.randn(16, generator=gen),
        "suspect": torch.zeros(16, dtype=torch.bool),
    }
    for eps in (0.0, 0.2):
        robust, _ = noise_robust_bt_loss(
            r_c, r_r, **kwargs, strength_margin=0.0, label_smoothing=eps
        )
        bt, _ = bradley_terry_loss(r_c, r_r, label_smoothing=eps)
        torch.testing.assert_close(robust, bt)


def test_flipping_a_suspect_is_bradley_terry_on_the_swapped_pair_and_dropping_removes_it():
    gen = torch.Generator().manual_seed(1)
    r_c, r_r = torch.randn(8, generator=gen), torch.randn(8, generator=gen)
    suspect = torch.tensor([True, False, False, True, False, False, False, False])
    kwargs = {"strength": torch.zeros(8), "suspect": suspect, "strength_margin": 0.0}
    flipped, _ = noise_robust_bt_loss(r_c, r_r, **kwargs)
    swapped_c = torch.where(suspect, r_r, r_c)
    swapped_r = torch.where(suspect, r_c, r_r)
    torch.testing.assert_close(flipped, bradley_terry_loss(swapped_c, swapped_r)[0])
    dropped, _ = noise_robust_bt_loss(r_c, r_r, **kwargs, suspect_action="downweight")
    torch.testing.assert_close(dropped, bradley_terry_loss(r_c[~suspect], r_r[~suspect])[0])


def test_noise_robust_bad_settings_name_the_parameter():
    args = (torch.zeros(2), torch.zeros(2))
    kwargs = {"strength": torch.zeros(2), "suspect": torch.zeros(2, dtype=torch.bool)}
    with pytest.raises(ValueError, match="suspect_action"):
        noise_robust_bt_loss(*args, **kwargs, suspect_action="drop")
    with pytest.raises(ValueError, match="suspect_weight"):
        noise_robust_bt_loss(*args, **kwargs, suspect_weight=2.0)
    with pytest.raises(ValueError, match="strength_margin"):
        noise_robust_bt_loss(*args, **kwargs, strength_margin=-1.0)


def test_registered_with_their_needs_and_parameters():
    ordinal = RM_OBJECTIVES.entry("ordinal")
    assert ordinal.meta["needs"] == ("grade",)
    assert set(ordinal.params.model_fields) == {"ordinal_levels", "ordinal_spacing"}
    robust = RM_OBJECTIVES.entry("noise_robust")
    assert robust.meta["needs"] == ("strength", "suspect")
    assert "2401.06080" in robust.paper
    with pytest.raises(ValueError, match="suspect_action"):
        robust.validate_params({"suspect_action": "drop"})
