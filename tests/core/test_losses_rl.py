"""PPO, value, GRPO and RLOO losses: hand-computed cases, identities, padding, errors."""

from __future__ import annotations

import math

import pytest
import torch

from goodhartlab.core.advantages import group_normalized_advantages
from goodhartlab.core.losses import (
    grpo_loss,
    ppo_policy_loss,
    rloo_loss,
    sft_nll_loss,
    value_loss,
)


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def _random_batch(seed: int, B: int = 4, T: int = 6):
    gen = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(B, T, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    logp_old = logp.detach() + 0.3 * torch.randn(B, T, generator=gen, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    mask = torch.arange(T)[None] < lengths[:, None]
    return gen, logp, logp_old, mask


# --------------------------------------------------------------------------------- PPO


def test_ppo_policy_loss_hand_computed():
    # ε = 0.2; token ratios [1.5, 0.5, 1.0, (pad)], advantages [1, 1, −2, (5)].
    # tok 0: pg_loss1 = −1.5, pg_loss2 = −1.2 → max −1.2 (clipped: ratio > 1.2, A > 0)
    # tok 1: pg_loss1 = −0.5, pg_loss2 = −0.8 → max −0.5 (not clipped: A > 0 and ratio < 1)
    # tok 2: ratio 1 → 2
    # L = (−1.2 − 0.5 + 2) / 3 = 0.1; clipfrac = 1/3.
    # ∂L/∂logp = −A·ratio/3 on unclipped tokens: [0, −0.5/3, 2/3, 0].
    logp_old = t(-1.0, -1.0, -1.0, -1.0)[None]
    logp = (logp_old + torch.log(t(1.5, 0.5, 1.0, 7.0))).requires_grad_()
    adv = t(1.0, 1.0, -2.0, 5.0)[None]
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, stats = ppo_policy_loss(logp, logp_old, adv, mask, clip_coef=0.2)
    assert loss.item() == pytest.approx(0.1, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(logp.grad, t(0.0, -0.5 / 3, 2 / 3, 0.0)[None], rtol=0, atol=1e-12)
    assert stats["clipfrac"].item() == pytest.approx(1 / 3)
    assert stats["ratio_mean"].item() == pytest.approx(1.0)
    # approx_kl: mean of (r − 1) − log r over the 3 tokens.
    k3 = (0.5 - math.log(1.5)) + (-0.5 - math.log(0.5)) + 0.0
    assert stats["approx_kl"].item() == pytest.approx(k3 / 3, abs=1e-12)
    assert all(not v.requires_grad for v in stats.values())


def test_ppo_at_ratio_one_is_token_reinforce():
    # ratio = 1: ∂L/∂logp_t = −A_t · mask_t / Σ mask.
    gen, logp, _, mask = _random_batch(0)
    adv = torch.randn(logp.shape, generator=gen, dtype=torch.float64)
    loss, stats = ppo_policy_loss(logp, logp.detach(), adv, mask)
    loss.backward()
    torch.testing.assert_close(logp.grad, -adv * mask / mask.sum(), rtol=0, atol=1e-12)
    assert stats["clipfrac"].item() == 0.0 and stats["approx_kl"].item() == 0.0


def test_ppo_sequence_advantages_broadcast():
    gen, logp, logp_old, mask = _random_batch(1)
    adv = torch.randn(4, generator=gen, dtype=torch.float64)
    a, _ = ppo_policy_loss(logp, logp_old, adv, mask)
    b, _ = ppo_policy_loss(logp, logp_old, adv[:, None].expand(-1, 6), mask)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_ppo_padding_does_not_leak():
    # −inf / NaN on padding changes neither the loss nor the (finite) gradient.
    _, logp, logp_old, mask = _random_batch(2)
    adv = torch.ones(4, dtype=torch.float64)
    clean, _ = ppo_policy_loss(logp, logp_old, adv, mask)
    (grad_clean,) = torch.autograd.grad(clean, logp)
    dirty_logp = torch.where(mask, logp, torch.tensor(-math.inf, dtype=torch.float64))
    dirty_old = logp_old.masked_fill(~mask, math.nan)
    dirty, _ = ppo_policy_loss(dirty_logp, dirty_old, adv, mask)
    (grad_dirty,) = torch.autograd.grad(dirty, logp)
    torch.testing.assert_close(dirty, clean, rtol=0, atol=0)
    torch.testing.assert_close(grad_dirty, grad_clean, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"logp": torch.zeros(6)}, r"logp must have shape \(B, T\)"),
        ({"logp_old": torch.zeros(2, 4)}, "logp_old must have shape"),
        ({"advantages": torch.zeros(3)}, "advantages must have shape"),
        ({"advantages": torch.zeros(2, 4)}, "advantages must have shape"),
        ({"mask": torch.ones(2)}, "mask must have shape"),
        ({"clip_coef": 0.0}, "clip_coef"),
        ({"logp": torch.tensor([[math.nan, 0, 0], [0, 0, 0]])}, "logp must be finite"),
    ],
)
def test_ppo_bad_input(kwargs, match):
    args = {
        "logp": torch.zeros(2, 3),
        "logp_old": torch.zeros(2, 3),
        "advantages": torch.zeros(2),
        "mask": torch.ones(2, 3),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ppo_policy_loss(**args)


# ------------------------------------------------------------------------------- value


def test_value_loss_hand_computed():
    # V = [1, 2], R = [2, 4]; unclipped: ½ · mean((1 − 2)², (2 − 4)²) = ½ · (1 + 4)/2 = 1.25.
    # Clipped, V_old = [0.5, 1.9], ε_v = 0.2: V − V_old = [0.5, 0.1] → clip [0.2, 0.1],
    # V_clip = [0.7, 2.0], (V_clip − R)² = [1.69, 4]; max with [1, 4] = [1.69, 4]
    # → L = ½ · (1.69 + 4)/2 = 1.4225; vf_clipfrac = 1/2 (tie at token 1 is not clipped).
    # ∂L/∂V: token 0 takes the clipped branch, saturated → 0; token 1: (V − R)/2 = −1.
    values = t(1.0, 2.0)[None].requires_grad_()
    values_old, returns, mask = t(0.5, 1.9)[None], t(2.0, 4.0)[None], torch.ones(1, 2)
    plain, stats = value_loss(values, values_old, returns, mask)
    assert plain.item() == pytest.approx(1.25, abs=1e-12)
    assert stats["vf_clipfrac"].item() == 0.0
    assert stats["value_error"].item() == pytest.approx(2.5)
    clipped, stats = value_loss(values, values_old, returns, mask, clip_coef=0.2)
    assert clipped.item() == pytest.approx(1.4225, abs=1e-12)
    assert stats["vf_clipfrac"].item() == 0.5
    clipped.backward()
    torch.testing.assert_close(values.grad, t(0.0, -1.0)[None], rtol=0, atol=1e-12)


def test_value_loss_wide_clip_equals_unclipped_and_ignores_padding():
    gen = torch.Generator().manual_seed(3)
    v, v_old, ret = torch.randn(3, 3, 5, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    a, _ = value_loss(v, v_old, ret, mask)
    b, _ = value_loss(v, v_old, ret.masked_fill(mask == 0, math.nan), mask, clip_coef=1e6)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_value_loss_bad_input():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="returns must have shape"):
        value_loss(z, z, torch.zeros(2, 2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="clip_coef"):
        value_loss(z, z, z, torch.ones(2, 3), clip_coef=0.0)
    with pytest.raises(ValueError, match=r"values must have shape \(B, T\)"):
        value_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.ones(3))


# -------------------------------------------------------------------------------- GRPO


def _grpo_hand_batch():
    # Row 0: tokens 0, 1 valid, ratios [1.5, 1.0]; row 1: token 0 valid, ratio 0.5.
    logp_old = torch.full((2, 3), -1.0, dtype=torch.float64)
    logp = (logp_old + torch.log(t(1.5, 1.0, 3.0, 0.5, 3.0, 3.0)).view(2, 3)).requires_grad_()
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    return logp, logp_old, t(1.0, -1.0), mask


@pytest.mark.parametrize(
    ("loss_type", "num_tokens", "expected"),
    [
        # per-token ℓ: row 0 [−1.2 (clipped), −1.0], row 1 [0.8 (A < 0, ratio < 0.8: clipped)]
        ("grpo", None, ((-1.2 - 1.0) / 2 + 0.8) / 2),  # per-sequence means, then mean = −0.15
        ("bnpo", None, (-1.2 - 1.0 + 0.8) / 3),  # token mean over the batch
        ("dapo", None, (-1.2 - 1.0 + 0.8) / 3),  # = bnpo on a single batch
        ("dapo", 6, (-1.2 - 1.0 + 0.8) / 6),  # normalized by the generation batch's tokens
    ],
)
def test_grpo_loss_hand_computed(loss_type, num_tokens, expected):
    logp, logp_old, adv, mask = _grpo_hand_batch()
    loss, stats = grpo_loss(
        logp, logp_old, None, adv, mask, loss_type=loss_type, num_tokens=num_tokens
    )
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert stats["pg_loss"].item() == pytest.approx(expected, abs=1e-12)
    assert stats["clipfrac"].item() == pytest.approx(2 / 3)
    assert "kl" not in stats


def test_grpo_k3_kl_term_hand_computed():
    # log π_ref − log π = log 2 at row 0 token 0, 0 elsewhere: k3 = 2 − 1 − log 2 = 1 − log 2.
    # "grpo": row 0's mean gains β·k3/2, the batch mean β·k3/4.
    logp, logp_old, adv, mask = _grpo_hand_batch()
    logp_ref = logp.detach().clone()
    logp_ref[0, 0] += math.log(2.0)
    k3 = 1.0 - math.log(2.0)
    loss, stats = grpo_loss(logp, logp_old, logp_ref, adv, mask, kl_coef=0.1)
    assert loss.item() == pytest.approx(-0.15 + 0.1 * k3 / 4, abs=1e-12)
    assert stats["pg_loss"].item() == pytest.approx(-0.15, abs=1e-12)
    assert stats["kl"].item() == pytest.approx(k3 / 3, abs=1e-12)


def test_grpo_kl_coefficient_zero_leaves_loss_unchanged():
    _, logp, logp_old, mask = _random_batch(4)
    adv = torch.randn(4, dtype=torch.float64)
    logp_ref = logp.detach() - 0.5
    a, _ = grpo_loss(logp, logp_old, None, adv, mask)
    b, sb = grpo_loss(logp, logp_old, logp_ref, adv, mask, kl_coef=0.0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert "kl" in sb and sb["kl"].item() > 0


def test_grpo_clip_coef_high_decouples_upper_clip():
    # ratio 1.25, A = 1: symmetric ε = 0.2 clips to 1.2; ε_high = 0.28 does not clip.
    logp_old = torch.zeros(1, 1, dtype=torch.float64)
    logp = torch.log(t(1.25))[None]
    sym, _ = grpo_loss(logp, logp_old, None, t(1.0), torch.ones(1, 1))
    high, _ = grpo_loss(logp, logp_old, None, t(1.0), torch.ones(1, 1), clip_coef_high=0.28)
    assert sym.item() == pytest.approx(-1.2) and high.item() == pytest.approx(-1.25)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo"])
def test_grpo_one_group_no_std_is_mean_baseline_reinforce(loss_type):
    # One prompt, G = B completions, std scaling off, ratio 1 (one on-policy step): the GRPO
    # gradient is mean-baseline REINFORCE, −Σ_i (r_i − r̄) ∇ Σ_t log π(y_i,t) · w_i, with
    # w_i = 1/(B |y_i|) for "grpo" and 1/Σ|y| for "bnpo".
    gen, logp, _, mask = _random_batch(5)
    r = torch.randn(4, generator=gen, dtype=torch.float64)
    adv = group_normalized_advantages(r, 4, scale_by_std=False)
    loss, _ = grpo_loss(logp, logp.detach(), None, adv, mask, loss_type=loss_type)
    (grad,) = torch.autograd.grad(loss, logp)

    lengths = mask.sum(1, keepdim=True).double()
    weight = 1.0 / (4 * lengths) if loss_type == "grpo" else 1.0 / lengths.sum()
    reinforce = -((r - r.mean())[:, None] * logp * mask * weight).sum()
    (expected,) = torch.autograd.grad(reinforce, logp)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)


def test_grpo_bnpo_equals_ppo_with_sequence_advantages():
    # Same clipped surrogate, same token mean over the batch.
    gen, logp, logp_old, mask = _random_batch(6)
    adv = torch.randn(4, generator=gen, dtype=torch.float64)
    a, sa = grpo_loss(logp, logp_old, None, adv, mask, loss_type="bnpo")
    b, sb = ppo_policy_loss(logp, logp_old, adv, mask)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-15)
    for key in ("clipfrac", "approx_kl", "ratio_mean"):
        torch.testing.assert_close(sa[key], sb[key])


