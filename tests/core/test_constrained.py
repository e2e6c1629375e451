"""core.constrained: multipliers, the Lagrangian reward, dual ascent and the proxy point."""

from __future__ import annotations

import math

import pytest
import torch

from goodhartlab.core.constrained import (
    dual_ascent_step,
    lagrangian_reward,
    multipliers,
    proxy_point,
)


def test_lagrangian_reward_hand_computed():
    # K = 2, μ = (0.25, 0.5): weight of r_0 is 2 − 0.75 = 1.25.
    # item 0: 1.25·(−1) + 0.25·2 + 0.5·4 = −1.25 + 0.5 + 2 = 1.25
    # item 1: 1.25·0 + 0.25·(−2) + 0.5·1 = 0
    r0 = torch.tensor([-1.0, 0.0])
    rk = torch.tensor([[2.0, -2.0], [4.0, 1.0]])
    out = lagrangian_reward(r0, rk, torch.tensor([0.25, 0.5]))
    assert torch.allclose(out, torch.tensor([1.25, 0.0]))
    # Against the naive double loop.
    mu = torch.tensor([0.1, 0.7])
    naive = [(2 - 0.8) * r0[b] + sum(mu[k] * rk[k, b] for k in range(2)) for b in range(2)]
    assert torch.allclose(lagrangian_reward(r0, rk, mu), torch.stack(naive))


def test_lagrangian_reward_identities():
    r0 = torch.tensor([0.3, -0.2, 1.0])
    rk = torch.randn(3, 3, generator=torch.Generator().manual_seed(0))
    # μ = 0: the objective alone, K times.
    assert torch.allclose(lagrangian_reward(r0, rk, torch.zeros(3)), 3 * r0)
    # μ = 1 for all: the plain sum of components, the objective gone.
    assert torch.allclose(lagrangian_reward(r0, rk, torch.ones(3)), rk.sum(0))


def test_dual_ascent_step_hand_computed():
    # "ge": λ = 0 -> μ = σ(0) = 0.5, μ' = 0.25.  v − θ = (0.4, −0.8):
    #   g = (0.1, −0.2); lr 0.1 -> λ = (−0.01, +0.02): above its threshold the multiplier
    #   falls, below it rises.
    lam, b = dual_ascent_step(
        torch.zeros(2), torch.tensor([1.4, 0.2]), torch.tensor([1.0, 1.0]), lr=0.1
    )
    assert torch.allclose(lam, torch.tensor([-0.01, 0.02]))
    assert torch.allclose(b, torch.tensor([0.1, -0.2]))
    # Momentum 0.5 on the next step, λ = (−0.01, 0.02), same violations:
    #   μ' = σ(λ)(1 − σ(λ)) ≈ 0.25 − λ²/16;  b = 0.5·b + g.
    s = torch.sigmoid(lam)
    g = s * (1 - s) * torch.tensor([0.4, -0.8])
    lam2, b2 = dual_ascent_step(
        lam, torch.tensor([1.4, 0.2]), torch.tensor([1.0, 1.0]), lr=0.1, momentum=0.5,
        velocity=b,
    )  # fmt: skip
    assert torch.allclose(b2, 0.5 * b + g)
    assert torch.allclose(lam2, lam - 0.1 * (0.5 * b + g))
    # "eq": λ = 0 -> μ = 0, μ' = 1: g = v − θ; the multiplier goes negative above threshold.
    lam, _ = dual_ascent_step(
        torch.zeros(1), torch.tensor([1.5]), torch.tensor([1.0]), lr=0.2, kind="eq"
    )
    assert torch.allclose(lam, torch.tensor([-0.1]))
    assert multipliers(lam, "eq").item() == pytest.approx(math.tanh(-0.1))
    assert multipliers(torch.tensor([-50.0]), "ge").item() >= 0.0


