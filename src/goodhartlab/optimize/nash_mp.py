"""Nash-MP as an RL algorithm: one Mirror Prox iteration per training step.

Nash Mirror Prox (Tiapkin et al. 2025, arXiv 2505.19731) with each proximal step estimated
by the loop's stochastic policy-gradient updates on one batch, as the paper's approximate
version does (formulas in ``core.nash``; the batching below is ours). Step k of ``optimize.rl.rl_step`` has sampled G completions y_i ∼ π_k of
each prompt; then

1. extrapolation: the payoff of y_i is its preference over the other completions of its
   group, P̂(y_i ≻ π_k) (self-play); the same clipped updates as the update step (epochs ×
   minibatches, β KL to π_ref, 1/η KL to π_k) turn θ_k into θ_{k+1/2};
2. G' opponents y'_j ∼ π_{k+1/2} of each prompt are sampled and scored; θ, the optimizer's
   state and nothing else are put back to θ_k;
3. update: the advantages returned to the loop are those of P̂(y_i ≻ π_{k+1/2}), so the
   loop's updates go from θ_k towards π_{k+1}.

Both steps reuse the samples of π_k (the update step's proximal objective is anchored at
π_k, whose samples the loop has), so a step costs one extra set of updates and one extra
sampling pass over the GRPO step. The KL penalty of the reward (``kl_in='reward'``) is added
to the payoff as in the regularized game. The preference is either

- Bradley-Terry from a scalar proxy (``core.nash.bt_preference`` on the aggregated proxy
  reward: ``win_rate_against``), or
- a pairwise preference model's (``rewards.pairwise``; NLHF's setting, Munos et al. 2023,
  arXiv 2312.00886): the self-play payoff is the reward pipeline's (its preference over the
  rest of the group, ``RewardPipeline.self_play_payoff``), the update's payoff
  P̂(y_i ≻ π_{k+1/2}) = 1/G' Σ_j P(y_i ≻ y'_j) is read from the model on every (y_i, y'_j)
  (``PairwisePreferenceModel.preference_matrix``, ``core.nash.win_rate_from_preferences``):
  no Bradley-Terry score anywhere. No other RL algorithm can optimize such a model
  (:func:`check_pairwise_run`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from goodhartlab.core.advantages import group_normalized_advantages
from goodhartlab.core.nash import nash_mp_loss, win_rate_against, win_rate_from_preferences
from goodhartlab.measure.evaluate import Rollouts, completion_logprobs, sample_rollouts
from goodhartlab.optimize.rundir import derived_seed
from goodhartlab.registry import RL_ALGORITHMS
from goodhartlab.rewards.pipeline import source_name

__all__ = ["check_pairwise_run", "nash_mp_advantages", "nash_mp_loss_fn"]


def check_pairwise_run(cfg: Any, reward: Any) -> None:
    """Refuse, naming the field, a pairwise preference model (a ``reward`` source with
    ``preference_matrix``, ``rewards.pairwise``) with what needs a scalar reward: an algorithm
    without ``pairwise_payoff`` (GRPO, RLOO, PPO), and the options that read or change
    per-completion scores. Called before anything is loaded or written."""
    if not callable(getattr(reward, "preference_matrix", None)):
        return
    name = source_name(reward)
    if not RL_ALGORITHMS[cfg.algorithm].pairwise_payoff:
        able = [e.name for e in RL_ALGORITHMS.entries() if e.obj.pairwise_payoff]
        raise ValueError(
            f"algorithm: {cfg.algorithm!r} needs a scalar reward per completion, but the "
            f"reward source {name!r} is a pairwise preference model P(y ≻ y' | x) (objective "
            f"'pairwise'); use algorithm {' or '.join(repr(a) for a in able)}, whose payoff is "
            "a completion's preference over other samples, or a Bradley-Terry proxy"
        )
    scalar_only = {
        "cooper": cfg.cooper is not None,
        "constrained": cfg.constrained is not None,
        "kl_gate": cfg.kl_gate is not None,
        "diversity_bonus": cfg.diversity_bonus,
        "occupancy_reg": cfg.occupancy_reg is not None,
        "monitor": cfg.monitor is not None,
        "reward.standardize_members": cfg.reward.standardize_members,
    }
    bad = [k for k, on in scalar_only.items() if on]
    if bad:
        raise ValueError(
            f"{', '.join(bad)}: not supported with the pairwise preference model {name!r} "
            "(these read or change per-completion scores or ensemble members, which it has "
            "not); turn them off or use a Bradley-Terry proxy"
        )


@dataclass(frozen=True)
class _Batch:
    """What :func:`nash_mp_loss_fn` reads of a minibatch (the loop's ``_Experience`` has it)."""

    rollouts: Rollouts
    logp_old: Tensor  # (B, T)
    logp_ref: Tensor | None  # (B, T)
    advantages: Tensor  # (B,)

    def select(self, idx: Tensor) -> _Batch:
        idx = idx.to(self.logp_old.device)
        ref = None if self.logp_ref is None else self.logp_ref[idx]
        return _Batch(self.rollouts.select(idx), self.logp_old[idx], ref, self.advantages[idx])


def nash_mp_loss_fn(run: Any, exp: Any, logp: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """``core.nash.nash_mp_loss`` with the run's settings; logp (B, T)."""
    cfg = run.cfg
    return nash_mp_loss(
        logp, exp.logp_old, exp.logp_ref, exp.advantages, exp.rollouts.completion_mask,
        prox_coef=cfg.nash_prox_coef, clip_coef=cfg.clip_coef, loss_type=cfg.loss_type,
        kl_coef=cfg.kl_coef if exp.logp_ref is not None else 0.0,
        kl_estimator=cfg.kl_estimator or "k3",
    )  # fmt: skip


def _proximal_updates(run: Any, batch: _Batch, step: int) -> None:
    """The loop's clipped updates (epochs × minibatches) on ``batch``, in place."""
    cfg = run.cfg
    rows = batch.logp_old.shape[0]
    mb = cfg.minibatch_size or rows
    shuffle = torch.Generator().manual_seed(derived_seed(cfg.seed, "nash_mp_minibatches", step))
    params = [p for g in run.optimizer.param_groups for p in g["params"]]
    for _ in range(cfg.epochs):
        order = torch.randperm(rows, generator=shuffle)
        for start in range(0, rows, mb):
            part = batch.select(order[start : start + mb])
            with run.autocast():
                logp = completion_logprobs(run.policy, part.rollouts, cfg.temperature)
                loss, _ = nash_mp_loss_fn(run, part, logp)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or math.inf)
            if not torch.isfinite(grad_norm):
                raise FloatingPointError(
                    f"step {step}: Nash-MP's extrapolation gradient norm is {float(grad_norm)}"
                )
            run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)


