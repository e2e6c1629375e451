"""Reward-model objectives beyond plain Bradley-Terry (issue 14), as pure functions of tensors.

Each objective returns ``(loss, stats)`` like :func:`goodhartlab.core.losses.bradley_terry_loss`
and is registered in ``RM_OBJECTIVES``. Besides the two reward vectors an objective may need
per-pair inputs that the training loop computes from the pairs before training (the entry's
``needs``): ``"grade"`` (graded preference labels, ``data.grades``) or ``"strength"`` and
``"suspect"`` (preference strength from a cross-fitted ensemble, ``train.rm_pair_inputs``).
Every objective scores a response with one scalar, so a trained model is a plain
``RewardModel``.

- ``ordinal``: ordinal probabilistic reward from graded preferences (Chen et al. 2026,
  "Learning Ordinal Probabilistic Reward from Preferences", arXiv 2602.12660), with the rating
  distribution an ordered logit of the scalar reward.
- ``noise_robust``: Bradley-Terry with the noisy-label remedies of Wang et al. 2024,
  "Secrets of RLHF in Large Language Models Part II: Reward Modeling", arXiv 2401.06080:
  ensemble preference strength, flipping (or down-weighting) the weakest pairs, an adaptive
  margin and label smoothing.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from goodhartlab.registry import RM_OBJECTIVES

SuspectAction = Literal["flip", "downweight"]


# ---------------------------------------------------------------------------------------------
# Ordinal probabilistic reward (OPRM)
# ---------------------------------------------------------------------------------------------


def ordinal_thresholds(levels: int, spacing: float) -> Tensor:
    """The K − 1 fixed cut points of the ordered logit: θ_k = spacing · (k − K/2), k = 1..K−1.

    Symmetric around 0, so a reward of 0 puts the median rating in the middle of the scale.

    >>> ordinal_thresholds(3, 2.0).tolist()
    [-1.0, 1.0]
    """
    if levels < 2:
        raise ValueError(f"ordinal_levels: expected at least 2 rating levels, got {levels}")
    if not spacing > 0:
        raise ValueError(f"ordinal_spacing: expected a value > 0, got {spacing}")
    k = torch.arange(1, levels, dtype=torch.float64)
    return spacing * (k - levels / 2)


def ordinal_rating_probs(r: Tensor, thresholds: Tensor) -> Tensor:
    """Distribution over K ordinal ratings given a scalar reward (cumulative-link model).

        P(S ≤ k | r) = σ(θ_k − r),   θ_0 = −∞, θ_K = +∞
        p(k | r)     = P(S ≤ k | r) − P(S ≤ k − 1 | r),   k = 1..K

    The ordered logit of McCullagh 1980 ("Regression models for ordinal data"). OPRM (Chen et
    al. 2026, arXiv 2602.12660) reads a free categorical over the ratings '1'..'9' from the LM
    head; here the distribution is a function of one scalar, which keeps the scorer a
    one-output reward model. S is stochastically increasing in r, so the scalar orders
    responses as the expected rating E[S | r] does.

    Args:
        r: rewards. Shape: (B,)
        thresholds: θ_1 < ... < θ_{K−1} (``ordinal_thresholds``). Shape: (K − 1,)

    Returns:
        p(k | r). Shape: (B, K); rows sum to 1.
    """
    assert r.ndim == 1, r.shape
    assert thresholds.ndim == 1, thresholds.shape
    theta = thresholds.to(r.device, r.dtype)
    cdf = torch.sigmoid(theta.unsqueeze(0) - r.unsqueeze(1))  # (B, K − 1)
    zeros = torch.zeros_like(r).unsqueeze(1)
    ones = torch.ones_like(r).unsqueeze(1)
    cdf = torch.cat([zeros, cdf, ones], dim=1)  # (B, K + 1): P(S ≤ 0) = 0 ... P(S ≤ K) = 1
    return (cdf[:, 1:] - cdf[:, :-1]).clamp_min(0.0)


def ordinal_preference_loss(
    r_chosen: Tensor,
    r_rejected: Tensor,
    *,
    grade: Tensor,
    margin: Tensor | None = None,
    ordinal_levels: int = 9,
    ordinal_spacing: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Ordinal probabilistic preference loss: the joint rating mass of a pair of grade g must
    lie in the band where the chosen rating exceeds the rejected one by at least g.

    With p_c = p(· | r_c), p_r = p(· | r_r) (``ordinal_rating_probs``, K levels) and the joint
    rating matrix J_ij = p_c(i) p_r(j) of the two independent ratings,

        P_g = P(S_c − S_r ≥ g) = Σ_{i − j ≥ g} p_c(i) p_r(j)
        L   = − mean_b log P_{g_b}

    For g = 1 this is OPRM's closed-form preference probability P(S_c > S_r), the sum of the
    strictly lower triangle of J (Chen et al. 2026, arXiv 2602.12660, sec. 4), whose negative
    log is its training loss. Region Flooding Tuning (sec. 5) confines the joint mass to the
    sub-region that a quality annotation names; our annotation is the pair's grade (how much
    better chosen is, ``data.grades``: the gold margin binned), and its region the band
    i − j ≥ g, a lower-triangular region that shrinks as the grade grows. The paper's grades
    are absolute ratings of each response; ours are pair-level (as Llama 2's "significantly /
    slightly better"). Ties (S_c = S_r) count as not preferred, as in the strict triangle.

    Args:
        r_chosen: rewards of the preferred completions. Shape: (B,)
        r_rejected: rewards of the other completions. Shape: (B,)
        grade: preference grade g ≥ 1 of each pair (integer valued; g < K). Shape: (B,)
        margin: ignored (accepted so that the training loop can pass it to any objective).
        ordinal_levels: K ≥ 2, the number of ratings (OPRM: 9).
        ordinal_spacing: distance between adjacent cut points θ_k, in reward units.

    Returns:
        ``(loss, stats)``: ``accuracy`` (r_c > r_r strictly), ``margin_mean``, ``reward_mean``,
        ``bt_loss`` (as in ``bradley_terry_loss``), ``p_preferred`` (mean P(S_c > S_r)),
        ``p_region`` (mean P_g), ``expected_rating_gap`` (mean E[S_c] − E[S_r]).
    """
    assert r_chosen.ndim == 1, r_chosen.shape
    assert r_rejected.shape == r_chosen.shape, (r_chosen.shape, r_rejected.shape)
    assert grade.shape == r_chosen.shape, (grade.shape, r_chosen.shape)
    del margin
    theta = ordinal_thresholds(ordinal_levels, ordinal_spacing)
    g = grade.to(r_chosen.device).long()
    if bool((g < 1).any()) or bool((g >= ordinal_levels).any()):
        raise ValueError(
            f"grade: expected grades in [1, {ordinal_levels - 1}] for {ordinal_levels} rating "
            f"levels; got {sorted(set(g.tolist()))}"
        )
    p_c = ordinal_rating_probs(r_chosen, theta)  # (B, K)
    p_r = ordinal_rating_probs(r_rejected, theta)
    levels = torch.arange(ordinal_levels, device=r_chosen.device)
    gap = levels.view(1, -1, 1) - levels.view(1, 1, -1)  # (1, K, K): i − j
    joint = p_c.unsqueeze(2) * p_r.unsqueeze(1)  # (B, K, K)
    p_region = (joint * (gap >= g.view(-1, 1, 1))).sum(dim=(1, 2))
    # The clamp only guards log(0) where a float32 probability underflows.
    loss = -torch.log(p_region.clamp_min(1e-12)).mean()

    with torch.no_grad():
        reward_gap = r_chosen - r_rejected
        ratings = torch.arange(1, ordinal_levels + 1, device=r_chosen.device, dtype=p_c.dtype)
        stats = {
            "accuracy": (reward_gap > 0).float().mean(),
            "margin_mean": reward_gap.mean(),
            "reward_mean": torch.cat([r_chosen, r_rejected]).mean(),
            "bt_loss": F.softplus(-reward_gap).mean(),
            "p_preferred": (joint * (gap >= 1)).sum(dim=(1, 2)).mean(),
            "p_region": p_region.mean(),
            "expected_rating_gap": ((p_c - p_r) * ratings).sum(dim=1).mean(),
        }
    return loss, {k: v.detach() for k, v in stats.items()}


