"""Advantage estimators and KL control for RL against a proxy reward: pure functions.

- ``gae``: generalized advantage estimation with a value function (PPO).
- ``group_normalized_advantages``: GRPO's per-prompt normalized reward.
- ``leave_one_out_advantages``: RLOO's leave-one-out baseline.
- ``kl_penalized_rewards`` and ``AdaptiveKLController``: a sequence-level KL penalty in the
  reward, with a fixed or an adaptive coefficient.

Group layout: the N = ``group_size`` completions of one prompt are contiguous rows, so a
batch of B rows holds B / N prompts (row i belongs to prompt i // N), as in TRL's GRPO and
RLOO trainers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "AdaptiveKLController",
    "gae",
    "group_normalized_advantages",
    "kl_penalized_rewards",
    "leave_one_out_advantages",
    "ppo_token_rewards",
    "whiten",
]


def _as_mask(mask: Tensor, shape: torch.Size, name: str = "mask") -> Tensor:
    mask = torch.as_tensor(mask)
    if mask.shape != shape:
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"{name} must hold only 0 and 1 (or bool)")
        mask = mask.bool()
    return mask


def _check_finite(x: Tensor, name: str, where: Tensor | None = None) -> None:
    bad = ~torch.isfinite(x)
    if where is not None:
        bad = bad & where
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{name} must be finite; got {x[idx].item()} at index {idx}")


def _as_rewards(r: Tensor, name: str) -> Tensor:
    r = torch.as_tensor(r)
    if r.ndim != 1:
        raise ValueError(f"{name} must have shape (B,); got {tuple(r.shape)}")
    if not r.is_floating_point():
        r = r.to(torch.get_default_dtype())
    _check_finite(r, name)
    return r


def _grouped(rewards: Tensor, group_size: int, what: str) -> Tensor:
    if isinstance(group_size, bool) or not isinstance(group_size, int):
        raise ValueError(f"group_size must be an int; got {group_size!r}")
    if group_size < 2:
        raise ValueError(
            f"group_size must be >= 2 for {what}; got {group_size} (with one completion per "
            "prompt the group baseline equals the reward and every advantage is 0)"
        )
    if rewards.shape[0] % group_size != 0:
        raise ValueError(
            f"rewards has B = {rewards.shape[0]} rows, not a multiple of group_size = "
            f"{group_size}; the completions of each prompt must be contiguous rows"
        )
    return rewards.view(-1, group_size)


def gae(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation over the completion tokens of each sequence.

        δ_t = r_t + γ V_{t+1} − V_t
        A_t = δ_t + γ λ A_{t+1}        (= Σ_{l≥0} (γλ)^l δ_{t+l})
        R_t = A_t + V_t                (the λ-return, the value target)

    Schulman, Moritz, Levine, Jordan, Abbeel 2016, "High-dimensional continuous control
    using generalized advantage estimation", arXiv 1506.02438, eq. 16.

    The sequence terminates after its last valid token: there V_{t+1} = 0 and A_{t+1} = 0
    (no bootstrap; a completion ends with its EOS or the length cap, and the reward is all
    it gets). Positions where ``mask`` is 0 are skipped: they neither receive nor pass on
    credit, and "t + 1" means the next valid position, so left or right padding (or a gap
    such as a tool's output) does not change the result. Their advantage and return are 0,
    and ``rewards``/``values`` there are ignored even if they hold NaN.

    Args:
        rewards: per-token reward r_t (e.g. −β·kl_t on every token plus the sequence reward
            on the last one). Shape: (B, T)
        values: value estimates V_t of the state before token t. Shape: (B, T)
        mask: 1 (or True) on completion tokens, 0 on padding. Shape: (B, T)
        gamma: discount γ in [0, 1] (1 for language: the episode is one completion).
        lam: GAE λ in [0, 1] (0.95 as in TRL's former PPOConfig); λ = 1 gives Monte-Carlo
            returns minus values, λ = 0 the one-step TD error.

    Returns:
        ``(advantages, returns)``, both detached, 0 where ``mask`` is 0. Shape: (B, T) each.
    """
    rewards = torch.as_tensor(rewards)
    values = torch.as_tensor(values)
    if rewards.ndim != 2:
        raise ValueError(f"rewards must have shape (B, T); got {tuple(rewards.shape)}")
    if values.shape != rewards.shape:
        raise ValueError(
            f"values must have the shape of rewards {tuple(rewards.shape)}; "
            f"got {tuple(values.shape)}"
        )
    mask = _as_mask(mask, rewards.shape)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1]; got {gamma}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1]; got {lam}")
    _check_finite(rewards, "rewards", mask)
    _check_finite(values, "values", mask)

    dtype = torch.promote_types(rewards.dtype, values.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    zero = torch.zeros((), dtype=dtype, device=rewards.device)
    r = torch.where(mask, rewards.detach().to(dtype), zero)
    v = torch.where(mask, values.detach().to(dtype), zero)

    advantages = torch.zeros_like(r)
    next_value = torch.zeros(r.shape[0], dtype=dtype, device=r.device)
    next_adv = torch.zeros_like(next_value)
    for t in reversed(range(r.shape[1])):
        valid = mask[:, t]
        delta = r[:, t] + gamma * next_value - v[:, t]
        adv_t = delta + gamma * lam * next_adv
        advantages[:, t] = torch.where(valid, adv_t, zero)
        # A masked position is transparent: the carry skips over it unchanged.
        next_value = torch.where(valid, v[:, t], next_value)
        next_adv = torch.where(valid, adv_t, next_adv)
    returns = torch.where(mask, advantages + v, zero)
    return advantages, returns


def group_normalized_advantages(
    rewards: Tensor,
    group_size: int,
    scale_by_std: bool = True,
    eps: float = 1e-4,
) -> Tensor:
    """GRPO advantage: each reward normalized within the group of its prompt.

        Â_i = (r_i − mean_g(r)) / (std_g(r) + ε)     (scale_by_std)
        Â_i =  r_i − mean_g(r)                       (not scale_by_std)

    Shao et al. 2024, "DeepSeekMath: pushing the limits of mathematical reasoning in open
    language models", arXiv 2402.03300, §4.1.2 (outcome supervision). The paper writes
    (r − mean)/std; as in TRL 1.16's GRPOTrainer (``scale_rewards="group"``), std is the
    sample standard deviation (Bessel-corrected, divisor G − 1) and ε = 1e-4 keeps a group
    whose G rewards are all equal at advantage 0. ``scale_by_std=False`` is the Dr. GRPO
    variant (Liu et al. 2025, arXiv 2503.20783; TRL ``scale_rewards="none"``).

    Args:
        rewards: one scalar reward per completion, the G completions of a prompt in
            contiguous rows. Shape: (B,), B a multiple of G.
        group_size: G ≥ 2, completions per prompt.
        scale_by_std: divide by the group's std (+ ε).
        eps: ε > 0 (only used with ``scale_by_std``).

    Returns:
        The advantage of each completion. Shape: (B,)
    """
    rewards = _as_rewards(rewards, "rewards")
    grouped = _grouped(rewards, group_size, "group-normalized advantages")
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_by_std:
        if not eps > 0.0:
            raise ValueError(f"eps must be > 0; got {eps}")
        centered = centered / (grouped.std(dim=1, keepdim=True, correction=1) + eps)
    return centered.reshape(-1)


def leave_one_out_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """RLOO advantage: each reward minus the mean reward of the other completions of its prompt.

        A_i = r_i − 1/(G − 1) Σ_{j≠i} r_j  =  G/(G − 1) · (r_i − mean_g(r))

    Ahmadian et al. 2024, "Back to basics: revisiting REINFORCE style optimization for
    learning from human feedback in LLMs", arXiv 2402.14740 (after Kool, van Hoof,
    Welling 2019, "Buy 4 REINFORCE samples, get a baseline for free!"). The advantages of a
    group sum to 0.

    Args:
        rewards: one scalar reward per completion (KL penalty already applied, if any), the
            G completions of a prompt in contiguous rows. Shape: (B,), B a multiple of G.
        group_size: G ≥ 2, completions per prompt.

    Returns:
        The advantage of each completion. Shape: (B,)
    """
    rewards = _as_rewards(rewards, "rewards")
    grouped = _grouped(rewards, group_size, "leave-one-out advantages")
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - baseline).reshape(-1)