def test_grpo_empty_completion_contributes_zero():
    # A row with no valid token adds 0 to "grpo"'s mean of per-sequence means (not NaN).
    logp, logp_old, adv, mask = _grpo_hand_batch()
    mask = mask.clone()
    mask[1] = 0
    loss, _ = grpo_loss(logp, logp_old, None, adv, mask)
    assert loss.item() == pytest.approx((-1.2 - 1.0) / 2 / 2, abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kl_coef": 0.1}, "logp_ref is required"),
        ({"kl_coef": -0.1}, "kl_coef must be >= 0"),
        ({"loss_type": "dr_grpo"}, "loss_type must be one of"),
        ({"advantages": torch.zeros(2, 3)}, r"advantages must have shape \(B,\)"),
        ({"num_tokens": 10}, "num_tokens applies to loss_type 'dapo' only"),
        ({"num_tokens": 0, "loss_type": "dapo"}, "num_tokens must be > 0"),
        ({"clip_coef_high": 0.0}, "clip_coef_high"),
        ({"logp_ref": torch.zeros(2, 2)}, "logp_ref must have shape"),
        ({"advantages": torch.tensor([0.0, math.inf])}, "advantages must be finite"),
    ],
)
def test_grpo_bad_input(kwargs, match):
    args = {
        "logp": torch.zeros(2, 3),
        "logp_old": torch.zeros(2, 3),
        "logp_ref": None,
        "advantages": torch.zeros(2),
        "mask": torch.ones(2, 3),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        grpo_loss(**args)


# -------------------------------------------------------------------------------- RLOO


def test_rloo_loss_hand_computed():
    # Sequence ratios: row 0 exp(log 1.5 + log 1.0) = 1.5, row 1 (1 token) 0.9; A = [2, −1].
    # row 0: max(−2·1.5, −2·1.2) = −2.4 (clipped); row 1: max(0.9, 0.9) = 0.9.
    # L = (−2.4 + 0.9) / 2 = −0.75; clipfrac = 1/2.
    # ∂L/∂logp: row 0 clipped → 0; row 1: −A·ratio/B = 0.9/2 on its valid token.
    logp_old = torch.full((2, 2), -1.0, dtype=torch.float64)
    logp = (logp_old + torch.log(t(1.5, 1.0, 0.9, 5.0)).view(2, 2)).requires_grad_()
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, stats = rloo_loss(logp, logp_old, t(2.0, -1.0), mask)
    assert loss.item() == pytest.approx(-0.75, abs=1e-12)
    assert stats["clipfrac"].item() == 0.5
    assert stats["ratio_mean"].item() == pytest.approx(1.2)
    loss.backward()
    torch.testing.assert_close(logp.grad, t(0.0, 0.0, 0.45, 0.0).view(2, 2), rtol=0, atol=1e-12)


def test_rloo_clips_the_sequence_ratio_not_tokens():
    # Token ratios 1.1 and 1.1 are each inside [0.8, 1.2]; the sequence ratio 1.21 is not.
    logp_old = torch.zeros(1, 2, dtype=torch.float64)
    logp = torch.log(t(1.1, 1.1))[None]
    loss, stats = rloo_loss(logp, logp_old, t(1.0), torch.ones(1, 2))
    assert loss.item() == pytest.approx(-1.2, abs=1e-12)
    assert stats["clipfrac"].item() == 1.0


def test_rloo_at_ratio_one_is_reinforce():
    # ratio 1: ∇L = −1/B Σ_i A_i ∇ Σ_t log π(y_i,t) (Ahmadian et al. 2024, eq. 6).
    gen, logp, _, mask = _random_batch(7)
    adv = torch.randn(4, generator=gen, dtype=torch.float64)
    loss, _ = rloo_loss(logp, logp.detach(), adv, mask)
    loss.backward()
    torch.testing.assert_close(logp.grad, -adv[:, None] * mask / 4, rtol=0, atol=1e-12)


def test_rloo_padding_does_not_leak():
    _, logp, logp_old, mask = _random_batch(8)
    adv = torch.ones(4, dtype=torch.float64)
    clean, _ = rloo_loss(logp, logp_old, adv, mask)
    dirty, _ = rloo_loss(logp, logp_old.masked_fill(~mask, math.nan), adv, mask)
    torch.testing.assert_close(dirty, clean, rtol=0, atol=0)


def test_rloo_bad_input():
    with pytest.raises(ValueError, match=r"advantages must have shape \(B,\)"):
        rloo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="logp_old must be finite"):
        rloo_loss(
            torch.zeros(1, 2), torch.tensor([[0.0, math.nan]]), torch.zeros(1), torch.ones(1, 2)
        )


def test_sft_nll_loss_hand_computed():
    # Row 0: two target tokens, log-probs −1 and −3: NLL 2. Row 1: one token, −0.5 (the
    # second position is padding and ignored): NLL 0.5. Mean over rows: 1.25.
    logp = torch.tensor([[-1.0, -3.0], [-0.5, -7.0]], requires_grad=True)
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, stats = sft_nll_loss(logp, mask)
    assert loss.item() == pytest.approx(1.25) and stats["sft_nll"].item() == pytest.approx(1.25)
    loss.backward()
    # ∂L/∂logp = −1 / (B · |y_i|) on target tokens, 0 on padding.
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.25, -0.25], [-0.5, 0.0]]))
    with pytest.raises(ValueError, match="at least one token"):
        sft_nll_loss(logp.detach(), torch.tensor([[1, 1], [0, 0]]))