# ---------------------------------------------------------------------------------------------
# Noise-robust preference learning (Secrets of RLHF, Part II)
# ---------------------------------------------------------------------------------------------


def preference_strength(
    r_members_chosen: Tensor, r_members_rejected: Tensor
) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of the preference strength over an ensemble.

        d_{m,i} = r_m(x_i, y_c,i) − r_m(x_i, y_r,i)
        μ̂_i = 1/M Σ_m d_{m,i},   σ̂_i = sqrt(1/M Σ_m (d_{m,i} − μ̂_i)²)

    Wang et al. 2024, "Secrets of RLHF in Large Language Models Part II", arXiv 2401.06080,
    sec. 2.1 (eq. 3). σ̂ is the population standard deviation (0 for one member).

    Args:
        r_members_chosen: each member's rewards of the chosen completions. Shape: (M, B)
        r_members_rejected: the same for the rejected completions. Shape: (M, B)

    Returns:
        ``(mu, sigma)``, each of shape (B,).
    """
    assert r_members_chosen.ndim == 2, r_members_chosen.shape
    assert r_members_rejected.shape == r_members_chosen.shape, (
        r_members_chosen.shape,
        r_members_rejected.shape,
    )
    d = r_members_chosen - r_members_rejected
    return d.mean(dim=0), d.std(dim=0, correction=0)


def flag_suspect_pairs(strength: Tensor, fraction: float) -> Tensor:
    """The ``round(fraction · B)`` pairs of lowest preference strength: likely flipped labels.

    Wang et al. 2024 (arXiv 2401.06080, sec. 2.2) find the lowest-strength tenth of the data
    mostly mislabelled and flip it. Ties in strength go to the lower index (a stable sort).

    Args:
        strength: μ̂ per pair (``preference_strength``). Shape: (B,)
        fraction: in [0, 1).

    Returns:
        Bool mask of the suspects. Shape: (B,)

    >>> flag_suspect_pairs(torch.tensor([0.5, -2.0, 1.0, -0.1]), 0.5).tolist()
    [False, True, False, True]
    """
    assert strength.ndim == 1, strength.shape
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"suspect_fraction: expected a value in [0, 1), got {fraction}")
    k = round(fraction * strength.numel())
    suspect = torch.zeros_like(strength, dtype=torch.bool)
    if k > 0:
        order = torch.sort(strength, stable=True).indices
        suspect[order[:k]] = True
    return suspect


def detection_precision_recall(suspect: Tensor, flipped: Tensor) -> dict[str, float]:
    """How well ``suspect`` finds the known flipped labels.

        precision = |suspect ∩ flipped| / |suspect|,  recall = |suspect ∩ flipped| / |flipped|

    ``chance_precision`` is the flip rate, what a random choice of suspects would reach.
    NaN where a denominator is 0.

    Args:
        suspect: flagged pairs. Shape: (B,)
        flipped: pairs whose label noise flipped them (``PreferencePair.flipped``). Shape: (B,)
    """
    assert suspect.ndim == 1 and suspect.shape == flipped.shape, (suspect.shape, flipped.shape)
    s, f = suspect.bool(), flipped.bool()
    hit = int((s & f).sum())
    n_s, n_f, n = int(s.sum()), int(f.sum()), s.numel()
    nan = float("nan")
    return {
        "n_pairs": n,
        "n_suspect": n_s,
        "n_flipped": n_f,
        "n_caught": hit,
        "precision": hit / n_s if n_s else nan,
        "recall": hit / n_f if n_f else nan,
        "chance_precision": n_f / n if n else nan,
    }


def noise_robust_bt_loss(
    r_chosen: Tensor,
    r_rejected: Tensor,
    *,
    strength: Tensor,
    suspect: Tensor,
    margin: Tensor | None = None,
    suspect_action: SuspectAction = "flip",
    suspect_weight: float = 0.0,
    strength_margin: float = 1.0,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Bradley-Terry with flipped (or down-weighted) suspect labels, an adaptive margin from the
    ensemble's preference strength, and label smoothing.

    With Δ_i = r_c,i − r_r,i, s_i = −1 for a suspect under "flip" (else +1), w_i = ``suspect_weight``
    for a suspect under "downweight" (else 1), the adaptive margin
    m_i = λ · max(0, s_i μ̂_i) (λ = ``strength_margin``) and z_i = s_i Δ_i − m_i:

        ℓ_i = (1 − ε) · (−log σ(z_i)) + ε · (−log σ(−z_i))
        L   = Σ_i w_i ℓ_i / Σ_i w_i

    Wang et al. 2024, "Secrets of RLHF in Large Language Models Part II", arXiv 2401.06080,
    sec. 2.2: flipping the labels of the lowest-strength pairs, label smoothing (ε) and the
    adaptive margin −log σ(r_c − r_r − μ̂) that asks confident pairs for a larger gap. Where we
    differ: the margin is clamped at 0 (the paper's μ̂ may be negative, which would reward the
    wrong order on ambiguous pairs), and "downweight" is the soft alternative to flipping
    (weight 0 drops the suspects). The strengths come from an ensemble the training loop
    cross-fits before training (``train.rm_pair_inputs``), so no member vouches for a label
    it was trained on; the paper scores the members' own training data.

    Args:
        r_chosen: rewards of the (labelled) preferred completions. Shape: (B,)
        r_rejected: rewards of the other completions. Shape: (B,)
        strength: μ̂, the ensemble's mean r_c − r_r for each pair. Shape: (B,)
        suspect: pairs flagged as likely flipped (``flag_suspect_pairs``). Shape: (B,)
        margin: ignored (the margin here is the adaptive one).
        suspect_action: "flip" (train on the reversed label) or "downweight".
        suspect_weight: w of a suspect under "downweight", in [0, 1].
        strength_margin: λ ≥ 0; 0 turns the adaptive margin off.
        label_smoothing: ε in [0, 0.5).

    Returns:
        ``(loss, stats)``: ``accuracy`` (r_c > r_r strictly, against the given labels),
        ``margin_mean``, ``reward_mean``, ``bt_loss`` (as in ``bradley_terry_loss``),
        ``suspect_fraction`` (of the batch), ``adaptive_margin_mean`` (mean m_i).
    """
    assert r_chosen.ndim == 1, r_chosen.shape
    assert r_rejected.shape == r_chosen.shape, (r_chosen.shape, r_rejected.shape)
    assert strength.shape == r_chosen.shape, (strength.shape, r_chosen.shape)
    assert suspect.shape == r_chosen.shape, (suspect.shape, r_chosen.shape)
    del margin
    if suspect_action not in ("flip", "downweight"):
        raise ValueError(f"suspect_action: expected 'flip' or 'downweight', got {suspect_action!r}")
    if not 0.0 <= suspect_weight <= 1.0:
        raise ValueError(f"suspect_weight: expected a value in [0, 1], got {suspect_weight}")
    if strength_margin < 0.0:
        raise ValueError(f"strength_margin: expected a value >= 0, got {strength_margin}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing: expected a value in [0, 0.5), got {label_smoothing}")

    suspect = suspect.to(r_chosen.device).bool()
    mu = strength.to(r_chosen.device, r_chosen.dtype).detach()
    ones = torch.ones_like(r_chosen)
    if suspect_action == "flip":
        sign, weight = torch.where(suspect, -ones, ones), ones
    else:
        sign, weight = ones, torch.where(suspect, suspect_weight * ones, ones)
    adaptive_margin = strength_margin * (sign * mu).clamp_min(0.0)
    reward_gap = r_chosen - r_rejected
    z = sign * reward_gap - adaptive_margin
    per_pair = (1.0 - label_smoothing) * F.softplus(-z) + label_smoothing * F.softplus(z)
    # All weights 0 (a batch of suspects, dropped): a zero loss that still has a graph.
    loss = (weight * per_pair).sum() / weight.sum().clamp_min(1e-12)

    with torch.no_grad():
        stats = {
            "accuracy": (reward_gap > 0).float().mean(),
            "margin_mean": reward_gap.mean(),
            "reward_mean": torch.cat([r_chosen, r_rejected]).mean(),
            "bt_loss": F.softplus(-reward_gap).mean(),
            "suspect_fraction": suspect.float().mean(),
            "adaptive_margin_mean": adaptive_margin.mean(),
        }
    return loss, {k: v.detach() for k, v in stats.items()}


