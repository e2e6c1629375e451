"""Bradley-Terry loss against hand-computed values and identities."""

from __future__ import annotations

import math

import pytest
import torch

from goodhartlab.core.losses import bradley_terry_loss


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def test_plain_bt_hand_computed():
    # Δ = [1, 0]: −log σ(1) = log(1 + e^−1) = 0.3132617, −log σ(0) = log 2 = 0.6931472.
    loss, stats = bradley_terry_loss(t(1.0, 0.0), t(0.0, 0.0))
    expected = (math.log1p(math.exp(-1.0)) + math.log(2.0)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.5032044, abs=1e-7)
    # Strict accuracy: the tie (Δ = 0) is not correct.
    assert stats["accuracy"].item() == 0.5
    assert stats["margin_mean"].item() == pytest.approx(0.5)
    assert stats["reward_mean"].item() == pytest.approx(0.25)  # (1 + 0 + 0 + 0) / 4
    assert stats["bt_loss"].item() == pytest.approx(expected)


def test_margin_shifts_the_gap():
    # Δ − m = [1 − 1, 0 − 0] = [0, 0] → loss = log 2; accuracy still counts r_c > r_r.
    loss, stats = bradley_terry_loss(t(1.0, 0.0), t(0.0, 0.0), margin=t(1.0, 0.0))
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-12)
    assert stats["accuracy"].item() == 0.5
    # bt_loss ignores the margin, so it equals the plain loss.
    assert stats["bt_loss"].item() == pytest.approx(0.5032044, abs=1e-7)


def test_label_smoothing_hand_computed():
    # Δ = 1, ε = 0.1: 0.9 · log(1 + e^−1) + 0.1 · log(1 + e) = 0.2819355 + 0.1313262.
    loss, _ = bradley_terry_loss(t(1.0), t(0.0), label_smoothing=0.1)
    assert loss.item() == pytest.approx(0.9 * 0.31326169 + 0.1 * 1.31326169, abs=1e-7)
    # Identity: softplus(x) − softplus(−x) = x, so the smoothed loss is plain + ε·Δ.
    delta = t(0.3, -2.0, 4.0)
    plain, _ = bradley_terry_loss(delta, torch.zeros(3, dtype=torch.float64))
    smooth, _ = bradley_terry_loss(delta, torch.zeros(3, dtype=torch.float64), label_smoothing=0.2)
    assert smooth.item() == pytest.approx(plain.item() + 0.2 * delta.mean().item(), abs=1e-12)


def test_center_penalty_hand_computed():
    # r_c = 1, r_r = 0.5: −log σ(0.5) = 0.4740770, + 0.01 · (1.5)² = 0.0225.
    loss, _ = bradley_terry_loss(t(1.0), t(0.5), center_coef=0.01)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.5)) + 0.0225, abs=1e-12)
    # The penalty does not see a shift that keeps the pair centred.
    a, _ = bradley_terry_loss(t(1.0), t(-1.0), center_coef=1.0)
    b, _ = bradley_terry_loss(t(1.0), t(-1.0))
    assert a.item() == pytest.approx(b.item())


def test_gradient_is_minus_sigmoid_of_minus_gap():
    # d/dr_c [−log σ(r_c − r_r)] = −σ(−Δ) (mean over B = 2 halves it).
    r_c = t(0.0, 2.0).requires_grad_()
    r_r = t(0.0, 0.0).requires_grad_()
    loss, stats = bradley_terry_loss(r_c, r_r)
    loss.backward()
    expected = -torch.sigmoid(-t(0.0, 2.0)) / 2
    torch.testing.assert_close(r_c.grad, expected)
    torch.testing.assert_close(r_r.grad, -expected)
    assert not any(v.requires_grad for v in stats.values())


def test_stable_for_large_gaps():
    loss, _ = bradley_terry_loss(t(-1000.0), t(0.0))
    assert loss.item() == pytest.approx(1000.0)


def test_rank_and_argument_checks():
    with pytest.raises(AssertionError):
        bradley_terry_loss(torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(AssertionError):
        bradley_terry_loss(torch.zeros(2), torch.zeros(3))
    with pytest.raises(AssertionError):
        bradley_terry_loss(torch.zeros(2), torch.zeros(2), margin=torch.zeros(3))
    with pytest.raises(ValueError, match="label_smoothing"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(2), label_smoothing=0.5)
    with pytest.raises(ValueError, match="center_coef"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(2), center_coef=-1.0)
