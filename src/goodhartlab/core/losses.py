"""Training losses as pure functions of tensors: each returns ``(loss, stats)``.

``stats`` is a dict of detached scalar tensors; the training loop decides what to log.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from goodhartlab.core.kl import token_kl
from goodhartlab.registry import DAA_LOSSES, RM_OBJECTIVES


def bradley_terry_loss(
    r_chosen: Tensor,
    r_rejected: Tensor,
    *,
    margin: Tensor | None = None,
    label_smoothing: float = 0.0,
    center_coef: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Bradley-Terry reward-model loss, with optional margin, label smoothing and centering.

    With Δ = r_c − r_r − m (m = 0 when ``margin`` is None), averaged over the batch:

        L = (1 − ε) · (−log σ(Δ)) + ε · (−log σ(−Δ)) + c · (r_c + r_r)²

    - ε = 0, c = 0, m = 0: the pairwise loss of Ouyang et al. 2022 (InstructGPT,
      arXiv 2203.02155), −log σ(r_c − r_r).
    - m: the preference-strength margin of Touvron et al. 2023 (Llama 2, arXiv 2307.09288),
      −log σ(r_c − r_r − m(r)), where m is larger for more confident preferences.
    - ε: label smoothing, i.e. the cross-entropy against a target that puts probability ε
      on the rejected answer being preferred (conservative BT, as for cDPO). The
      smoothing applies to the margin-shifted Δ.
    - c: the L2 "reward centering" penalty c · (r_c + r_r)², which pins the rewards of a
      pair near zero mean (Eisenstein et al. 2023, "Helping or Herding?",
      arXiv 2312.09244; TRL's ``center_rewards_coefficient``).

    Args:
        r_chosen: rewards of the preferred completions. Shape: (B,)
        r_rejected: rewards of the other completions. Shape: (B,)
        margin: per-pair margin m, or None. Shape: (B,)
        label_smoothing: ε in [0, 0.5).
        center_coef: c ≥ 0.

    Returns:
        ``(loss, stats)``: ``loss`` a scalar tensor; ``stats`` detached scalars
        ``accuracy`` (fraction with r_c > r_r strictly, margin ignored),
        ``margin_mean`` (mean of r_c − r_r), ``reward_mean`` (mean of all 2B rewards),
        ``bt_loss`` (mean −log σ(r_c − r_r), without margin / smoothing / centering, so it is
        comparable across settings).
    """
    assert r_chosen.ndim == 1, r_chosen.shape
    assert r_rejected.shape == r_chosen.shape, (r_chosen.shape, r_rejected.shape)
    if margin is not None:
        assert margin.shape == r_chosen.shape, (margin.shape, r_chosen.shape)
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing: expected a value in [0, 0.5), got {label_smoothing}")
    if center_coef < 0.0:
        raise ValueError(f"center_coef: expected a value >= 0, got {center_coef}")

    reward_gap = r_chosen - r_rejected
    delta = reward_gap if margin is None else reward_gap - margin.to(reward_gap.dtype)
    # −log σ(x) = softplus(−x), stable for large |x|.
    nll_chosen = F.softplus(-delta)
    nll_rejected = F.softplus(delta)
    loss = ((1.0 - label_smoothing) * nll_chosen + label_smoothing * nll_rejected).mean()
    if center_coef > 0.0:
        loss = loss + center_coef * ((r_chosen + r_rejected) ** 2).mean()

    with torch.no_grad():
        stats = {
            "accuracy": (reward_gap > 0).float().mean(),
            "margin_mean": reward_gap.mean(),
            "reward_mean": torch.cat([r_chosen, r_rejected]).mean(),
            "bt_loss": F.softplus(-reward_gap).mean(),
        }
    return loss, {k: v.detach() for k, v in stats.items()}


# ---------------------------------------------------------------------------------------------
# Policy-gradient losses (PPO, GRPO, RLOO) over token-level log-probabilities.
#
# Token-level tensors are (B, T) with a completion mask (B, T): 1 on completion tokens, 0 on
# prompt and padding. Positions where the mask is 0 are replaced by 0 before any arithmetic,
# so padding may hold -inf or NaN without leaking into the loss or its gradient.
# ---------------------------------------------------------------------------------------------

GRPOLossType = Literal["grpo", "bnpo", "dapo"]
_GRPO_LOSS_TYPES = ("grpo", "bnpo", "dapo")


def _token_mask(mask: Tensor, like: Tensor) -> Tensor:
    mask = torch.as_tensor(mask, device=like.device)
    if mask.shape != like.shape:
        raise ValueError(
            f"mask must have shape {tuple(like.shape)} (B, T); got {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must hold only 0 and 1 (or bool)")
        mask = mask.bool()
    return mask