def _opponent_completions(run: Any, prompts: list[str], step: int) -> list[str]:
    """G' completions of each prompt from the current policy, seeded by (seed, step),
    prompt-major. Length: B·G'"""
    cfg = run.cfg
    g_opp = cfg.nash_opponents or cfg.group_size
    generator = torch.Generator(device=run.device).manual_seed(
        derived_seed(cfg.seed, "nash_mp_opponents", step)
    )
    with torch.no_grad():
        opp = sample_rollouts(
            run.policy, run.tokenizer, prompts, g_opp, max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature, generator=generator, autocast_dtype=run.autocast_dtype,
        )  # fmt: skip
    return opp.completions


def _opponents(run: Any, prompts: list[str], step: int) -> Tensor:
    """Sample G' completions of each prompt from the current policy and score them with the
    proxy (aggregated, unshaped). Shape: (B·G',)"""
    g_opp = run.cfg.nash_opponents or run.cfg.group_size
    flat = [p for p in prompts for _ in range(g_opp)]
    return run.pipeline.score_source(flat, _opponent_completions(run, prompts, step))[0]


def _pairwise_update_payoff(
    run: Any, prompts: list[str], completions: list[str], opponents: list[str]
) -> Tensor:
    """P̂(y_i ≻ π_{k+1/2}) = 1/G' Σ_j P(y_i ≻ y'_j) from the pairwise preference model.
    Shape: (B·G,)"""
    cfg = run.cfg
    pref = run.pipeline.source.preference_matrix(
        prompts, completions, cfg.group_size, opponents, cfg.nash_opponents or cfg.group_size
    )
    return win_rate_from_preferences(torch.as_tensor(pref, dtype=torch.float64), self_play=False)


def nash_mp_advantages(run: Any, x: Any) -> tuple[Tensor, None, None]:
    """The update step's advantages, after the extrapolation step (module docstring).

    ``x`` is the loop's ``AdvantageInputs``: its ``prompts`` (one per row) and ``step`` seed
    the opponents' sampling; ``r_shaped`` is the proxy (Nash-MP takes no shaping), or for a
    pairwise preference model already the self-play payoff P̂(y_i ≻ π_k).
    """
    cfg, G = run.cfg, x.group_size
    if len(x.prompts) != x.r_shaped.shape[0]:
        raise ValueError("nash_mp: AdvantageInputs.prompts must hold one prompt per row")
    prompts = list(x.prompts[::G])
    pairwise = getattr(run.pipeline, "is_pairwise", False)
    r_self = x.r_shaped.cpu().to(torch.float64)
    kl_payoff = (x.r_final.cpu() - x.r_shaped.cpu()).to(torch.float64)  # −β·KL in the reward
    device = run.device

    def advantages(payoff: Tensor) -> Tensor:
        adv = group_normalized_advantages(payoff + kl_payoff, G, scale_by_std=cfg.scale_rewards)
        return adv.to(device=device, dtype=torch.float32)

    self_play = r_self if pairwise else win_rate_against(r_self, G)
    if not cfg.nash_extrapolate:  # the ablation: mirror descent, the opponent is π_k
        return advantages(self_play), None, None

    rollouts = x.rollouts
    logp_ref = None
    if cfg.kl_in == "loss" and cfg.kl_coef > 0:
        with torch.no_grad(), run.autocast():
            logp_ref = completion_logprobs(run.reference, rollouts, cfg.temperature)

    # 1. Extrapolation from θ_k on the payoff against π_k, then 2. opponents from π_{k+1/2}.
    theta_k = {k: v.detach().clone() for k, v in run.policy.state_dict().items()}
    optimizer_k = copy.deepcopy(run.optimizer.state_dict())
    try:
        half = _Batch(rollouts, rollouts.logp, logp_ref, advantages(self_play))
        _proximal_updates(run, half, x.step)
        if pairwise:
            opponents = _opponent_completions(run, prompts, x.step)
        else:
            r_opp = _opponents(run, prompts, x.step).to(torch.float64)
    finally:
        run.policy.load_state_dict(theta_k)
        run.optimizer.load_state_dict(optimizer_k)

    # 3. The update step's payoff: the preference over π_{k+1/2}'s samples.
    if pairwise:
        payoff = _pairwise_update_payoff(run, prompts, rollouts.completions, opponents)
        return advantages(payoff), None, None
    g_opp = cfg.nash_opponents or cfg.group_size
    return advantages(win_rate_against(r_self, G, r_opp, g_opp)), None, None
