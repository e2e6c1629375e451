"""The occupancy-measure regularizer in the RL loop (``RLConfig.occupancy_reg``).

r_final ← r_final − λ · t(y), with t the divergence's per-sample reward term
(:mod:`goodhartlab.core.occupancy`) from the sequence log-ratio of the batch's completions
(sampling-time log-probs against the frozen base policy), and λ = ``occupancy_coef`` × the
proxy's standard deviation on base-policy samples (Laidlaw et al. 2024's rule,
``core.occupancy.occupancy_lambda``) or ``occupancy_coef`` itself (``occupancy_scale``
"none"). The penalty sits in the sequence reward, so GRPO, RLOO and PPO (on the last token)
all take it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from goodhartlab.core.occupancy import (
    OCCUPANCY_DIVERGENCES,
    occupancy_lambda,
    sequence_log_ratio,
)
from goodhartlab.measure.evaluate import Rollouts, completion_logprobs

__all__ = ["occupancy_coef", "occupancy_penalized"]


def occupancy_coef(run: Any) -> float:
    """λ of the run: ``occupancy_coef`` × σ of the proxy on the base-policy samples of the
    calibration prompts (the pipeline's cached reference rewards: sampled and scored once,
    deterministically per prompt), or ``occupancy_coef`` with ``occupancy_scale`` "none"."""
    cfg = run.cfg
    if cfg.occupancy_scale == "none":
        return float(cfg.occupancy_coef)
    pipeline = run.pipeline
    return occupancy_lambda(
        pipeline.reference_rewards(pipeline.calibration_prompts), cfg.occupancy_coef
    )


def occupancy_penalized(
    run: Any, rollouts: Rollouts, logp_old: Tensor, logp_ref: Tensor | None, r_final: Tensor
) -> tuple[Tensor, dict[str, float]]:
    """The reward with the occupancy penalty, and the step's statistics.

    Args:
        run: the RL run (``optimize.rl._Run``).
        rollouts: the step's completions.
        logp_old: their sampling-time log-probs. Shape: (B, T).
        logp_ref: their log-probs under the base policy, or None (then computed here).
            Shape: (B, T).
        r_final: the reward so far (after shaping and any KL penalty). Shape: (B,).

    Returns:
        r_final − λ·t (Shape: (B,)), and ``occ_<divergence>`` (the batch estimate),
        ``occ_lambda``, ``occ_term`` (mean λ·t) and ``occ_clipfrac``.
    """
    cfg = run.cfg
    if logp_ref is None:
        with torch.no_grad(), run.autocast():
            logp_ref = completion_logprobs(run.reference, rollouts, cfg.temperature)
    log_ratio = sequence_log_ratio(logp_old.double(), logp_ref.double(), rollouts.completion_mask)
    penalty = OCCUPANCY_DIVERGENCES[cfg.occupancy_reg](log_ratio)
    lam = occupancy_coef(run)
    term = (lam * penalty.reward_terms).to(r_final.dtype).to(r_final.device)
    stats = {
        f"occ_{cfg.occupancy_reg}": float(penalty.value),
        "occ_lambda": lam,
        "occ_term": float(term.mean()),
        "occ_clipfrac": float(penalty.clipfrac),
    }
    return r_final - term, stats
