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
- ``causal_naive``, ``causal_ips``, ``causal_dr``: reward modeling from observational
  feedback (CausalRM, "Causal-Theoretic Reward Modeling for RLHF from Observational User
  Feedbacks"): only some pairs are observed (o_i = 1), with a propensity p_i that depends on
  their content; Bradley-Terry on the observed pairs only, inverse-propensity weighted, and
  doubly robust with an imputed error for every pair.
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


# ---------------------------------------------------------------------------------------------
# CausalRM: observational feedback with selection bias (IPS, DR)
# ---------------------------------------------------------------------------------------------


def observation_propensity(feature: Tensor, bias: float, slope: float, clip: float) -> Tensor:
    """The probability that a pair is observed: p_i = max(σ(α + β·x_i), c). Shape: (B,)

    α = ``bias``, β = ``slope``, x_i a per-pair feature of the content, c = ``clip`` ∈ [0, 1)
    (a floor, so that 1/p_i stays bounded; the standard clipping of IPS estimators).
    """
    if not 0.0 <= clip < 1.0:
        raise ValueError(f"clip: expected a value in [0, 1), got {clip}")
    return torch.sigmoid(bias + slope * feature).clamp_min(clip)


def fit_logistic(
    x: Tensor, y: Tensor, weights: Tensor | None = None, *, l2: float = 1e-6, iters: int = 50
) -> tuple[float, float]:
    """(α̂, β̂) of the 1-D logistic regression P(y = 1 | x) = σ(α + β·x), by Newton's method.

    Minimises Σ_i w_i · −[y_i log σ(α + βx_i) + (1 − y_i) log σ(−α − βx_i)] + (l2/2)(α² + β²)
    (w_i = ``weights``, default 1); the ridge term keeps separable data finite. Used for the estimated propensity (o on the
    propensity's feature) and the DR imputation model (label on the same feature).
    """
    x, y = x.double().flatten(), y.double().flatten()
    sw = torch.ones_like(x) if weights is None else weights.double().flatten()
    design = torch.stack([torch.ones_like(x), x], dim=1)
    w = torch.zeros(2, dtype=torch.float64)
    for _ in range(iters):
        p = torch.sigmoid(design @ w)
        grad = design.T @ (sw * (p - y)) + l2 * w
        curv = (sw * p * (1 - p)).unsqueeze(1)
        hess = design.T @ (design * curv) + l2 * torch.eye(2, dtype=x.dtype)
        step = torch.linalg.solve(hess, grad)
        w = w - step
        if float(step.abs().max()) < 1e-10:
            break
    return float(w[0]), float(w[1])


def _causal_stats(r_chosen: Tensor, r_rejected: Tensor, observed: Tensor) -> dict[str, Tensor]:
    gap = r_chosen - r_rejected
    with torch.no_grad():
        return {
            "accuracy": (gap > 0).float().mean(),
            "margin_mean": gap.mean(),
            "reward_mean": torch.cat([r_chosen, r_rejected]).mean(),
            "bt_loss": F.softplus(-gap).mean(),
            "observed_fraction": observed.float().mean(),
        }


def _check_causal(r_chosen: Tensor, r_rejected: Tensor, *per_pair: Tensor) -> None:
    assert r_chosen.ndim == 1, r_chosen.shape
    assert r_rejected.shape == r_chosen.shape, (r_chosen.shape, r_rejected.shape)
    for t in per_pair:
        assert t.shape == r_chosen.shape, (t.shape, r_chosen.shape)


def causal_naive_bt_loss(
    r_chosen: Tensor, r_rejected: Tensor, *, observed: Tensor, margin: Tensor | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Bradley-Terry on the observed pairs only (the naive estimator CausalRM corrects).

    With e_i = −log σ(r_c,i − r_r,i) and o_i ∈ {0, 1}:  L = Σ_i o_i e_i / Σ_i o_i
    (0, with a graph, for a batch without an observed pair). Biased when the observation
    depends on the content: it fits the observed distribution, not the full one.

    Args:
        r_chosen, r_rejected: rewards of the labelled chosen / rejected completion. Shape: (B,)
        observed: o_i, whether pair i's feedback is observed. Shape: (B,)
        margin: ignored.
    """
    _check_causal(r_chosen, r_rejected, observed)
    del margin
    o = observed.to(r_chosen.device, r_chosen.dtype)
    e = F.softplus(-(r_chosen - r_rejected))
    loss = (o * e).sum() / o.sum().clamp_min(1.0)
    return loss, _causal_stats(r_chosen, r_rejected, observed)


def causal_ips_bt_loss(
    r_chosen: Tensor,
    r_rejected: Tensor,
    *,
    observed: Tensor,
    propensity: Tensor,
    margin: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Inverse-propensity-scored Bradley-Terry (CausalRM's propensity-weighted objective).

    With e_i = −log σ(r_c,i − r_r,i), o_i the observation indicator and p̂_i its (clipped)
    propensity, over all B pairs of the batch, observed or not:

        L_IPS = (1/B) Σ_i (o_i / p̂_i) · e_i

    Since E[o_i] = p_i, L_IPS is unbiased for the full-data loss (1/B) Σ_i e_i when p̂ = p.
    CausalRM ("Causal-Theoretic Reward Modeling for RLHF from Observational User Feedbacks"),
    the propensity-reweighted loss; the paper's noise-aware surrogate term is not included.

    Args:
        r_chosen, r_rejected: rewards of the labelled chosen / rejected completion. Shape: (B,)
        observed: o_i ∈ {0, 1}. Shape: (B,)
        propensity: p̂_i ∈ (0, 1] (treated as a constant). Shape: (B,)
        margin: ignored.
    """
    _check_causal(r_chosen, r_rejected, observed, propensity)
    del margin
    o = observed.to(r_chosen.device, r_chosen.dtype)
    p = propensity.to(r_chosen.device, r_chosen.dtype).detach()
    if bool((p <= 0).any()):
        raise ValueError("propensity: expected values > 0 (clip it)")
    e = F.softplus(-(r_chosen - r_rejected))
    loss = (o / p * e).mean()
    stats = _causal_stats(r_chosen, r_rejected, observed)
    stats["ips_weight_mean"] = (o / p).mean().detach()
    return loss, stats


def causal_dr_bt_loss(
    r_chosen: Tensor,
    r_rejected: Tensor,
    *,
    observed: Tensor,
    propensity: Tensor,
    imputed_label: Tensor,
    margin: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Doubly robust Bradley-Terry (CausalRM's DR objective).

    With Δ_i = r_c,i − r_r,i, e_i = −log σ(Δ_i) the error under the observed label, q_i the
    imputation model's probability that the labelled chosen is preferred and the imputed error

        ê_i = q_i · (−log σ(Δ_i)) + (1 − q_i) · (−log σ(−Δ_i)),

        L_DR = (1/B) Σ_i [ ê_i + (o_i / p̂_i) · (e_i − ê_i) ]

    Unbiased for the full-data loss when either p̂ = p or ê_i = E[e_i] (double robustness).
    ê is a differentiable function of the model's rewards (with q_i fixed): unobserved pairs
    are trained toward the imputed label. CausalRM ("Causal-Theoretic Reward Modeling for
    RLHF from Observational User Feedbacks"), DR objective; the paper's noise-aware term is
    not included.

    Args:
        r_chosen, r_rejected: rewards of the labelled chosen / rejected completion. Shape: (B,)
        observed: o_i ∈ {0, 1}. Shape: (B,)
        propensity: p̂_i ∈ (0, 1] (treated as a constant). Shape: (B,)
        imputed_label: q_i ∈ [0, 1] (treated as a constant). Shape: (B,)
        margin: ignored.
    """
    _check_causal(r_chosen, r_rejected, observed, propensity, imputed_label)
    del margin
    o = observed.to(r_chosen.device, r_chosen.dtype)
    p = propensity.to(r_chosen.device, r_chosen.dtype).detach()
    q = imputed_label.to(r_chosen.device, r_chosen.dtype).detach()
    if bool((p <= 0).any()):
        raise ValueError("propensity: expected values > 0 (clip it)")
    gap = r_chosen - r_rejected
    e = F.softplus(-gap)
    e_hat = q * F.softplus(-gap) + (1.0 - q) * F.softplus(gap)
    loss = (e_hat + o / p * (e - e_hat)).mean()
    stats = _causal_stats(r_chosen, r_rejected, observed)
    stats["ips_weight_mean"] = (o / p).mean().detach()
    stats["imputed_error_mean"] = e_hat.mean().detach()
    return loss, stats


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
_CAUSAL_PAPER = (
    "CausalRM, 'Causal-Theoretic Reward Modeling for RLHF from Observational User Feedbacks' "
    "(propensity-weighted and doubly robust objectives; noise-aware term not included)"
)
_CAUSAL_SIM = {
    "causal_feature": "content feature the observation depends on: length_gap | gold_gap",
    "causal_obs_bias": "α of the simulated propensity σ(α + β·x)",
    "causal_obs_slope": "β of the simulated propensity σ(α + β·x)",
}
RM_OBJECTIVES.register(
    "causal_naive",
    causal_naive_bt_loss,
    description="Bradley-Terry on the observed pairs only of simulated observational feedback "
    "(selection-biased; the naive baseline of CausalRM).",
    paper=_CAUSAL_PAPER,
    params={},
    version="1",
    needs=("observed",),
    sim_params=_CAUSAL_SIM,
)
RM_OBJECTIVES.register(
    "causal_ips",
    causal_ips_bt_loss,
    description="Inverse-propensity-weighted Bradley-Terry on simulated observational "
    "feedback: (1/B) Σ o/p̂ · e.",
    paper=_CAUSAL_PAPER,
    params={},
    version="1",
    needs=("observed", "propensity"),
    sim_params=_CAUSAL_SIM,
)
RM_OBJECTIVES.register(
    "causal_dr",
    causal_dr_bt_loss,
    description="Doubly robust Bradley-Terry on simulated observational feedback: "
    "(1/B) Σ [ê + o/p̂ · (e − ê)] with an imputed error ê for every pair.",
    paper=_CAUSAL_PAPER,
    params={},
    version="1",
    needs=("observed", "propensity", "imputed_label"),
    sim_params=_CAUSAL_SIM,
)