def kl_penalized_rewards(r: Tensor, kl: Tensor, coef: float) -> Tensor:
    """Sequence reward with a KL penalty to the reference policy.

        R(x, y) = r(x, y) − β · KL(x, y),   KL = Σ_t log π(y_t | ·) − log π_ref(y_t | ·)

    Ziegler et al. 2019, "Fine-tuning language models from human preferences",
    arXiv 1909.08593 (β = ``coef``). The paper's KL is the sampled log-ratio, i.e. the
    k1 estimator summed over the completion: ``core.kl.sequence_kl(..., estimator="k1")``,
    as TRL 1.16's RLOOTrainer computes it; any (B,) KL estimate is accepted.

    Args:
        r: proxy reward of each completion. Shape: (B,)
        kl: KL estimate of each completion, in nats. Shape: (B,)
        coef: β ≥ 0; β = 0 returns ``r`` unchanged.

    Returns:
        The penalized reward. Shape: (B,)
    """
    r = _as_rewards(r, "r")
    kl = _as_rewards(kl, "kl")
    if kl.shape != r.shape:
        raise ValueError(f"kl must have the shape of r {tuple(r.shape)}; got {tuple(kl.shape)}")
    if not coef >= 0.0:
        raise ValueError(f"coef must be >= 0; got {coef}")
    if coef == 0.0:
        return r
    return r - coef * kl.to(r.dtype)