RM_OBJECTIVES.register(
    "ordinal",
    ordinal_preference_loss,
    description="Ordinal probabilistic reward: a pair of grade g puts its joint rating mass "
    "on S_c - S_r >= g (needs grades).",
    paper="Chen et al. 2026, 'Learning Ordinal Probabilistic Reward from Preferences', "
    "arXiv 2602.12660 (OPRM + region flooding on pair grades)",
    params={
        "ordinal_levels": "K, the number of ordinal ratings (OPRM: 9)",
        "ordinal_spacing": "distance between the ordered logit's cut points (reward units)",
    },
    version="1",
    needs=("grade",),
)
RM_OBJECTIVES.register(
    "noise_robust",
    noise_robust_bt_loss,
    description="Bradley-Terry that flips or down-weights the lowest-strength pairs, with an "
    "adaptive margin and label smoothing (needs a cross-fitted ensemble's strengths).",
    paper="Wang et al. 2024, 'Secrets of RLHF in Large Language Models Part II', arXiv 2401.06080",
    params={
        "suspect_action": "what to do with suspect (lowest-strength) pairs: flip | downweight",
        "suspect_weight": "weight of a suspect pair under 'downweight' (0 drops it)",
        "strength_margin": "λ of the adaptive margin λ·max(0, μ̂) (0: no margin)",
        "label_smoothing": "ε: weight of the flipped label",
    },
    version="1",
    needs=("strength", "suspect"),
)
