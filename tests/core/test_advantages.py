"""Advantage estimators and KL control: hand-computed cases, a naive GAE, identities, errors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from goodhartlab.core.advantages import (
    AdaptiveKLController,
    gae,
    group_normalized_advantages,
    kl_penalized_rewards,
    leave_one_out_advantages,
    ppo_token_rewards,
    whiten,
)


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


# ------------------------------------------------------------------------------------- gae


def test_gae_hand_computed():
    # γ = 0.9, λ = 0.8, γλ = 0.72; the sequence ends after t = 2 (V_3 = 0, A_3 = 0).
    # δ_2 = 1 + 0.9·0   − 0.4 =  0.6
    # δ_1 = 0 + 0.9·0.4 − 0.2 =  0.16
    # δ_0 = 0 + 0.9·0.2 − 0.5 = −0.32
    # A_2 = 0.6; A_1 = 0.16 + 0.72·0.6 = 0.592; A_0 = −0.32 + 0.72·0.592 = 0.10624
    # R = A + V = [0.60624, 0.792, 1.0]
    rewards = t(0.0, 0.0, 1.0)[None]
    values = t(0.5, 0.2, 0.4)[None]
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, t(0.10624, 0.592, 0.6)[None], rtol=0, atol=1e-12)
    torch.testing.assert_close(ret, t(0.60624, 0.792, 1.0)[None], rtol=0, atol=1e-12)


def _gae_naive(r: list[float], v: list[float], gamma: float, lam: float) -> list[float]:
    # A_t = Σ_{l ≥ 0} (γλ)^l δ_{t+l}, with V after the end = 0.
    n = len(r)
    v_next = [*v[1:], 0.0]
    deltas = [r[i] + gamma * v_next[i] - v[i] for i in range(n)]
    return [sum((gamma * lam) ** (k - i) * deltas[k] for k in range(i, n)) for i in range(n)]


def test_gae_matches_naive_sum_with_right_padding():
    gen = torch.Generator().manual_seed(0)
    B, T = 5, 7
    rewards = torch.randn(B, T, generator=gen, dtype=torch.float64)
    values = torch.randn(B, T, generator=gen, dtype=torch.float64)
    lengths = [7, 1, 4, 6, 3]
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    # Padding holds garbage that must be ignored.
    rewards = rewards.masked_fill(~mask, math.nan)
    values = values.masked_fill(~mask, math.inf)
    adv, ret = gae(rewards, values, mask, gamma=0.97, lam=0.9)
    for i, n in enumerate(lengths):
        expected = _gae_naive(rewards[i, :n].tolist(), values[i, :n].tolist(), 0.97, 0.9)
        torch.testing.assert_close(adv[i, :n], t(*expected), rtol=0, atol=1e-12)
        torch.testing.assert_close(ret[i, :n], adv[i, :n] + values[i, :n], rtol=0, atol=0)
    assert bool((adv[~mask] == 0).all()) and bool((ret[~mask] == 0).all())


def test_gae_skips_masked_positions_anywhere():
    # The same three tokens, contiguous, left-padded, and with a gap: identical advantages.
    r, v = [0.3, -0.1, 1.0], [0.2, 0.5, -0.4]
    adv, _ = gae(t(*r)[None], t(*v)[None], torch.ones(1, 3), gamma=0.9, lam=0.7)
    left, _ = gae(t(9.0, *r)[None], t(9.0, *v)[None], torch.tensor([[0, 1, 1, 1]]), 0.9, 0.7)
    gap, _ = gae(
        t(r[0], 9.0, r[1], r[2])[None],
        t(v[0], 9.0, v[1], v[2])[None],
        torch.tensor([[1, 0, 1, 1]]),
        0.9,
        0.7,
    )
    torch.testing.assert_close(left[0, 1:], adv[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(gap[0, [0, 2, 3]], adv[0], rtol=0, atol=1e-12)
    assert left[0, 0].item() == 0.0 and gap[0, 1].item() == 0.0


def test_gae_lambda_one_gamma_one_is_returns_minus_values():
    # λ = γ = 1: A_t = Σ_{k ≥ t} r_k − V_t (the Monte-Carlo return minus the baseline), R_t = Σ_{k≥t} r_k.
    gen = torch.Generator().manual_seed(1)
    rewards = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    values = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    mc_return = rewards.flip(1).cumsum(1).flip(1)
    adv, ret = gae(rewards, values, torch.ones(3, 5), gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv, mc_return - values, rtol=0, atol=1e-12)
    torch.testing.assert_close(ret, mc_return, rtol=0, atol=1e-12)


def test_gae_lambda_zero_is_td_error():
    # λ = 0: A_t = δ_t = r_t + γ V_{t+1} − V_t.  Row: r = [1, 2], V = [0.5, 1], γ = 0.5:
    # δ_0 = 1 + 0.5·1 − 0.5 = 1.0; δ_1 = 2 + 0 − 1 = 1.0.
    adv, _ = gae(t(1.0, 2.0)[None], t(0.5, 1.0)[None], torch.ones(1, 2), gamma=0.5, lam=0.0)
    torch.testing.assert_close(adv, t(1.0, 1.0)[None], rtol=0, atol=0)


def test_gae_output_is_detached():
    values = t(0.5, 0.2)[None].requires_grad_()
    adv, ret = gae(t(0.0, 1.0)[None], values, torch.ones(1, 2))
    assert not adv.requires_grad and not ret.requires_grad


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rewards": torch.zeros(3)}, "rewards must have shape"),
        ({"values": torch.zeros(2, 4)}, "values must have the shape"),
        ({"mask": torch.ones(2, 4)}, "mask must have shape"),
        ({"mask": torch.full((2, 3), 2)}, "only 0 and 1"),
        ({"gamma": 1.5}, "gamma"),
        ({"lam": -0.1}, "lam"),
        (
            {"rewards": torch.tensor([[0.0, math.nan, 0.0], [0.0, 0.0, 0.0]])},
            "rewards must be finite",
        ),
    ],
)
def test_gae_bad_input(kwargs, match):
    args = {"rewards": torch.zeros(2, 3), "values": torch.zeros(2, 3), "mask": torch.ones(2, 3)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        gae(**args)


# ---------------------------------------------------------------------- group-normalized (GRPO)


def test_group_normalized_hand_computed():
    # Group [1, 2, 6]: mean 3, centered [−2, −1, 3], sample std sqrt((4 + 1 + 9) / 2) = sqrt(7).
    # Group [5, 5, 5]: centered 0, std 0 → advantage 0 (the ε keeps it finite).
    r = t(1.0, 2.0, 6.0, 5.0, 5.0, 5.0)
    adv = group_normalized_advantages(r, 3)
    expected = t(-2.0, -1.0, 3.0, 0.0, 0.0, 0.0) / t(*[math.sqrt(7) + 1e-4] * 3, 1e-4, 1e-4, 1e-4)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-12)
    no_std = group_normalized_advantages(r, 3, scale_by_std=False)
    torch.testing.assert_close(no_std, t(-2.0, -1.0, 3.0, 0.0, 0.0, 0.0), rtol=0, atol=0)


def test_group_normalized_groups_are_independent():
    # Shifting one prompt's rewards leaves every advantage unchanged.
    gen = torch.Generator().manual_seed(2)
    r = torch.randn(12, generator=gen, dtype=torch.float64)
    shifted = r.clone()
    shifted[4:8] += 100.0
    torch.testing.assert_close(
        group_normalized_advantages(r, 4),
        group_normalized_advantages(shifted, 4),
        rtol=0,
        atol=1e-9,
    )


@pytest.mark.parametrize(
    ("rewards", "group_size", "match"),
    [
        (torch.zeros(4), 1, "group_size must be >= 2"),
        (torch.zeros(5), 2, "not a multiple"),
        (torch.zeros(2, 2), 2, r"shape \(B,\)"),
        (torch.tensor([0.0, math.nan]), 2, "finite"),
        (torch.zeros(4), 2.0, "must be an int"),
    ],
)
def test_group_normalized_bad_input(rewards, group_size, match):
    with pytest.raises(ValueError, match=match):
        group_normalized_advantages(rewards, group_size)


# ------------------------------------------------------------------------- leave-one-out (RLOO)


def test_leave_one_out_hand_computed():
    # [1, 2, 6]: baselines (2 + 6)/2 = 4, (1 + 6)/2 = 3.5, (1 + 2)/2 = 1.5 → [−3, −1.5, 4.5].
    # Group of 2, [0, 1]: [0 − 1, 1 − 0] = [−1, 1].
    torch.testing.assert_close(
        leave_one_out_advantages(t(1.0, 2.0, 6.0), 3), t(-3.0, -1.5, 4.5), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(leave_one_out_advantages(t(0.0, 1.0), 2), t(-1.0, 1.0))


def test_leave_one_out_identities():
    # Σ_group A = 0 and A = G/(G − 1) · (r − mean_group), i.e. G/(G − 1) times the GRPO
    # advantage without std scaling.
    gen = torch.Generator().manual_seed(3)
    G = 5
    r = torch.randn(4 * G, generator=gen, dtype=torch.float64)
    adv = leave_one_out_advantages(r, G)
    torch.testing.assert_close(adv.view(-1, G).sum(1), torch.zeros(4, dtype=torch.float64))
    expected = G / (G - 1) * group_normalized_advantages(r, G, scale_by_std=False)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-12)


def test_leave_one_out_bad_input():
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        leave_one_out_advantages(torch.zeros(3), 1)
    with pytest.raises(ValueError, match="not a multiple"):
        leave_one_out_advantages(torch.zeros(3), 2)


# ------------------------------------------------------------------------------ KL penalty


def test_kl_penalized_rewards_hand_computed():
    # [1, 2] − 0.1 · [0.5, −1] = [0.95, 2.1] (a k1 estimate can be negative).
    out = kl_penalized_rewards(t(1.0, 2.0), t(0.5, -1.0), 0.1)
    torch.testing.assert_close(out, t(0.95, 2.1), rtol=0, atol=1e-15)


def test_kl_coefficient_zero_leaves_reward_unchanged():
    r = t(1.0, -2.0, 3.5)
    assert torch.equal(kl_penalized_rewards(r, t(10.0, 0.1, -4.0), 0.0), r)


def test_kl_penalized_rewards_bad_input():
    with pytest.raises(ValueError, match="coef must be >= 0"):
        kl_penalized_rewards(t(1.0), t(0.0), -0.1)
    with pytest.raises(ValueError, match="kl must have the shape"):
        kl_penalized_rewards(t(1.0, 2.0), t(0.0), 0.1)
    with pytest.raises(ValueError, match="kl must be finite"):
        kl_penalized_rewards(t(1.0), t(math.nan), 0.1)


def test_adaptive_kl_controller_hand_computed():
    # target 6, horizon 10_000, β = 0.1.
    # KL = 9: e = 9/6 − 1 = 0.5 → clipped to 0.2; n = 256: β ← 0.1 · (1 + 0.2 · 256/10⁴) = 0.100512.
    # KL = 5.4: e = −0.1; n = 1000: β ← 0.100512 · (1 − 0.01) = 0.09950688.
    # KL = 6: e = 0, β unchanged.
    ctl = AdaptiveKLController(coef=0.1, target=6.0, horizon=10_000)
    assert ctl.update(9.0, 256) == pytest.approx(0.100512, abs=1e-15)
    assert ctl.update(5.4, 1000) == pytest.approx(0.09950688, abs=1e-15)
    assert ctl.update(6.0, 1000) == pytest.approx(0.09950688, abs=1e-15)
    assert ctl.coef == pytest.approx(0.09950688, abs=1e-15)


def test_adaptive_kl_controller_state_round_trips():
    ctl = AdaptiveKLController(coef=0.2, target=3.0, horizon=100)
    ctl.update(1.0, 10)
    restored = AdaptiveKLController(**dataclasses.asdict(ctl))
    assert restored == ctl
    assert restored.update(4.0, 5) == ctl.update(4.0, 5)


@pytest.mark.parametrize("kwargs", [{"coef": 0.0}, {"target": 0.0}, {"horizon": 0}, {"coef": -1.0}])
def test_adaptive_kl_controller_bad_config(kwargs):
    args = {"coef": 0.1, "target": 6.0, "horizon": 100}
    args.update(kwargs)
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        AdaptiveKLController(**args)


def test_adaptive_kl_controller_bad_update():
    ctl = AdaptiveKLController(coef=0.1, target=6.0, horizon=100)
    with pytest.raises(ValueError, match="kl must be finite"):
        ctl.update(math.nan, 1)
    with pytest.raises(ValueError, match="n_steps"):
        ctl.update(1.0, 101)
    assert ctl.coef == 0.1


# ------------------------------------------------------------------ ppo_token_rewards


def test_ppo_token_rewards_hand_computed():
    # β = 0.5. Row 0 has 3 completion tokens, row 1 has 2; positions off the mask get 0
    # whatever their KL.
    # row 0: −0.5·[0.1, 0.2, −0.1] = [−0.05, −0.1, 0.05], + r = 1 on the last (t = 2)
    # row 1: −0.5·[0.3, 0.4]       = [−0.15, −0.2],       + r = 2 on the last (t = 1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    kl = torch.tensor([[0.1, 0.2, -0.1, 5.0], [0.3, 0.4, 9.0, 9.0]], dtype=torch.float64)
    out = ppo_token_rewards(t(1.0, 2.0), kl, mask, 0.5)
    want = torch.tensor([[-0.05, -0.1, 1.05, 0.0], [-0.15, 1.8, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out, want)
    # Σ_t r_t = r − β Σ_t m_t kl_t: 1 − 0.5·0.2 = 0.9 and 2 − 0.5·0.7 = 1.65.
    torch.testing.assert_close(out.sum(dim=1), t(0.9, 1.65))


def test_ppo_token_rewards_without_penalty_is_the_reward_on_the_last_token():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    kl = torch.full((2, 3), 7.0, dtype=torch.float64)
    want = torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, -1.0]], dtype=torch.float64)
    for kl_token, coef in ((None, 0.5), (kl, 0.0)):
        torch.testing.assert_close(ppo_token_rewards(t(3.0, -1.0), kl_token, mask, coef), want)


def test_ppo_token_rewards_bad_input():
    with pytest.raises(ValueError, match="at least one completion token"):
        ppo_token_rewards(t(1.0), None, torch.tensor([[0, 0]]), 0.1)
    with pytest.raises(ValueError, match="one reward per row"):
        ppo_token_rewards(t(1.0, 2.0), None, torch.tensor([[1, 0]]), 0.1)


# ----------------------------------------------------------------------------- whiten


def test_whiten_hand_computed():
    # Valid x = [1, 2, 3]: μ = 2, σ² = (1 + 0 + 1) / 3 = 2/3 (the 100 is masked out).
    x = t(1.0, 2.0, 3.0, 100.0)[None]
    mask = torch.tensor([[1, 1, 1, 0]])
    s = math.sqrt(2 / 3 + 1e-8)
    torch.testing.assert_close(whiten(x, mask), t(-1 / s, 0.0, 1 / s, 0.0)[None])


def test_whiten_gives_mean_zero_and_unit_variance_on_the_mask():
    gen = torch.Generator().manual_seed(0)
    x = 3.0 + 2.0 * torch.randn(4, 6, generator=gen, dtype=torch.float64)
    mask = (torch.rand(4, 6, generator=gen) < 0.7).long()
    w = whiten(x, mask)
    valid = w[mask.bool()]
    assert abs(float(valid.mean())) < 1e-12
    assert float(valid.var(unbiased=False)) == pytest.approx(1.0, abs=1e-6)
    assert bool((w[~mask.bool()] == 0).all())
