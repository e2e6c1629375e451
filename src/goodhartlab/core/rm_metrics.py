"""Metrics of a reward model on preference rows: best-of-k accuracy, calibration, length
bias, ensemble agreement and RewardBench's section weighting.

A row has one chosen completion and K >= 1 rejected ones (K = 1: a RewardBench pair; K = 3:
a RewardBench 2 best-of-4 row). Rows with fewer rejected completions than the widest row are
padded with NaN in ``r_rejected`` (and in lengths): NaN means *absent*, as in TRL's stacked
reward functions. Scores themselves must be finite; the caller checks that and names the row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Ties",
    "best_of_k_credit",
    "brier_score",
    "chosen_tied_at_top",
    "expected_calibration_error",
    "kendall_tau",
    "length_matched",
    "member_sign_agreement",
    "pairwise_chosen_probability",
    "pearson",
    "rank_correlation_interval",
    "section_scores",
    "section_total",
    "spearman",
]

#: How a tie at the top is credited: ``"strict"`` counts it as wrong (RewardBench's
#: ``1 if chosen > rejected else 0``); ``"split"`` gives 1/m when the chosen completion shares
#: the top score with m − 1 rejected ones (RewardBench 2's ``reroll_and_score_dataset``; 0.5
#: for a tied pair).
Ties = Literal["strict", "split"]


def _check_rows(r_chosen: Tensor, r_rejected: Tensor) -> tuple[Tensor, Tensor]:
    r_chosen = torch.as_tensor(r_chosen, dtype=torch.float64)
    r_rejected = torch.as_tensor(r_rejected, dtype=torch.float64)
    assert r_chosen.ndim == 1, r_chosen.shape
    assert r_rejected.ndim == 2 and r_rejected.shape[0] == r_chosen.shape[0], (
        r_chosen.shape,
        r_rejected.shape,
    )
    return r_chosen, r_rejected


def best_of_k_credit(r_chosen: Tensor, r_rejected: Tensor, ties: Ties = "strict") -> Tensor:
    """Credit of each row: whether the chosen completion outscores every rejected one.

    strict:  c_i = 1[r_c,i > max_j r_r,ij]
    split:   c_i = 1[r_c,i >= max_j r_r,ij] / (1 + #{j : r_r,ij = r_c,i})

    RewardBench (Lambert et al. 2024, arXiv 2403.13787; ``rewardbench.py`` and
    ``scripts/run_rm.py`` of the ``rewardbench`` package 0.1.4) scores a pair as
    ``1 if chosen > rejected else 0``: ``strict`` with K = 1. RewardBench 2 (Malik et al. 2025,
    arXiv 2506.01937) scores best-of-4 rows with ``reroll_and_score_dataset``: 1/m when the
    chosen completion is one of m completions sharing the maximum, else 0: ``split``.
    The mean credit of a subset is its accuracy. The "always longer" baseline is this
    function with lengths as scores, "always shorter" with negated lengths.

    Args:
        r_chosen: reward of the chosen completion. Shape: (B,).
        r_rejected: rewards of the rejected completions, NaN where a row has fewer than K.
            Shape: (B, K).
        ties: ``"strict"`` or ``"split"``.

    Returns:
        Credit in [0, 1], float64. Shape: (B,).
    """
    r_chosen, r_rejected = _check_rows(r_chosen, r_rejected)
    present = ~torch.isnan(r_rejected)
    if bool((~present.any(dim=1)).any()):
        raise ValueError("r_rejected: every row needs at least one rejected reward (not NaN)")
    top = torch.where(present, r_rejected, -torch.inf).amax(dim=1)
    if ties == "strict":
        return (r_chosen > top).double()
    if ties == "split":
        tied = ((r_rejected == r_chosen[:, None]) & present).sum(dim=1)
        return (r_chosen >= top).double() / (1 + tied).double()
    raise ValueError(f"ties: expected 'strict' or 'split', got {ties!r}")


def chosen_tied_at_top(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """Whether the chosen reward equals the best rejected one: r_c,i = max_j r_r,ij.

    Shapes: (B,), (B, K) with NaN for absent -> bool (B,).
    """
    r_chosen, r_rejected = _check_rows(r_chosen, r_rejected)
    top = torch.where(torch.isnan(r_rejected), -torch.inf, r_rejected).amax(dim=1)
    return r_chosen == top


def pairwise_chosen_probability(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """Bradley-Terry probability that the chosen completion wins each comparison.

    p_ij = σ(r_c,i − r_r,ij) (Bradley & Terry 1952); a best-of-k row gives K comparisons,
    flattened row-major; absent (NaN) rejected completions are dropped.

    Shapes: (B,), (B, K) -> (number of present comparisons,), float64.
    """
    r_chosen, r_rejected = _check_rows(r_chosen, r_rejected)
    present = ~torch.isnan(r_rejected)
    return torch.sigmoid(r_chosen[:, None] - r_rejected)[present]


def expected_calibration_error(p: Tensor, y: Tensor, n_bins: int = 10) -> float:
    """Top-label expected calibration error of binary forecasts, equal-width bins.

    conf_i = max(p_i, 1 − p_i), correct_i = 1[(p_i > 1/2) = y_i] (1/2 when p_i = 1/2);
    bins B_b = [1/2 + (b−1)w, 1/2 + bw), w = 1/(2 n_bins) (the last bin closed);
    ECE = Σ_b (|B_b| / n) · |mean_{B_b} correct − mean_{B_b} conf|
    (Naeini et al. 2015, AAAI; Guo et al. 2017, arXiv 1706.04599, eq. 3). Guo et al. bin the
    confidence over [0, 1]; a binary forecast's top-label confidence is at least 1/2, so the
    bins here cover [1/2, 1] and none is empty by construction.

    Args:
        p: forecast probability of outcome 1. Shape: (N,).
        y: the outcome, 0 or 1. Shape: (N,).
        n_bins: number of equal-width confidence bins, >= 1.

    Returns:
        ECE in [0, 1/2].
    """
    p = torch.as_tensor(p, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    assert p.ndim == 1 and y.shape == p.shape, (p.shape, y.shape)
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins: expected an integer >= 1, got {n_bins!r}")
    if p.numel() == 0:
        raise ValueError("p: expected at least one forecast")
    conf = torch.maximum(p, 1 - p)
    correct = torch.where(p == 0.5, 0.5, ((p > 0.5).double() == y).double())
    b = torch.clamp(((conf - 0.5) * 2 * n_bins).floor().long(), 0, n_bins - 1)
    n = p.numel()
    ece = 0.0
    for k in range(n_bins):
        in_bin = b == k
        m = int(in_bin.sum())
        if m:
            ece += m / n * abs(float(correct[in_bin].mean() - conf[in_bin].mean()))
    return ece


def brier_score(p: Tensor, y: Tensor) -> float:
    """Brier score of binary forecasts: (1/N) Σ_i (p_i − y_i)² (Brier 1950).

    Shapes: p (N,) forecast probability of outcome 1; y (N,) the outcome, 0 or 1.
    """
    p = torch.as_tensor(p, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    assert p.ndim == 1 and y.shape == p.shape, (p.shape, y.shape)
    if p.numel() == 0:
        raise ValueError("p: expected at least one forecast")
    return float((p - y).square().mean())


def pearson(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Pearson correlation Σ(x−x̄)(y−ȳ) / sqrt(Σ(x−x̄)² Σ(y−ȳ)²); NaN if either is constant
    or there are fewer than 2 points. Shapes: (N,), (N,)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    assert x.ndim == 1 and y.shape == x.shape, (x.shape, y.shape)
    if x.size < 2:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denom) if denom > 0 else float("nan")


def spearman(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Spearman's rank correlation: the Pearson correlation of the ranks, tied values given
    their average rank (Spearman 1904). Shapes: (N,), (N,)."""
    from scipy.stats import rankdata

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    assert x.ndim == 1 and y.shape == x.shape, (x.shape, y.shape)
    return pearson(rankdata(x), rankdata(y))


def kendall_tau(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Kendall's tau-b: (concordant − discordant) / sqrt((n0 − n1)(n0 − n2)) over the
    n0 = N(N−1)/2 pairs, n1 / n2 the pairs tied in x / y (Kendall 1945); NaN if either is
    constant or there are fewer than 2 points. Shapes: (N,), (N,)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    assert x.ndim == 1 and y.shape == x.shape, (x.shape, y.shape)
    if x.size < 2:
        return float("nan")
    i, j = np.triu_indices(x.size, k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = len(i)
    denom = math.sqrt((n0 - (sx == 0).sum()) * (n0 - (sy == 0).sum()))
    return float((sx * sy).sum() / denom) if denom > 0 else float("nan")


def rank_correlation_interval(
    x: Tensor | np.ndarray,
    y: Tensor | np.ndarray,
    method: str = "spearman",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """A rank correlation of x and y and its percentile bootstrap interval over the points.

    Resample the N (x_i, y_i) pairs with replacement ``n_boot`` times and take the
    (α/2, 1 − α/2) quantiles of the statistic over the resamples whose statistic is defined
    (a resample can make x or y constant). Benchmark against downstream: one point per
    reward model, x its benchmark score, y its downstream gold.

    Args:
        x, y: Shape: (N,) each.
        method: ``"spearman"`` or ``"kendall"`` (tau-b).

    Returns:
        (estimate, low, high); NaN where undefined.
    """
    fn = {"spearman": spearman, "kendall": kendall_tau}.get(method)
    if fn is None:
        raise ValueError(f"method: expected spearman or kendall, got {method!r}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    assert x.ndim == 1 and y.shape == x.shape, (x.shape, y.shape)
    idx = np.random.default_rng(seed).integers(x.size, size=(n_boot, x.size))
    boots = np.array([fn(x[k], y[k]) for k in idx])
    boots = boots[np.isfinite(boots)]
    if not boots.size:
        return fn(x, y), float("nan"), float("nan")
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return fn(x, y), float(lo), float(hi)


def length_matched(len_chosen: Tensor, len_rejected: Tensor, tolerance: float = 0.1) -> Tensor:
    """Rows whose rejected completions all have about the chosen one's length.

    matched_i = ∀j: |ℓ_c,i − ℓ_r,ij| <= tolerance · max(ℓ_c,i, ℓ_r,ij)

    (the relative difference of the longer, within ``tolerance``; 0.1: within 10 %). Length
    controls of this kind answer reward-bench issues #263 and #267, where "pick the longer
    answer" alone scores 100 % on two subsets.

    Args:
        len_chosen: length of the chosen completion. Shape: (B,).
        len_rejected: lengths of the rejected ones, NaN where absent. Shape: (B, K).
        tolerance: relative tolerance, >= 0.

    Returns:
        bool. Shape: (B,).
    """
    len_chosen, len_rejected = _check_rows(len_chosen, len_rejected)
    if not tolerance >= 0:
        raise ValueError(f"tolerance: expected >= 0, got {tolerance!r}")
    close = (len_chosen[:, None] - len_rejected).abs() <= tolerance * torch.maximum(
        len_chosen[:, None], len_rejected
    )
    return (close | torch.isnan(len_rejected)).all(dim=1)


def member_sign_agreement(r_chosen_members: Tensor, r_rejected_members: Tensor) -> Tensor:
    """Rows on which every ensemble member makes the same call.

    s_mi = sign(r_c,mi − max_j r_r,mij); agree_i = 1[s_1i = s_2i = ... = s_Mi]
    (a member's tie, sign 0, agrees only with other ties).

    Args:
        r_chosen_members: each member's reward of the chosen completion. Shape: (M, B).
        r_rejected_members: each member's rewards of the rejected ones, NaN where absent.
            Shape: (M, B, K).

    Returns:
        bool. Shape: (B,).
    """
    rc = torch.as_tensor(r_chosen_members, dtype=torch.float64)
    rr = torch.as_tensor(r_rejected_members, dtype=torch.float64)
    assert rc.ndim == 2, rc.shape
    assert rr.ndim == 3 and rr.shape[:2] == rc.shape, (rc.shape, rr.shape)
    top = torch.where(torch.isnan(rr), -torch.inf, rr).amax(dim=2)
    s = torch.sign(rc - top)
    return (s == s[:1]).all(dim=0)


def section_scores(
    subset_accuracy: Mapping[str, float],
    example_counts: Mapping[str, int],
    subset_mapping: Mapping[str, Sequence[str]],
) -> dict[str, float]:
    """Accuracy of each section: the mean of its subsets' accuracies, weighted by the
    benchmark's example counts.

    S_s = Σ_{t ∈ s, t present} a_t n_t / Σ_{t ∈ s, t present} n_t

    as ``calculate_scores_per_section`` in ``rewardbench/utils.py`` (package 0.1.4) computes
    it, with n_t from ``EXAMPLE_COUNTS`` (not the rows present: math-prm is counted as 984,
    "upweighting to be equal to code"). Where a section has no subset present,
    reward-bench writes 0; it is left out here, so that a partial run does not read as a
    score of 0.

    Args:
        subset_accuracy: accuracy of each subset present.
        example_counts: n_t of every subset of the map.
        subset_mapping: section -> its subsets.

    Returns:
        section -> S_s, for the sections with at least one subset present.
    """
    out = {}
    for section, tests in subset_mapping.items():
        present = [t for t in tests if t in subset_accuracy]
        weight = sum(example_counts[t] for t in present)
        if weight > 0:
            out[section] = sum(subset_accuracy[t] * example_counts[t] for t in present) / weight
    return out


def section_total(sections: Mapping[str, float]) -> float:
    """RewardBench's score: the unweighted mean of the section scores, (1/S) Σ_s S_s.

    The leaderboard (``analysis/get_benchmark_results.py``, ``get_average_over_rewardbench``)
    averages the four sections with weight 2 each and "Prior Sets" with weight 1, missing
    values masked; without prior sets that is the plain mean computed here.
    """
    if not sections:
        raise ValueError("sections: expected at least one section score")
    return float(sum(sections.values()) / len(sections))
