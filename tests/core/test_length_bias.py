"""Tests for goodhartlab.core.length_bias: FiMi-RM's length-bias fit and ODIN's loss."""

import math

import numpy as np
import pytest
import torch

from goodhartlab.core.length_bias import (
    completion_lengths,
    fit_length_bias,
    length_bias_fit_loss,
    length_encoding,
    odin_loss,
    pearson,
)
from goodhartlab.registry import RM_OBJECTIVES


def test_length_encoding_hand_computed():
    # d = 4: frequencies 10000^{-0/4} = 1 and 10000^{-2/4} = 1/100, sines then cosines.
    ell = torch.tensor([0.0, 1.0, 50.0], dtype=torch.float64)
    expected = torch.tensor(
        [
            [0.0, 0.0, 1.0, 1.0],
            [math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01)],
            [math.sin(50), math.sin(0.5), math.cos(50), math.cos(0.5)],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(length_encoding(ell, 4), expected)
    with pytest.raises(ValueError, match="dim"):
        length_encoding(ell, 3)


def test_completion_lengths_counts_words():
    assert completion_lengths([" the screen is great . ", "", "one"]).tolist() == [5.0, 0.0, 1.0]


def test_pearson_against_numpy_and_constant_is_zero():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, generator=gen, dtype=torch.float64), torch.randn(50, generator=gen)
    y = y.double() + 0.5 * x
    assert pearson(x, y).item() == pytest.approx(np.corrcoef(x.numpy(), y.numpy())[0, 1], abs=1e-7)
    assert pearson(x, torch.ones_like(x)).item() == 0.0


def test_fit_loss_hand_computed():
    r = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    # r̂ = r: ρ = 1, MSE = 0 -> −1.
    assert length_bias_fit_loss(r, r.clone()).item() == pytest.approx(-1.0, abs=1e-7)
    # r̂ = 2 − r: ρ = −1 (|ρ| = 1), MSE = (4 + 0 + 4)/3 -> −1 + 8/3.
    assert length_bias_fit_loss(r, 2 - r).item() == pytest.approx(-1 + 8 / 3, abs=1e-7)
    # r̂ = 1 (constant): ρ = 0, MSE = (1 + 0 + 1)/3.
    assert length_bias_fit_loss(r, torch.ones(3, dtype=torch.float64)).item() == pytest.approx(
        2 / 3, abs=1e-6
    )


def _curve(ell):
    return -0.2 * ell + 0.01 * (ell - 15) ** 2


def test_fit_recovers_a_nonlinear_bias_and_the_residual_is_uncorrelated():
    ell = torch.arange(3, 30, dtype=torch.float64).repeat(10)
    noise = 0.3 * torch.randn(ell.shape, generator=torch.Generator().manual_seed(0)).double()
    r = 100.0 * (_curve(ell) + noise)  # the fit must not depend on the proxy's scale
    f, report = fit_length_bias(ell, r)
    grid = torch.arange(3, 30, dtype=torch.float64)
    # Noise σ = 0.3 with 10 samples per length: the mean's error is ~0.1.
    np.testing.assert_allclose(f(grid).numpy() / 100.0, _curve(grid).numpy(), atol=0.3)
    assert report.pearson_before < -0.9
    assert abs(report.pearson_after) < 0.02
    assert report.fit_pearson > 0.95  # the sign trap (r̂ ∝ −r) is avoided
    assert report.curve[10] == pytest.approx(f(torch.tensor([10.0])).item())
    assert report.mean_by_length[3] == pytest.approx(r[ell == 3].mean().item())
    assert report.n == 270
    # Outside the fitted lengths [3, 29], f is held at the nearest end.
    edges = f(torch.tensor([3.0, 29.0, 0.0, 100.0], dtype=torch.float64))
    assert edges[2] == edges[0] and edges[3] == edges[1]


def test_fit_is_deterministic_and_leaves_the_global_rng_alone():
    ell = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64)
    r = -ell
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    f1, _ = fit_length_bias(ell, r, steps=50)
    after = torch.rand(1)
    f2, _ = fit_length_bias(ell, r, steps=50)
    assert torch.equal(before, after)
    torch.testing.assert_close(f1(ell), f2(ell), rtol=0, atol=0)
    with pytest.raises(ValueError, match="at least 2"):
        fit_length_bias(ell[:1], r[:1])


