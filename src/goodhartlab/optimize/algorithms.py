"""The RL algorithms of :func:`goodhartlab.optimize.rl.rl_step`, one registry entry each.

An algorithm is two steps of the loop: how the batch's rewards become advantages, and the
clipped loss on a minibatch. The formulas are in ``core.advantages`` and ``core.losses``;
an entry only says which ones, and what else it needs (a value model, groups of G ≥ 2, a
KL term in the loss). A new algorithm is one more :class:`RLAlgorithm` registered in
``goodhartlab.registry.RL_ALGORITHMS``, from this module or from a plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from goodhartlab.core.advantages import (
    gae,
    group_normalized_advantages,
    leave_one_out_advantages,
    ppo_token_rewards,
    whiten,
)
from goodhartlab.core.losses import grpo_loss, ppo_policy_loss, rloo_loss, value_loss
from goodhartlab.core.step_rewards import scatter_step_rewards
from goodhartlab.optimize.nash_mp import nash_mp_advantages, nash_mp_loss_fn
from goodhartlab.registry import RL_ALGORITHMS

if TYPE_CHECKING:
    from goodhartlab.measure.evaluate import Rollouts

__all__ = ["RL_ALGORITHMS", "AdvantageInputs", "RLAlgorithm"]


@dataclass(frozen=True)
class AdvantageInputs:
    """What the advantages of one batch may depend on (row-aligned, B·G rows)."""

    rollouts: Rollouts
    r_final: Tensor
    """The reward the optimizer sees (shaped, minus β·KL when the KL is in the reward). (B,)"""
    r_shaped: Tensor
    """The shaped reward before the KL penalty. Shape: (B,)"""
    kl_coef: float
    """β of the KL penalty in the reward (0: none)."""
    kl_token: Tensor | None
    """The per-token KL estimate of the penalty in the reward, or None. Shape: (B, T)"""
    group_size: int
    step_rewards: Tensor | None = None
    """Step-level shaping: each sentence's reward (their row sums are ``r_shaped``). (B, K)"""
    step_mask: Tensor | None = None
    """1 on each row's steps (left-aligned). Shape: (B, K)"""
    step_token: Tensor | None = None
    """The completion-token index where each step ends. Shape: (B, K)"""
    prompts: Sequence[str] = ()
    """The prompt of each row (nash_mp samples opponents of the batch's prompts). (B,)"""
    step: int = 0
    """The training step (seeds what an algorithm samples itself, e.g. nash_mp's opponents)."""


#: ``advantages(run, inputs) -> (advantages, returns | None, values_old | None)``
AdvantageFn = Callable[[Any, AdvantageInputs], tuple[Tensor, Tensor | None, Tensor | None]]
#: ``loss(run, experience, logp) -> (loss, stats)`` on one minibatch, logp (B, T).
LossFn = Callable[[Any, Any, Tensor], tuple[Tensor, dict[str, Tensor]]]


@dataclass(frozen=True)
class RLAlgorithm:
    """One RL algorithm: its advantages and its loss."""

    advantages: AdvantageFn
    loss: LossFn
    value_model: bool = False
    """Trains a value model (``optimize.rl.ValueModel``) beside the policy."""
    group_based: bool = False
    """Needs G ≥ 2 completions per prompt (the group is the baseline)."""
    kl_in_loss: bool = False
    """Can take the KL to π0 in its loss (``kl_in="loss"``) instead of in the reward."""
    pairwise_payoff: bool = False
    """Can optimize a pairwise preference model (``rewards.pairwise``): its payoff is a
    completion's preference over other samples, so it needs no scalar reward."""


def _grpo_advantages(run, x: AdvantageInputs):
    adv = group_normalized_advantages(x.r_final, x.group_size, scale_by_std=run.cfg.scale_rewards)
    return adv, None, None