def _check_finite(x: Tensor, name: str, where: Tensor | None = None) -> None:
    bad = ~torch.isfinite(x.detach())
    if where is not None:
        bad = bad & where
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{name} must be finite; got {x[idx].item()} at index {idx}")


def _token_tensor(x: Tensor, name: str, shape: torch.Size, mask: Tensor | None) -> Tensor:
    """Check that ``x`` has ``shape`` and is finite on ``mask``; zero it off the mask."""
    x = torch.as_tensor(x)
    if x.shape != shape:
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {tuple(x.shape)}")
    if mask is None:
        _check_finite(x, name)
        return x
    _check_finite(x, name, mask)
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def _logp_and_mask(logp: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    logp = torch.as_tensor(logp)
    if logp.ndim != 2:
        raise ValueError(f"logp must have shape (B, T); got {tuple(logp.shape)}")
    mask = _token_mask(mask, logp)
    return _token_tensor(logp, "logp", logp.shape, mask), mask


def _sequence_advantages(advantages: Tensor, batch: int) -> Tensor:
    advantages = torch.as_tensor(advantages)
    if advantages.shape != (batch,):
        raise ValueError(
            f"advantages must have shape (B,) = ({batch},), one per sequence; "
            f"got {tuple(advantages.shape)}"
        )
    _check_finite(advantages, "advantages")
    return advantages.detach()


def _clip_range(clip_coef: float, clip_coef_high: float | None) -> tuple[float, float]:
    high = clip_coef if clip_coef_high is None else clip_coef_high
    if not 0.0 < clip_coef < 1.0:
        raise ValueError(f"clip_coef must be in (0, 1); got {clip_coef}")
    if not high > 0.0:
        raise ValueError(f"clip_coef_high must be > 0; got {clip_coef_high}")
    return 1.0 - clip_coef, 1.0 + high


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    # A batch with no valid token gives 0, not NaN (as TRL's clamp(min=1)).
    return (x * mask).sum() / mask.sum().clamp(min=1)


def _clipped_surrogate(
    ratio: Tensor, advantages: Tensor, low: float, high: float
) -> tuple[Tensor, Tensor]:
    """PPO's pessimistic surrogate per element, and where the clip is active."""
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, low, high)
    # pg_loss2 > pg_loss1 exactly where the clipped term is taken and its gradient is 0:
    # (ratio > 1 + ε and A > 0) or (ratio < 1 − ε and A < 0).
    return torch.max(pg_loss1, pg_loss2), pg_loss2 > pg_loss1