def _odin_inputs():
    return dict(
        r_chosen=torch.tensor([1.0, 0.0], dtype=torch.float64),
        r_rejected=torch.tensor([0.0, 0.0], dtype=torch.float64),
        length_reward_chosen=torch.tensor([0.0, 1.0], dtype=torch.float64),
        length_reward_rejected=torch.tensor([0.0, 0.0], dtype=torch.float64),
        length_chosen=torch.tensor([1.0, 3.0], dtype=torch.float64),
        length_rejected=torch.tensor([2.0, 4.0], dtype=torch.float64),
        w_quality=torch.tensor([1.0, 2.0], dtype=torch.float64),
        w_length=torch.tensor([3.0, -1.0], dtype=torch.float64),
    )


def test_odin_loss_hand_computed():
    # r_Q + r_L: chosen [1, 1], rejected [0, 0]; L_BT = log(1 + e^{-1}).
    # Over the 4 responses ℓ = [1, 3, 2, 4] (deviations [-1.5, .5, -.5, 1.5], Σ² = 5),
    # r_Q = [1, 0, 0, 0] (deviations [.75, -.25, -.25, -.25], Σ² = .75): cov = -1.5,
    # ρ_Q = -1.5 / sqrt(3.75); r_L = [0, 1, 0, 0]: cov = .5, ρ_L = .5 / sqrt(3.75).
    # L_L = |ρ_Q| − ρ_L = 1 / sqrt(3.75). L_O = |1·3 + 2·(−1)| = 1.
    bt = math.log1p(math.exp(-1))
    rho_q, rho_l = -1.5 / math.sqrt(3.75), 0.5 / math.sqrt(3.75)
    loss, stats = odin_loss(**_odin_inputs(), length_coef=2.0, ortho_coef=0.5)
    assert loss.item() == pytest.approx(bt + 2 * (abs(rho_q) - rho_l) + 0.5 * 1.0, abs=1e-6)
    assert stats["bt_loss"].item() == pytest.approx(bt, abs=1e-7)
    assert stats["rho_quality"].item() == pytest.approx(rho_q, abs=1e-6)
    assert stats["rho_length"].item() == pytest.approx(rho_l, abs=1e-6)
    assert stats["ortho_loss"].item() == pytest.approx(1.0)
    assert stats["accuracy"].item() == 0.5  # r_Q ties on the second pair
    assert stats["accuracy_sum"].item() == 1.0
    # s = −1: L_L = |ρ_Q| + ρ_L = 2 / sqrt(3.75).
    loss_neg, _ = odin_loss(**_odin_inputs(), length_coef=1.0, ortho_coef=0.0, length_sign=-1.0)
    assert loss_neg.item() == pytest.approx(bt + 2 / math.sqrt(3.75), abs=1e-6)
    # λ_L = λ_O = 0: plain Bradley-Terry on the sum.
    loss0, _ = odin_loss(**_odin_inputs(), length_coef=0.0, ortho_coef=0.0)
    assert loss0.item() == pytest.approx(bt, abs=1e-7)


def test_odin_gradients_push_length_into_the_length_head():
    inputs = {
        k: v.clone().requires_grad_(k.startswith(("r_", "length_reward", "w_")))
        for k, v in _odin_inputs().items()
    }
    loss, _ = odin_loss(**inputs, length_coef=1.0, ortho_coef=1.0)
    loss.backward()
    ell = torch.cat([inputs["length_chosen"], inputs["length_rejected"]])
    g_len = torch.cat([inputs["length_reward_chosen"].grad, inputs["length_reward_rejected"].grad])
    # Descending the gradient on r_L raises ρ(r_L, ℓ): −grad correlates positively with ℓ.
    assert pearson(-g_len, ell).item() > 0
    # W_Q · W_L = 1 > 0: the gradient on W_Q is sign(1)·W_L (+ nothing else), so it lowers it.
    torch.testing.assert_close(inputs["w_quality"].grad, inputs["w_length"].detach())


def test_odin_registered_with_its_needs():
    entry = RM_OBJECTIVES.entry("odin")
    assert entry.meta["needs"] == ("length",) and entry.meta["length_head"]
    assert set(entry.params.model_fields) == {"length_coef", "ortho_coef", "length_sign"}
    with pytest.raises(ValueError, match="length_coef"):
        odin_loss(**_odin_inputs(), length_coef=-1.0)
    with pytest.raises(ValueError, match="length_sign"):
        odin_loss(**_odin_inputs(), length_sign=0.5)