def _grpo_loss(run, exp, logp):
    cfg = run.cfg
    return grpo_loss(
        logp, exp.logp_old, exp.logp_ref, exp.advantages, exp.rollouts.completion_mask,
        clip_coef=cfg.clip_coef, loss_type=cfg.loss_type,
        kl_coef=cfg.kl_coef if exp.logp_ref is not None else 0.0,
        kl_estimator=cfg.kl_estimator or "k3",
    )  # fmt: skip


def _rloo_advantages(run, x: AdvantageInputs):
    return leave_one_out_advantages(x.r_final, x.group_size), None, None


def _rloo_loss(run, exp, logp):
    return rloo_loss(
        logp, exp.logp_old, exp.advantages, exp.rollouts.completion_mask,
        clip_coef=run.cfg.clip_coef,
    )  # fmt: skip


def _ppo_advantages(run, x: AdvantageInputs):
    cfg, mask = run.cfg, x.rollouts.completion_mask
    with torch.no_grad(), run.autocast():
        values_old = run.value_model(x.rollouts)
    coef = x.kl_coef if x.kl_token is not None else 0.0
    if x.step_rewards is None:
        token_rewards = ppo_token_rewards(x.r_shaped.to(run.device), x.kl_token, mask, coef)
    else:  # each step's reward on its last token (Gao et al. 2024), the KL on every token
        zero = torch.zeros_like(x.r_shaped, device=run.device)
        token_rewards = ppo_token_rewards(zero, x.kl_token, mask, coef) + scatter_step_rewards(
            x.step_rewards.to(run.device), x.step_mask.to(run.device),
            x.step_token.to(run.device), mask.shape[1],
        ).to(zero.dtype)  # fmt: skip
    advantages, returns = gae(token_rewards, values_old, mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        advantages = whiten(advantages, mask)
    return advantages, returns, values_old


def _ppo_loss(run, exp, logp):
    cfg, mask = run.cfg, exp.rollouts.completion_mask
    pg_loss, stats = ppo_policy_loss(
        logp, exp.logp_old, exp.advantages, mask, clip_coef=cfg.clip_coef
    )
    vf_loss, vf_stats = value_loss(
        run.value_model(exp.rollouts), exp.values_old, exp.returns, mask, clip_coef=cfg.vf_clip
    )
    stats = {**stats, **vf_stats, "pg_loss": pg_loss.detach(), "vf_loss": vf_loss.detach()}
    return pg_loss + cfg.vf_coef * vf_loss, stats


RL_ALGORITHMS.register(
    "grpo",
    RLAlgorithm(_grpo_advantages, _grpo_loss, group_based=True, kl_in_loss=True),
    description="group-normalized advantage, token-level clipped loss (KL in reward or loss)",
    paper="Shao et al. 2024, arXiv 2402.03300",
)
RL_ALGORITHMS.register(
    "rloo",
    RLAlgorithm(_rloo_advantages, _rloo_loss, group_based=True),
    description="leave-one-out advantage, sequence-level clipped REINFORCE",
    paper="Ahmadian et al. 2024, arXiv 2402.14740",
)
RL_ALGORITHMS.register(
    "ppo",
    RLAlgorithm(_ppo_advantages, _ppo_loss, value_model=True),
    description="GAE with a value model, token-level clipped loss",
    paper="Schulman et al. 2017, arXiv 1707.06347; Ziegler et al. 2019, arXiv 1909.08593",
)
RL_ALGORITHMS.register(
    "nash_mp",
    RLAlgorithm(
        nash_mp_advantages,
        nash_mp_loss_fn,
        group_based=True,
        kl_in_loss=True,
        pairwise_payoff=True,
    ),
    description="Nash Mirror Prox: an extrapolation step on the preference over the policy's "
    "own samples, then the update on the preference over the extrapolated policy's samples "
    "(a pairwise preference model's, or the proxy's Bradley-Terry preference; optimize.nash_mp)",
    paper="Tiapkin et al. 2025, arXiv 2505.19731; Munos et al. 2023, arXiv 2312.00886",
)