def ppo_token_rewards(r: Tensor, kl_token: Tensor | None, mask: Tensor, coef: float) -> Tensor:
    """Per-token rewards of PPO for language models: −β·KL on every completion token, and
    the sequence reward added on the last one.

        r_t = −β · kl_t · m_t + [t = last] · r,   so that  Σ_t r_t = r − β · Σ_t m_t kl_t

    Ziegler et al. 2019, arXiv 1909.08593 (the KL penalty spread over tokens, the reward
    model's score at the end), as TRL's former PPOTrainer; ``kl_t`` is a per-token estimate
    (k1 there), ``last`` the last completion token of each row.

    Args:
        r: sequence reward (shaped, before the KL penalty). Shape: (B,)
        kl_token: per-token KL estimate, or None for no penalty. Shape: (B, T)
        mask: 1 on completion tokens (left-aligned per row after the prompt). Shape: (B, T)
        coef: β ≥ 0.

    Returns:
        Shape: (B, T)
    """
    mask = torch.as_tensor(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (B, T); got {tuple(mask.shape)}")
    r = _as_rewards(r, "r")
    if r.shape[0] != mask.shape[0]:
        raise ValueError(f"r must have one reward per row of mask; got {tuple(r.shape)}")
    if bool((mask.sum(dim=1) == 0).any()):
        raise ValueError("mask: every row needs at least one completion token")
    if kl_token is not None and coef != 0.0:
        token_rewards = -coef * kl_token * mask
    else:
        token_rewards = torch.zeros(mask.shape, dtype=r.dtype, device=mask.device)
    last = mask.sum(dim=1) - 1
    token_rewards[torch.arange(mask.shape[0], device=mask.device), last] += r.to(
        token_rewards.dtype
    )
    return token_rewards


def whiten(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """Standardize ``x`` over the valid positions of ``mask``: (x − μ) / sqrt(σ² + ε), 0 off it.

        μ = Σ m x / Σ m,   σ² = Σ m (x − μ)² / max(Σ m, 2)

    The advantage whitening of PPO implementations (Huang et al. 2022, "The 37
    implementation details of PPO", ICLR blog track; TRL's ``masked_whiten``, without
    re-adding the mean). Shapes: x (B, T), mask (B, T) -> (B, T).
    """
    mean = (x * mask).sum() / mask.sum()
    var = ((x - mean) ** 2 * mask).sum() / mask.sum().clamp(min=2)
    return (x - mean) * torch.rsqrt(var + eps) * mask


@dataclass
class AdaptiveKLController:
    """Adaptive KL coefficient that steers the measured KL towards a target.

        e_t = clip(KL_t / KL_target − 1, −0.2, 0.2)
        β_{t+1} = β_t · (1 + e_t · n_steps / horizon)

    Ziegler et al. 2019, "Fine-tuning language models from human preferences",
    arXiv 1909.08593 (their K_β = n_steps / horizon, as in the reference code
    openai/lm-human-preferences, ``AdaptiveKLController``). The state is ``coef``; save and
    restore it with the rest of a checkpoint (``dataclasses.asdict``).
    """

    coef: float
    """β_t, the current coefficient (the initial β at construction); > 0."""
    target: float
    """KL_target in nats per sequence; > 0."""
    horizon: int = 10_000
    """Number of samples (or steps, as counted by ``n_steps``) over which β can change by
    a factor ≈ e^{±0.2}; > 0."""

    def __post_init__(self) -> None:
        if not self.coef > 0.0:
            raise ValueError(f"coef must be > 0 (a 0 coefficient can never adapt); got {self.coef}")
        if not self.target > 0.0:
            raise ValueError(f"target must be > 0; got {self.target}")
        if not self.horizon > 0:
            raise ValueError(f"horizon must be > 0; got {self.horizon}")

    def update(self, kl: float, n_steps: int) -> float:
        """Update β from the mean sequence KL measured over the last ``n_steps`` samples.

        Args:
            kl: measured mean KL(π ‖ π_ref) in nats per sequence, finite and ≥ 0 up to
                estimator noise.
            n_steps: number of samples (or steps) since the last update, in [0, horizon].

        Returns:
            The new coefficient β_{t+1} (also stored in ``coef``).
        """
        kl = float(kl)
        if not torch.isfinite(torch.tensor(kl)):
            raise ValueError(f"kl must be finite; got {kl}")
        if not 0 <= n_steps <= self.horizon:
            # Past the horizon the multiplier 1 ± 0.2 · n_steps / horizon could reach 0.
            raise ValueError(f"n_steps must be in [0, horizon = {self.horizon}]; got {n_steps}")
        proportional_error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.coef *= 1.0 + proportional_error * n_steps / self.horizon
        return self.coef
