"""Training losses as pure functions of tensors: each returns ``(loss, stats)``.

``stats`` is a dict of detached scalar tensors; the training loop decides what to log.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


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