def test_xi_ppo_mix_and_multiplier_step_hand_computed():
    # ξ-PPO (kind "eq"), K = 2, λ = (atanh 0.5, atanh −0.5) -> ξ = (0.5, −0.5), Σ ξ = 0:
    # the KL weight is K − Σ ξ = 2. Items: r_0 = (−1, 0), r_1 = (2, 4), r_2 = (6, 2):
    #   item 0: 2·(−1) + 0.5·2 − 0.5·6 = −2 + 1 − 3 = −4
    #   item 1: 2·0 + 0.5·4 − 0.5·2 = 2 − 1 = 1
    # The component with a negative multiplier (r_2, above its threshold) is penalized.
    lam = torch.tensor([math.atanh(0.5), math.atanh(-0.5)], dtype=torch.float64)
    xi = multipliers(lam, "eq")
    assert torch.allclose(xi, torch.tensor([0.5, -0.5], dtype=torch.float64))
    r0 = torch.tensor([-1.0, 0.0], dtype=torch.float64)
    rk = torch.tensor([[2.0, 4.0], [6.0, 2.0]], dtype=torch.float64)
    assert torch.allclose(lagrangian_reward(r0, rk, xi), torch.tensor([-4.0, 1.0]).double())
    # Dual step: tanh' = 1 − ξ² = 0.75 for both. v − θ = (3 − 4, 4 − 2) = (−1, +2):
    #   g = (−0.75, +1.5); momentum 0.1 on b = (0.2, 0.2): b = (0.02 − 0.75, 0.02 + 1.5)
    #   = (−0.73, 1.52); lr 0.1: λ ← λ − (−0.073, 0.152). Below θ the multiplier rises, above
    #   it falls further below 0.
    v, theta = torch.tensor([3.0, 4.0]).double(), torch.tensor([4.0, 2.0]).double()
    lam2, b = dual_ascent_step(
        lam, v, theta, lr=0.1, kind="eq", momentum=0.1, velocity=torch.full((2,), 0.2).double()
    )
    assert torch.allclose(b, torch.tensor([-0.73, 1.52]).double())
    assert torch.allclose(lam2 - lam, torch.tensor([0.073, -0.152]).double())
    # The μ-PPO step from the same λ moves the same way but its multipliers stay in (0, 1).
    lam_ge, _ = dual_ascent_step(lam, v, theta, lr=0.1, kind="ge")
    assert ((multipliers(lam_ge, "ge") > 0) & (multipliers(lam_ge, "ge") < 1)).all()


def test_an_unknown_constraint_kind_is_refused_naming_it():
    with pytest.raises(ValueError, match="kind: expected 'ge' or 'eq', got 'xi'"):
        multipliers(torch.zeros(1), "xi")  # type: ignore[arg-type]


def test_dual_ascent_drives_a_linear_response_to_its_threshold():
    # A "policy" whose component value follows its weight: v = 2 μ. With θ = 1 the fixed
    # point of the equality form is μ = 0.5; dual ascent converges there.
    lam = torch.zeros(1)
    for _ in range(400):
        v = 2 * multipliers(lam, "eq")
        lam, _ = dual_ascent_step(lam, v, torch.tensor([1.0]), lr=0.5, kind="eq")
    assert 2 * multipliers(lam, "eq").item() == pytest.approx(1.0, abs=1e-3)


def test_proxy_point_of_a_synthetic_hump():
    # gold = −(x − 0.3)² over x uniform on [0, 1]: the peak is at x = 0.3. With 1,000 points
    # in 20 bins of 50, the bins' centers are 0.025, 0.075, ...: the peak bin's center is one
    # of the two beside 0.3 (0.275 or 0.325).
    x = torch.linspace(0, 1, 1000)
    pp = proxy_point(x, -((x - 0.3) ** 2), bins=20)
    assert pp.threshold == pytest.approx(0.3, abs=0.03)
    assert sum(pp.counts) == 1000 and len(pp.centers) == 20
    assert pp.mean_gold[pp.peak_bin] == max(pp.mean_gold)
    # Unsorted input gives the same point.
    perm = torch.randperm(1000, generator=torch.Generator().manual_seed(1))
    assert proxy_point(x[perm], (-((x - 0.3) ** 2))[perm], bins=20).threshold == pp.threshold


def test_proxy_point_hand_computed_and_monotone():
    # 5 points in 2 bins: sizes (3, 2); centers mean(1,2,3) = 2 and mean(4,5) = 4.5;
    # gold (0, 3, 0 | 1, 1): bin means 1 and 1 -> the first maximum wins: θ = 2.
    pp = proxy_point(torch.tensor([5.0, 1, 4, 2, 3]), torch.tensor([1.0, 0, 1, 3, 0]), bins=2)
    assert pp.counts == [3, 2] and pp.centers == [2.0, 4.5] and pp.threshold == 2.0
    # Monotone gold: the last bin.
    x = torch.arange(10.0)
    assert proxy_point(x, x, bins=5).peak_bin == 4
    with pytest.raises(ValueError, match="bins"):
        proxy_point(x, x, bins=11)