def ppo_policy_loss(
    logp: Tensor,
    logp_old: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_coef: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate objective, averaged over the completion tokens of the batch.

        ratio_t  = exp(log π(y_t) − log π_old(y_t))
        pg_loss1 = −A_t · ratio_t
        pg_loss2 = −A_t · clip(ratio_t, 1 − ε, 1 + ε)
        L        = Σ_t mask_t · max(pg_loss1, pg_loss2) / Σ_t mask_t

    Schulman, Wolski, Dhariwal, Radford, Klimov 2017, "Proximal policy optimization
    algorithms", arXiv 1707.06347, eq. 7 (L^CLIP, negated to a loss; ε = ``clip_coef``), with
    names as in cleanrl's ``ppo.py``. Each token is an action; the mean runs over all valid
    tokens of the batch.

    Args:
        logp: log π(y_t | ·) of the sampled tokens under the current policy (carries the
            gradient). Shape: (B, T)
        logp_old: the same under the policy that sampled them. Shape: (B, T)
        advantages: A_t per token (from ``core.advantages.gae``), or one per sequence,
            broadcast over its tokens. Shape: (B, T) or (B,)
        mask: 1 on completion tokens, 0 on prompt and padding. Shape: (B, T)
        clip_coef: ε in (0, 1).

    Returns:
        ``(loss, stats)``: ``loss`` a scalar; ``stats`` detached scalars ``clipfrac`` (the
        fraction of tokens where the clip is active, i.e. whose gradient it zeroes; cleanrl's
        ``clipfrac`` counts |ratio − 1| > ε whatever the sign of A), ``approx_kl`` (mean k3
        estimate of KL(π_old ‖ π) per token, Schulman 2020), ``ratio_mean``.
    """
    logp, mask = _logp_and_mask(logp, mask)
    logp_old = _token_tensor(logp_old, "logp_old", logp.shape, mask).detach()
    advantages = torch.as_tensor(advantages)
    if advantages.ndim == 1:
        advantages = _sequence_advantages(advantages, logp.shape[0]).unsqueeze(1)
    else:
        advantages = _token_tensor(advantages, "advantages", logp.shape, mask).detach()
    low, high = _clip_range(clip_coef, None)

    logratio = logp - logp_old  # 0 off the mask
    ratio = torch.exp(logratio)
    pg_loss, clipped = _clipped_surrogate(ratio, advantages, low, high)
    loss = _masked_mean(pg_loss, mask)

    with torch.no_grad():
        stats = {
            "clipfrac": _masked_mean(clipped.to(logp.dtype), mask),
            "approx_kl": _masked_mean(token_kl(logp_old, logp, "k3"), mask),
            "ratio_mean": _masked_mean(ratio, mask),
        }
    return loss, {k: v.detach() for k, v in stats.items()}


def value_loss(
    values: Tensor,
    values_old: Tensor,
    returns: Tensor,
    mask: Tensor,
    *,
    clip_coef: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Squared-error value loss, optionally clipped around the old values, over valid tokens.

        unclipped:  L = ½ · mean_t (V_t − R_t)²
        clipped:    V^clip_t = V^old_t + clip(V_t − V^old_t, −ε_v, ε_v)
                    L = ½ · mean_t max((V_t − R_t)², (V^clip_t − R_t)²)

    The squared error is L^VF of Schulman et al. 2017, "Proximal policy optimization
    algorithms", arXiv 1707.06347, eq. 9; the clipped form is from OpenAI baselines' ppo2
    and cleanrl's ``ppo.py`` (``clip_vloss``), which also carry the ½. Andrychowicz et al.
    2021, "What matters in on-policy RL?", arXiv 2006.05990, found value clipping does not
    help; it is off by default. The mean runs over all valid tokens of the batch.

    Args:
        values: V_t from the current value model (carries the gradient). Shape: (B, T)
        values_old: V_t when the batch was sampled. Shape: (B, T)
        returns: value targets R_t (from ``core.advantages.gae``). Shape: (B, T)
        mask: 1 on completion tokens, 0 on prompt and padding. Shape: (B, T)
        clip_coef: ε_v > 0 (in reward units), or None for the unclipped loss.

    Returns:
        ``(loss, stats)``: ``loss`` a scalar; ``stats`` detached scalars ``vf_clipfrac``
        (fraction of tokens where the clipped error is the larger; 0 when unclipped),
        ``value_error`` (mean (V − R)², unclipped), ``value_mean``.
    """
    values = torch.as_tensor(values)
    if values.ndim != 2:
        raise ValueError(f"values must have shape (B, T); got {tuple(values.shape)}")
    mask = _token_mask(mask, values)
    values = _token_tensor(values, "values", values.shape, mask)
    values_old = _token_tensor(values_old, "values_old", values.shape, mask).detach()
    returns = _token_tensor(returns, "returns", values.shape, mask).detach()
    if clip_coef is not None and not clip_coef > 0.0:
        raise ValueError(f"clip_coef must be > 0 or None; got {clip_coef}")

    vf_loss1 = (values - returns) ** 2
    if clip_coef is None:
        vf_loss = vf_loss1
        clipped = torch.zeros_like(mask)
    else:
        v_clipped = values_old + torch.clamp(values - values_old, -clip_coef, clip_coef)
        vf_loss2 = (v_clipped - returns) ** 2
        vf_loss = torch.max(vf_loss1, vf_loss2)
        clipped = vf_loss2 > vf_loss1
    loss = 0.5 * _masked_mean(vf_loss, mask)

    with torch.no_grad():
        stats = {
            "vf_clipfrac": _masked_mean(clipped.to(values.dtype), mask),
            "value_error": _masked_mean(vf_loss1, mask),
            "value_mean": _masked_mean(values, mask),
        }
    return loss, {k: v.detach() for k, v in stats.items()}


def grpo_loss(
    logp: Tensor,
    logp_old: Tensor,
    logp_ref: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_coef: float = 0.2,
    clip_coef_high: float | None = None,
    kl_coef: float = 0.0,
    loss_type: GRPOLossType = "grpo",
    num_tokens: int | Tensor | None = None,
    kl_estimator: str = "k3",
) -> tuple[Tensor, dict[str, Tensor]]:
    """GRPO objective: token-level clipped surrogate with a per-sequence advantage and a k3 KL.

        ratio_{i,t} = exp(log π(y_{i,t}) − log π_old(y_{i,t}))
        ℓ_{i,t} = max(−Â_i · ratio_{i,t}, −Â_i · clip(ratio_{i,t}, 1 − ε, 1 + ε_high))
                  + β · k3_{i,t},      k3 = π_ref/π − log(π_ref/π) − 1

    aggregated over the valid tokens by ``loss_type`` (m = mask):

        "grpo":  L = 1/B Σ_i (Σ_t m_{i,t} ℓ_{i,t}) / |y_i|      (per-sequence mean, then mean)
        "bnpo":  L = Σ_{i,t} m_{i,t} ℓ_{i,t} / Σ_{i,t} m_{i,t}  (token mean over the batch)
        "dapo":  L = Σ_{i,t} m_{i,t} ℓ_{i,t} / num_tokens

    Shao et al. 2024, "DeepSeekMath", arXiv 2402.03300, eq. 3 ("grpo", ε = ``clip_coef``,
    β = ``kl_coef``); DAPO: Yu et al. 2025, arXiv 2503.14476 (token-level
    normalization and the decoupled upper clip ε_high = ``clip_coef_high``). The KL term is
    ``core.kl.token_kl(logp, logp_ref, "k3")``, added to the loss rather than to the reward.
    Definitions as in TRL 1.16's ``GRPOTrainer._compute_loss`` with
    ``importance_sampling_level="token"``: its "dapo" divides by the number of completion
    tokens of the whole generation batch (summed over devices and accumulation steps), which
    is ``num_tokens`` here and defaults to this batch's count, making "dapo" equal "bnpo" on
    a single batch. Not supported: TRL's "dr_grpo", "luspo", "cispo", "sapo", "vespo",
    two-sided clipping (``delta``), sequence-level importance sampling.

    Args:
        logp: log π of the sampled tokens under the current policy (carries the gradient).
            Shape: (B, T)
        logp_old: the same under the policy that sampled them; ``logp.detach()`` for one
            on-policy step. Shape: (B, T)
        logp_ref: the same under the frozen reference policy, or None when ``kl_coef`` = 0.
            Shape: (B, T)
        advantages: Â_i, one per completion (``core.advantages.group_normalized_advantages``),
            broadcast over its tokens. Shape: (B,)
        mask: 1 on completion tokens, 0 on prompt and padding. Shape: (B, T)
        clip_coef: ε in (0, 1), the lower clip (and the upper one unless ``clip_coef_high``).
        clip_coef_high: ε_high > 0, or None for ε_high = ε.
        kl_coef: β ≥ 0, the weight of the k3 KL to the reference in the loss.
        loss_type: "grpo", "bnpo" or "dapo".
        num_tokens: "dapo" only: the normalizer (completion tokens of the whole generation
            batch); None for ``mask.sum()``.
        kl_estimator: the per-token estimate in the KL term, a ``REGULARIZERS`` name
            ("k3", the paper's, by default; "k1", "k2" or a registered one).

    Returns:
        ``(loss, stats)``: ``loss`` a scalar; ``stats`` detached scalars ``pg_loss`` (the
        loss without the KL term, same aggregation), ``clipfrac`` (fraction of valid tokens
        where the clip is active, TRL's ``clip_ratio/region_mean``), ``approx_kl`` (token
        mean of k3 KL(π_old ‖ π)), ``ratio_mean``, and ``kl`` (token mean of the k3 KL to the
        reference, TRL's ``kl``) when ``logp_ref`` is given.
    """
    logp, mask = _logp_and_mask(logp, mask)
    logp_old = _token_tensor(logp_old, "logp_old", logp.shape, mask).detach()
    advantages = _sequence_advantages(advantages, logp.shape[0]).unsqueeze(1)
    low, high = _clip_range(clip_coef, clip_coef_high)
    if not kl_coef >= 0.0:
        raise ValueError(f"kl_coef must be >= 0; got {kl_coef}")
    if logp_ref is None:
        if kl_coef > 0.0:
            raise ValueError(f"logp_ref is required when kl_coef > 0; got kl_coef = {kl_coef}")
    else:
        logp_ref = _token_tensor(logp_ref, "logp_ref", logp.shape, mask).detach()
    if loss_type not in _GRPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {_GRPO_LOSS_TYPES}; got {loss_type!r}")
    if num_tokens is not None:
        if loss_type != "dapo":
            raise ValueError(f"num_tokens applies to loss_type 'dapo' only; got {loss_type!r}")
        if not float(num_tokens) > 0:
            raise ValueError(f"num_tokens must be > 0; got {num_tokens}")

    ratio = torch.exp(logp - logp_old)
    pg_per_token, clipped = _clipped_surrogate(ratio, advantages, low, high)
    per_token_loss = pg_per_token
    kl_token = None
    if logp_ref is not None:
        kl_token = token_kl(logp, logp_ref, kl_estimator)
        if kl_coef > 0.0:
            per_token_loss = per_token_loss + kl_coef * kl_token

    def aggregate(x: Tensor) -> Tensor:
        if loss_type == "grpo":
            return ((x * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()
        if loss_type == "bnpo" or num_tokens is None:
            return _masked_mean(x, mask)
        return (x * mask).sum() / num_tokens

    loss = aggregate(per_token_loss)

    with torch.no_grad():
        stats = {
            "pg_loss": aggregate(pg_per_token),
            "clipfrac": _masked_mean(clipped.to(logp.dtype), mask),
            "approx_kl": _masked_mean(token_kl(logp_old, logp, "k3"), mask),
            "ratio_mean": _masked_mean(ratio, mask),
        }
        if kl_token is not None:
            stats["kl"] = _masked_mean(kl_token, mask)
    return loss, {k: v.detach() for k, v in stats.items()}


def rloo_loss(
    logp: Tensor,
    logp_old: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_coef: float = 0.2,
    clip_coef_high: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """RLOO loss: REINFORCE with the leave-one-out advantage, PPO-clipped per sequence.

        log π(y_i) = Σ_t m_{i,t} log π(y_{i,t})
        ratio_i    = exp(log π(y_i) − log π_old(y_i))
        L = 1/B Σ_i max(−A_i · ratio_i, −A_i · clip(ratio_i, 1 − ε, 1 + ε_high))

    Ahmadian et al. 2024, "Back to basics: revisiting REINFORCE style optimization for
    learning from human feedback in LLMs", arXiv 2402.14740: each whole completion is
    one action and A_i the leave-one-out advantage (``core.advantages.
    leave_one_out_advantages``, KL penalty in the reward via ``kl_penalized_rewards``). At
    ratio 1 (one on-policy step) the gradient is the paper's −1/B Σ_i A_i ∇log π(y_i). The
    clipping of the sequence ratio, for several steps on one batch, is TRL 1.16's
    ``RLOOTrainer._compute_loss``, which this mirrors: the ratio and the clip are per
    sequence, not per token, and the mean runs over sequences.

    Args:
        logp: log π of the sampled tokens under the current policy (carries the gradient).
            Shape: (B, T)
        logp_old: the same under the policy that sampled them; ``logp.detach()`` for one
            on-policy step. Shape: (B, T)
        advantages: A_i, one per completion. Shape: (B,)
        mask: 1 on completion tokens, 0 on prompt and padding. Shape: (B, T)
        clip_coef: ε in (0, 1), the lower clip (and the upper one unless ``clip_coef_high``).
        clip_coef_high: ε_high > 0, or None for ε_high = ε.

    Returns:
        ``(loss, stats)``: ``loss`` a scalar; ``stats`` detached scalars ``clipfrac``
        (fraction of sequences where the clip is active, TRL's ``clip_ratio/region_mean``),
        ``approx_kl`` (mean k3 estimate of the sequence KL(π_old ‖ π)), ``ratio_mean``.
    """
    logp, mask = _logp_and_mask(logp, mask)
    logp_old = _token_tensor(logp_old, "logp_old", logp.shape, mask).detach()
    advantages = _sequence_advantages(advantages, logp.shape[0])
    low, high = _clip_range(clip_coef, clip_coef_high)

    seq_logp = logp.sum(dim=1)  # padding is already 0
    seq_logp_old = logp_old.sum(dim=1)
    ratio = torch.exp(seq_logp - seq_logp_old)
    per_sequence_loss, clipped = _clipped_surrogate(ratio, advantages, low, high)
    loss = per_sequence_loss.mean()

    with torch.no_grad():
        stats = {
            "clipfrac": clipped.to(logp.dtype).mean(),
            "approx_kl": token_kl(seq_logp_old, seq_logp, "k3").mean(),
            "ratio_mean": ratio.mean(),
        }
    return loss, {k: v.detach() for k, v in stats.items()}


# ---------------------------------------------------------------------------------------------
# Direct alignment losses (DPO, IPO, SLiC, RPO) over sequence log-probabilities.
#
# With the implicit reward ρ(y) = log π(y) − log π_ref(y) (a sequence log-ratio) and
# h = ρ(y_w) − ρ(y_l), Rafailov et al. 2024, "Scaling laws for reward model overoptimization
# in direct alignment algorithms", arXiv 2406.02900, write DPO, IPO and SLiC as
# E[g(β h)] for a convex g. Each loss is averaged over the batch of pairs.
# ---------------------------------------------------------------------------------------------


def _pair_log_ratios(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> tuple[Tensor, Tensor]:
    tensors = {
        "policy_chosen_logps": torch.as_tensor(policy_chosen_logps),
        "policy_rejected_logps": torch.as_tensor(policy_rejected_logps),
        "ref_chosen_logps": torch.as_tensor(ref_chosen_logps),
        "ref_rejected_logps": torch.as_tensor(ref_rejected_logps),
    }
    shape = tensors["policy_chosen_logps"].shape
    if len(shape) != 1:
        raise ValueError(f"policy_chosen_logps must have shape (B,); got {tuple(shape)}")
    for name, x in tensors.items():
        if x.shape != shape:
            raise ValueError(f"{name} must have shape {tuple(shape)} (B,); got {tuple(x.shape)}")
        _check_finite(x, name)
    if not beta > 0.0:
        raise ValueError(f"beta must be > 0; got {beta}")
    chosen_logratios = tensors["policy_chosen_logps"] - tensors["ref_chosen_logps"].detach()
    rejected_logratios = tensors["policy_rejected_logps"] - tensors["ref_rejected_logps"].detach()
    return chosen_logratios, rejected_logratios


def _pair_stats(
    chosen_logratios: Tensor, rejected_logratios: Tensor, beta: float
) -> dict[str, Tensor]:
    with torch.no_grad():
        chosen_rewards = beta * chosen_logratios.detach()
        rejected_rewards = beta * rejected_logratios.detach()
        return {
            "reward_chosen": chosen_rewards.mean(),
            "reward_rejected": rejected_rewards.mean(),
            "reward_accuracy": (chosen_rewards > rejected_rewards).to(chosen_rewards.dtype).mean(),
            "reward_margin": (chosen_rewards - rejected_rewards).mean(),
        }


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """DPO loss, optionally label-smoothed (conservative DPO).

        L = (1 − ε) · (−log σ(β h)) + ε · (−log σ(−β h)),   h = ρ(y_w) − ρ(y_l)

    Rafailov et al. 2023, "Direct preference optimization", arXiv 2305.18290, eq. 7 (ε = 0);
    ε > 0 is conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences and
    relationship to IPO", ericmitchell.ai/cdpo.pdf), the cross-entropy against a label that
    is wrong with probability ε. ε = 0 is TRL 1.16's ``loss_type="sigmoid"``; TRL 1.16 no
    longer applies ``label_smoothing`` to "sigmoid" (it feeds its "robust", "exo_pair" and
    "aot" losses instead), so cDPO has no exact TRL counterpart there.

    Args:
        policy_chosen_logps: log π(y_w | x), summed over the chosen completion's tokens
            (carries the gradient). Shape: (B,)
        policy_rejected_logps: log π(y_l | x), likewise. Shape: (B,)
        ref_chosen_logps: log π_ref(y_w | x). Shape: (B,)
        ref_rejected_logps: log π_ref(y_l | x). Shape: (B,)
        beta: β > 0, the strength of the implicit KL regularization.
        label_smoothing: ε in [0, 0.5).

    Returns:
        ``(loss, stats)``: ``loss`` a scalar; ``stats`` detached scalars from the implicit
        rewards β·(log π − log π_ref): ``reward_chosen`` and ``reward_rejected`` (batch
        means), ``reward_accuracy`` (fraction of pairs with reward_chosen > reward_rejected,
        strictly), ``reward_margin`` (mean of reward_chosen − reward_rejected).
    """
    chosen_logratios, rejected_logratios = _pair_log_ratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5); got {label_smoothing}")
    logits = beta * (chosen_logratios - rejected_logratios)
    # −log σ(x) = softplus(−x), stable for large |x|.
    losses = F.softplus(-logits)
    if label_smoothing > 0.0:
        losses = (1.0 - label_smoothing) * losses + label_smoothing * F.softplus(logits)
    return losses.mean(), _pair_stats(chosen_logratios, rejected_logratios, beta)


def ipo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """IPO loss: squared distance of the log-ratio margin from 1/(2β).

        L = (h − 1/(2β))²,   h = ρ(y_w) − ρ(y_l)

    Azar et al. 2023, "A general theoretical paradigm to understand learning from human
    preferences", arXiv 2310.12036, eq. 17 (their τ is β). Minimal at h = 1/(2β).
    TRL 1.16's ``loss_type="ipo"`` applies this to log-probabilities averaged over each
    completion's tokens (ρ / |y|) rather than summed; to reproduce it, pass per-token mean
    log-probabilities here.

    Args:
        policy_chosen_logps: log π(y_w | x), summed over the chosen completion's tokens
            (carries the gradient). Shape: (B,)
        policy_rejected_logps: log π(y_l | x), likewise. Shape: (B,)
        ref_chosen_logps: log π_ref(y_w | x). Shape: (B,)
        ref_rejected_logps: log π_ref(y_l | x). Shape: (B,)
        beta: β > 0 (IPO's τ); the target margin is 1/(2β).

    Returns:
        ``(loss, stats)``: ``loss`` a scalar; ``stats`` detached scalars from the implicit
        rewards β·(log π − log π_ref): ``reward_chosen`` and ``reward_rejected`` (batch
        means), ``reward_accuracy`` (fraction of pairs with reward_chosen > reward_rejected,
        strictly), ``reward_margin`` (mean of reward_chosen − reward_rejected).
    """
    chosen_logratios, rejected_logratios = _pair_log_ratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    h = chosen_logratios - rejected_logratios
    loss = ((h - 1.0 / (2.0 * beta)) ** 2).mean()
    return loss, _pair_stats(chosen_logratios, rejected_logratios, beta)


def slic_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """SLiC hinge loss on the log-ratio margin.

        L = max(0, 1 − β h),   h = ρ(y_w) − ρ(y_l)

    The form of Rafailov et al. 2024, arXiv 2406.02900, and of TRL 1.16's
    ``loss_type="hinge"`` (identical). SLiC-HF as published (Zhao et al. 2023, "SLiC-HF:
    sequence likelihood calibration with human feedback", arXiv 2305.10425) minimizes
    max(0, δ − log π(y_w) + log π(y_l)) − λ log π(y_ref); this differs in three ways: the
    margin is over log-ratios to π_ref rather than raw log-probabilities; δ = 1/β and the
    hinge is scaled by β (β · max(0, 1/β − h)); and the regularizer −λ log π(y_ref) is left
    to the caller.

    Args:
        policy_chosen_logps: log π(y_w | x), summed over the chosen completion's tokens
            (carries the gradient). Shape: (B,)
        policy_rejected_logps: log π(y_l | x), likewise. Shape: (B,)
        ref_chosen_logps: log π_ref(y_w | x). Shape: (B,)
        ref_rejected_logps: log π_ref(y_l | x). Shape: (B,)
        beta: β > 0; the hinge is inactive once h ≥ 1/β.

    Returns:
        ``(loss, stats)``: ``loss`` a scalar; ``stats`` detached scalars from the implicit
        rewards β·(log π − log π_ref): ``reward_chosen`` and ``reward_rejected`` (batch
        means), ``reward_accuracy`` (fraction of pairs with reward_chosen > reward_rejected,
        strictly), ``reward_margin`` (mean of reward_chosen − reward_rejected).
    """
    chosen_logratios, rejected_logratios = _pair_log_ratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    loss = torch.relu(1.0 - beta * (chosen_logratios - rejected_logratios)).mean()
    return loss, _pair_stats(chosen_logratios, rejected_logratios, beta)


def rpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    eta: float,
    chosen_nll: Tensor,
) -> tuple[Tensor, dict[str, Tensor]]:
    """RPO loss: DPO plus η times the length-normalized NLL of the chosen completion.

        L = 1/B Σ_i [ −log σ(β h_i) + η · NLL_i ],   NLL_i = −(1/|y_w,i|) Σ_t log π(y_w,i,t)

    Liu et al. 2024, "Provably mitigating overoptimization in RLHF: your SFT loss is
    implicitly an adversarial regularizer", arXiv 2405.16436 (Regularized Preference
    Optimization, with the chosen completion as the imitation target). ``eta`` is the total
    weight of the NLL term, as TRL's ``loss_weights`` entry for "sft"; where a paper writes
    the weight as a product with β, pass the product. TRL 1.16's ``loss_type=["sigmoid",
    "sft"]`` averages the NLL over all chosen tokens of the batch (longer completions weigh
    more); this averages per completion, then over the batch. The two agree when all chosen
    completions have the same length.

    Args:
        policy_chosen_logps: log π(y_w | x), summed over the chosen completion's tokens
            (carries the gradient). Shape: (B,)
        policy_rejected_logps: log π(y_l | x), likewise. Shape: (B,)
        ref_chosen_logps: log π_ref(y_w | x). Shape: (B,)
        ref_rejected_logps: log π_ref(y_l | x). Shape: (B,)
        beta: β > 0.
        eta: η ≥ 0; η = 0 is DPO.
        chosen_nll: NLL_i, the mean negative log-likelihood per token of each chosen
            completion under π (carries the gradient). Shape: (B,)

    Returns:
        ``(loss, stats)``: ``loss`` a scalar; ``stats`` detached scalars from the implicit
        rewards β·(log π − log π_ref): ``reward_chosen`` and ``reward_rejected`` (batch
        means), ``reward_accuracy`` (fraction of pairs with reward_chosen > reward_rejected,
        strictly), ``reward_margin`` (mean of reward_chosen − reward_rejected); plus
        ``dpo_loss`` and ``nll`` (batch means of the two terms).
    """
    chosen_logratios, rejected_logratios = _pair_log_ratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    chosen_nll = torch.as_tensor(chosen_nll)
    if chosen_nll.shape != chosen_logratios.shape:
        raise ValueError(
            f"chosen_nll must have shape {tuple(chosen_logratios.shape)} (B,); "
            f"got {tuple(chosen_nll.shape)}"
        )
    _check_finite(chosen_nll, "chosen_nll")
    if not eta >= 0.0:
        raise ValueError(f"eta must be >= 0; got {eta}")
    dpo = F.softplus(-beta * (chosen_logratios - rejected_logratios)).mean()
    nll = chosen_nll.mean()
    stats = _pair_stats(chosen_logratios, rejected_logratios, beta)
    stats["dpo_loss"] = dpo.detach()
    stats["nll"] = nll.detach()
    return dpo + eta * nll, stats


def sft_nll_loss(logp: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """The SFT regularizer of RL: the length-normalized NLL of imitation-target completions.

        L_SFT = 1/B Σ_i NLL_i,   NLL_i = −(1/|y_i|) Σ_t log π(y_i,t | x_i, y_i,<t)

    Liu et al. 2024, "Provably mitigating overoptimization in RLHF: your SFT loss is
    implicitly an adversarial regularizer", arXiv 2405.16436: the pessimistic RL objective
    max_π min_r [J(π, r) − β KL] − η·(regret of r on the data) is equivalent to maximizing
    the reward plus η times the log-likelihood of the baseline policy's responses; in RL the
    loss is then L_RL + η · L_SFT with y_i sampled from the baseline (base) policy π0, or taken
    from the chosen data. NLL_i is normalized per completion as in ``rpo_loss``, so η means the
    same in DAA's RPO and here.

    Args:
        logp: log π of each target token (carries the gradient). Shape: (B, T)
        mask: 1 on the target completion's tokens (EOS included). Shape: (B, T)

    Returns:
        ``(loss, stats)``: ``loss`` a scalar; ``stats`` ``sft_nll`` (the loss, detached).
    """
    logp, mask = _logp_and_mask(logp, mask)
    lengths = mask.sum(dim=1)
    if bool((lengths == 0).any()):
        raise ValueError("mask: every target completion needs at least one token")
    nll = (-(logp * mask).sum(dim=1) / lengths).mean()
    return nll, {"sft_nll": nll.detach()}


# --------------------------------------------------------------------------------------
# Registries: the DAA losses and the reward-model objectives
# --------------------------------------------------------------------------------------

DAA_LOSSES.register(
    "dpo",
    dpo_loss,
    paper="Rafailov et al. 2023, arXiv 2305.18290",
    params={"label_smoothing": "ε of conservative DPO (0: plain DPO)"},
)
DAA_LOSSES.register("ipo", ipo_loss, paper="Azar et al. 2023, arXiv 2310.12036")
DAA_LOSSES.register("slic", slic_loss, paper="Zhao et al. 2023, arXiv 2305.10425 (hinge form)")
DAA_LOSSES.register(
    "rpo",
    rpo_loss,
    paper="Liu et al. 2024, arXiv 2405.16436",
    params={"eta": "η, the weight of the chosen completion's length-normalized NLL"},
    needs_nll=True,
)
RM_OBJECTIVES.register(
    "bradley_terry",
    bradley_terry_loss,
    paper="Bradley & Terry 1952; Ouyang et al. 2022, arXiv 2203.02155",
    params={
        "label_smoothing": "ε: weight of the flipped label (robust to label noise)",
        "center_coef": "c: weight of the (r_c + r_r)² centering term",
    },
)

# The variants of issue 14 (ordinal, noise_robust, armo), ODIN and the pairwise preference
# model (issue 18) register in RM_OBJECTIVES from their modules.
from goodhartlab.core import armo as _armo  # noqa: E402,F401
from goodhartlab.core import length_bias as _length_bias  # noqa: E402,F401
from goodhartlab.core import pairwise as _pairwise  # noqa: E402,F401
from goodhartlab.core import pal as _pal  # noqa: E402,F401
from goodhartlab.core import reform as _reform  # noqa: E402,F401
from goodhartlab.core import rm_objectives as _rm_objectives  # noqa: E402,F401
