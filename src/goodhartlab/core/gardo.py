"""GARDO: gated KL, and diversity-aware reward amplification.

He, Ye, Liu, Liang, Wang, Yuan, Wang, Mao, Wan and Pan 2025, "GARDO: Reinforcing Diffusion
Models without Reward Hacking", arXiv 2512.24138 (reference code: tinnerhrhe/GARDO,
``scripts/train_sd3_grpo_gardo.py`` and ``flow_grpo/stat_tracking.py``, read to check the
formulas below; none of it is copied). Three parts, each a switch of ``RLConfig``:

1. Gated KL: the KL penalty only on the samples whose reward is uncertain, measured by how
   the reward models rank the sample within the batch (:func:`win_rates`,
   :func:`member_disagreement`, :func:`proxy_overestimation`), the gate the most uncertain
   fraction of the batch (:func:`uncertainty_gate`).
2. Adaptive reference: the penalty's reference reset to the current policy every K steps
   (a loop matter: ``optimize.gardo``; no formula here).
3. Diversity-aware amplification: a sample above its group's mean reward has its advantage
   multiplied by its distance to its nearest group neighbour over the group's mean such
   distance (:func:`nearest_neighbour_distance`, :func:`diversity_weights`).

Where our setting differs from the paper's: the paper's "auxiliary" reward models are other
image scorers (Aesthetic, ImageReward) beside the optimized one; here they are the proxy
ensemble's members. Its embedding is DINOv3 image features; ours is any (B, D) embedding
(the loop passes token n-gram counts).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "adapted_gate_fraction",
    "diversity_weights",
    "mean_nonnegative_uncertainty",
    "member_disagreement",
    "nearest_neighbour_distance",
    "proxy_overestimation",
    "uncertainty_gate",
    "win_rates",
]


def win_rates(r: Tensor) -> Tensor:
    """Each item's win rate within the batch, under each reward model.

        w_m(i) = 1/(B − 1) · Σ_{j ≠ i} ( 1[r_m(i) > r_m(j)] + ½ · 1[r_m(i) = r_m(j)] )

    GARDO compares reward models through the ranks they give a sample in the batch, not
    their raw scores (the released code ranks each reward over the gathered batch), so
    the arbitrary offset and scale of each member (Bradley-Terry fixes neither) drop out.
    The win rate is the rank rescaled to [0, 1] (1: best of the batch), ties counted half.

    Args:
        r: rewards of M models for B items. Shape: (M, B), B ≥ 2.

    Returns:
        Shape: (M, B).
    """
    assert r.ndim == 2, r.shape
    B = r.shape[1]
    if B < 2:
        raise ValueError(f"win_rates: a win rate needs B >= 2 items; got {B}")
    diff = r.unsqueeze(2) - r.unsqueeze(1)  # (M, B, B): r(i) − r(j)
    wins = (diff > 0).to(r.dtype) + 0.5 * (diff == 0).to(r.dtype)
    # The diagonal (j = i) is a tie and counted ½; take it back out.
    return (wins.sum(dim=2) - 0.5) / (B - 1)


def member_disagreement(r_members: Tensor) -> Tensor:
    """Uncertainty as the members' disagreement about where an item ranks in the batch.

        U(i) = sqrt( (1/M) Σ_m (w_m(i) − w̄(i))² ),   w̄(i) = (1/M) Σ_m w_m(i)

    the population standard deviation over members of the win rates (:func:`win_rates`). The
    paper's ensemble is one optimized reward and K auxiliaries; this symmetric form treats
    every member alike (see :func:`proxy_overestimation` for the paper's one-sided form).

    Args:
        r_members: rewards of M members for B items. Shape: (M, B).

    Returns:
        Shape: (B,); 0 for M = 1.
    """
    assert r_members.ndim == 2, r_members.shape
    w = win_rates(r_members)
    return (w - w.mean(dim=0, keepdim=True)).square().mean(dim=0).sqrt()


def proxy_overestimation(r_proxy: Tensor, r_aux: Tensor) -> Tensor:
    """Uncertainty as how much higher the optimized reward ranks an item than the others do.

        U(i) = w_proxy(i) − (1/K) Σ_k w_k(i)

    with win rates over the batch (:func:`win_rates`). Positive: the optimized reward ranks
    the item above where the auxiliary models put it, the sample whose reward is the one to
    distrust. The released code takes the gap of ranks the other way round (rank 1 best,
    rank_proxy − mean rank_aux, the top of its positive part gated), which flags items the
    proxy ranks below the auxiliaries; we follow the paper's stated aim, regularizing where
    the proxy's reward is unreliably high.

    Args:
        r_proxy: the optimized reward. Shape: (B,)
        r_aux: the auxiliary models' rewards. Shape: (K, B)

    Returns:
        Shape: (B,), in [−1, 1].
    """
    assert r_proxy.ndim == 1, r_proxy.shape
    assert r_aux.ndim == 2 and r_aux.shape[1] == r_proxy.shape[0], (r_aux.shape, r_proxy.shape)
    return win_rates(r_proxy.unsqueeze(0))[0] - win_rates(r_aux.to(r_proxy.dtype)).mean(dim=0)


def uncertainty_gate(
    u: Tensor, fraction: float | None = 0.1, threshold: float | None = None
) -> Tensor:
    """Which samples the KL penalty applies to: the most uncertain ones.

        g(i) = 1[ i among the ⌈f · B⌉ largest U ]     (top fraction f), or
        g(i) = 1[ U(i) > τ ]                           (threshold τ)

    GARDO penalizes a small fraction of the batch (the released code: the top 10 % by its
    uncertainty at first, the fraction then adapted between 2 % and 20 % by
    :func:`adapted_gate_fraction`; the code takes the fraction of the samples whose
    uncertainty is ≥ 0, we of the whole batch). Ties at the cut are broken by position (the earlier row), so exactly ⌈f · B⌉
    rows are gated.

    Args:
        u: uncertainty of each sample. Shape: (B,)
        fraction: f in (0, 1]; used when ``threshold`` is None.
        threshold: τ; when given, the gate is U > τ.

    Returns:
        Shape: (B,), bool.
    """
    assert u.ndim == 1, u.shape
    if threshold is not None:
        return u > threshold
    if fraction is None or not 0 < fraction <= 1:
        raise ValueError(f"fraction: expected a number in (0, 1], got {fraction}")
    k = min(u.shape[0], math.ceil(fraction * u.shape[0] - 1e-9))
    order = torch.sort(u, descending=True, stable=True).indices
    gate = torch.zeros_like(u, dtype=torch.bool)
    gate[order[:k]] = True
    return gate


def mean_nonnegative_uncertainty(u: Tensor) -> float:
    """The signal the adaptive gate fraction follows: the batch's mean non-negative uncertainty.

        s = mean{ U(i) : U(i) ≥ 0 }

    The released code (``scripts/train_sd3_grpo_gardo.py``, l. 834-835) feeds its controller
    the uncertainties of the batch that are ≥ 0 and the controller takes their mean (l. 231,
    233, 236; commit 1cc77fb). For :func:`member_disagreement` (U ≥ 0) that is the batch's mean; for
    :func:`proxy_overestimation` it is the mean overestimation of the samples the proxy ranks
    at or above the auxiliaries (never empty: win rates sum to B/2 under every model, so the
    gaps sum to 0 and one of them is ≥ 0).

    Args:
        u: uncertainty of each sample. Shape: (B,)

    Returns:
        s, a float.
    """
    assert u.ndim == 1, u.shape
    nonnegative = u[u >= 0]
    if nonnegative.numel() == 0:
        raise ValueError("mean_nonnegative_uncertainty: no uncertainty is >= 0 in the batch")
    return float(nonnegative.double().mean())


def adapted_gate_fraction(
    fraction: float,
    signal: float,
    history: Tensor,
    *,
    rate: float = 0.1,
    low: float = 0.02,
    high: float = 0.2,
) -> float:
    """GARDO's adaptive gate fraction: more of the batch penalized when its uncertainty
    reaches a new high over the recent steps, less at a new low.

        f_t = clip( f_{t−1} · (1 + α)   if s_t > max(H_t)
                    f_{t−1} · (1 − α)   if s_t < min(H_t)
                    f_{t−1}             otherwise,           [f_lo, f_hi] )

    with s_t this step's signal (:func:`mean_nonnegative_uncertainty`) and H_t the signals of
    the previous W steps; with no history (the first step) f_t = clip(f_{t−1}), f_0 the
    initial fraction. f_t gates this step's batch (:func:`uncertainty_gate`), then s_t joins
    the history. The released code's ``RiskCompensator`` (``scripts/train_sd3_grpo_gardo.py``,
    l. 219-238, the same in ``train_flux_grpo_gardo.py`` and ``train_sd3_nft_gardo.py``):
    f_0 = 0.1, α = 0.1, [f_lo, f_hi] = [0.02, 0.2], W = 20 (l. 220-226, 237-238); it is
    updated before the batch's gate is drawn (l. 835-836). The rule compares s_t with the
    history's extremes only, so any positive rescaling of U (the code's ranks, our win
    rates) leaves it unchanged.

    Args:
        fraction: f_{t−1}.
        signal: s_t.
        history: the previous signals H_t (the caller keeps the last W). Shape: (W',), W' ≥ 0.
        rate: α in (0, 1).
        low, high: the bounds, 0 < low ≤ high ≤ 1.

    Returns:
        f_t, a float.
    """
    assert history.ndim == 1, history.shape
    if not 0 < rate < 1:
        raise ValueError(f"rate: expected α in (0, 1), got {rate}")
    if not 0 < low <= high <= 1:
        raise ValueError(f"low, high: expected 0 < low <= high <= 1, got {low}, {high}")
    if history.numel() > 0:
        if signal > float(history.max()):
            fraction = fraction * (1 + rate)
        elif signal < float(history.min()):
            fraction = fraction * (1 - rate)
    return min(max(fraction, low), high)


def nearest_neighbour_distance(emb: Tensor, group_size: int) -> Tensor:
    """Each sample's cosine distance to its nearest neighbour among its group's others.

        d(i) = min_{j ∈ group(i), j ≠ i} ( 1 − cos(e_i, e_j) )

    the paper's diversity of a sample (its DINOv3 feature against the other images of the
    same prompt; the released code takes the minimum distance). Rows are grouped
    consecutively: rows g·G .. g·G + G − 1 are one prompt's. A zero embedding has cosine 0
    with everything.

    Args:
        emb: one embedding per sample. Shape: (B, D)
        group_size: G ≥ 2, dividing B.

    Returns:
        Shape: (B,), in [0, 2].
    """
    assert emb.ndim == 2, emb.shape
    B, G = emb.shape[0], group_size
    if G < 2 or B % G:
        raise ValueError(f"group_size: expected G >= 2 dividing B = {B}; got {G}")
    e = emb.to(torch.float64)
    e = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
    e = e.view(B // G, G, -1)
    dist = 1.0 - (e @ e.transpose(1, 2)).clamp(-1.0, 1.0)  # (groups, G, G)
    dist = dist + torch.diag_embed(torch.full((B // G, G), math.inf, dtype=dist.dtype))
    return dist.amin(dim=2).reshape(B).to(emb.dtype if emb.is_floating_point() else torch.float32)


def diversity_weights(r: Tensor, d: Tensor, group_size: int) -> Tensor:
    """GARDO's diversity-aware advantage multiplier.

        m(i) = d(i) / d̄_g   if r(i) ≥ r̄_g,   else 1

    with r̄_g and d̄_g the mean reward and the mean diversity (:func:`nearest_neighbour_distance`)
    of sample i's group g. The advantage becomes A(i) · m(i): a better-than-average sample is
    pushed up more the more it differs from its group, a worse one is pushed down as before,
    so diversity is rewarded only where quality already is. (The released code multiplies the
    centered reward r − r̄_g; GRPO's division by the group's std is a per-group constant and
    leaves the amplification as it is.) A group whose samples are all identical (d̄_g = 0)
    gets m = 1.

    Args:
        r: the reward the advantages are computed from. Shape: (B,)
        d: each sample's diversity. Shape: (B,)
        group_size: G, dividing B (rows grouped consecutively).

    Returns:
        Shape: (B,).
    """
    assert r.ndim == 1 and d.shape == r.shape, (r.shape, d.shape)
    B, G = r.shape[0], group_size
    if G < 1 or B % G:
        raise ValueError(f"group_size: expected G >= 1 dividing B = {B}; got {G}")
    rg, dg = r.view(-1, G), d.to(r.dtype).view(-1, G)
    d_mean = dg.mean(dim=1, keepdim=True)
    amplified = torch.where(d_mean > 0, dg / d_mean.clamp_min(1e-12), torch.ones_like(dg))
    above = rg >= rg.mean(dim=1, keepdim=True)
    return torch.where(above, amplified, torch.ones_like(dg)).reshape(B)
