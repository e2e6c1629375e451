"""Reward-model overoptimization scaling laws and the size of the overoptimization drop.

Gao, Schulman, Hilton 2023, "Scaling laws for reward model overoptimization",
arXiv 2210.10760. d = sqrt(KL(π ‖ π_init)) in nats; gold is measured relative to the
initial policy, so both laws pass through R(0) = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg
import torch

from goodhartlab.core.stats import bootstrap_ci, bootstrap_means

__all__ = [
    "OveroptimizationResult",
    "PeakDropIntervals",
    "ScalingFit",
    "bon_law",
    "fit_bon_law",
    "fit_rl_law",
    "gold_at_kl",
    "gold_at_proxy_gain",
    "overoptimization",
    "peak_drop_intervals",
    "rl_law",
]

MIN_FIT_POINTS = 3


def _as_curve(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    # Lists go through NumPy so that Python floats stay float64 (torch would make float32).
    x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if x.ndim != 1:
        raise ValueError(f"{name} must have shape (K,); got {tuple(x.shape)}")
    x = x.to(torch.float64)
    if bool(torch.isnan(x).any()):
        raise ValueError(f"{name} contains NaN")
    return x


def _as_distance(d: torch.Tensor | np.ndarray) -> torch.Tensor:
    d = _as_curve(d, "d")
    if bool((d < 0).any()):
        raise ValueError("d must be ≥ 0 (d = sqrt(KL))")
    return d


def _d_log_d(d: torch.Tensor) -> torch.Tensor:
    return torch.special.xlogy(d, d)  # 0 at d = 0, the limit of d log d


def bon_law(d: torch.Tensor | np.ndarray, alpha: float, beta: float) -> torch.Tensor:
    """Gold reward of best-of-n as a function of d = sqrt(KL): R_bon(d) = d (α − β d).

    (Gao, Schulman, Hilton 2023, arXiv 2210.10760.)

    Args:
        d: sqrt of the KL to the initial policy, nats^½, ≥ 0. Shape: (K,).
        alpha: α.
        beta: β.

    Returns:
        Float64. Shape: (K,).
    """
    d = _as_distance(d)
    return d * (alpha - beta * d)


def rl_law(d: torch.Tensor | np.ndarray, alpha: float, beta: float) -> torch.Tensor:
    """Gold reward of RL as a function of d = sqrt(KL): R_RL(d) = d (α − β log d).

    (Gao, Schulman, Hilton 2023, arXiv 2210.10760.) At d = 0 the value is the limit,
    0.

    Args:
        d: sqrt of the KL to the initial policy, nats^½, ≥ 0. Shape: (K,).
        alpha: α.
        beta: β.

    Returns:
        Float64. Shape: (K,).
    """
    d = _as_distance(d)
    return alpha * d - beta * _d_log_d(d)


@dataclass(frozen=True)
class ScalingFit:
    """Least-squares fit of a Gao et al. 2023 law to a gold-vs-d curve."""

    law: Literal["bon", "rl"]
    """Which law: "bon", R = d (α − β d); "rl", R = d (α − β log d)."""
    alpha: float
    beta: float
    r2: float
    """Coefficient of determination 1 − SS_res / SS_tot (NaN when all gold values are equal)."""
    d_peak: float
    """d ≥ 0 maximizing the fitted law (inf when it grows without bound)."""
    gold_peak: float
    """The law's value at ``d_peak`` (inf when it grows without bound)."""


def _bon_peak(alpha: float, beta: float) -> tuple[float, float]:
    # R = αd − βd²: a maximum at α/(2β) if β > 0 (at d = 0 if that is negative);
    # unbounded above if β < 0, or if β = 0 and α > 0.
    if beta > 0:
        d_star = max(alpha / (2 * beta), 0.0)
        return d_star, d_star * (alpha - beta * d_star)
    if beta < 0 or alpha > 0:
        return math.inf, math.inf
    return 0.0, 0.0


def _rl_peak(alpha: float, beta: float) -> tuple[float, float]:
    # R' = α − β (log d + 1) = 0 at d* = exp(α/β − 1), a maximum if β > 0, where
    # R(d*) = d* (α − (α − β)) = β d*. β < 0: convex, unbounded above.
    if beta > 0:
        # A tiny β puts the peak beyond any float (seen in early-law fits of the monitor).
        exponent = alpha / beta - 1
        d_star = math.exp(exponent) if exponent < 700 else math.inf
        return d_star, beta * d_star
    if beta < 0 or alpha > 0:
        return math.inf, math.inf
    return 0.0, 0.0


def _fit_linear(
    law: Literal["bon", "rl"], d: torch.Tensor | np.ndarray, gold: torch.Tensor | np.ndarray
) -> ScalingFit:
    d = _as_distance(d)
    gold = _as_curve(gold, "gold")
    if gold.shape != d.shape:
        raise ValueError(f"gold must have the shape of d {tuple(d.shape)}; got {tuple(gold.shape)}")
    if d.numel() < MIN_FIT_POINTS:
        raise ValueError(
            f"d and gold need at least {MIN_FIT_POINTS} points to fit the {law} law; got {d.numel()}"
        )
    if not bool(torch.isfinite(d).all()) or not bool(torch.isfinite(gold).all()):
        raise ValueError("d and gold must be finite")
    # Both laws are linear in (α, β): R = α·d − β·g(d), g(d) = d² (bon) or d log d (rl).
    # Ordinary linear least squares is the exact least-squares fit: no start point, no
    # local minima, unlike an iterative curve_fit.
    g = d * d if law == "bon" else _d_log_d(d)
    design = torch.stack([d, -g], dim=1).numpy()
    y = gold.numpy()
    coef, _, rank, _ = scipy.linalg.lstsq(design, y)
    if rank < 2:
        raise ValueError(
            f"d has too few distinct non-zero values to fit the {law} law (α and β are "
            "not identifiable)"
        )
    alpha, beta = float(coef[0]), float(coef[1])
    ss_res = float(np.sum((y - design @ coef) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
    d_peak, gold_peak = (_bon_peak if law == "bon" else _rl_peak)(alpha, beta)
    return ScalingFit(law=law, alpha=alpha, beta=beta, r2=r2, d_peak=d_peak, gold_peak=gold_peak)


def fit_bon_law(d: torch.Tensor | np.ndarray, gold: torch.Tensor | np.ndarray) -> ScalingFit:
    """Least-squares fit of R_bon(d) = d (α − β d) (Gao, Schulman, Hilton 2023, arXiv 2210.10760).

    The law is linear in (α, β), so ordinary least squares gives the exact minimizer of
    Σ_k (gold_k − R(d_k))². The analytic peak is d* = α / (2β), R(d*) = α² / (4β) (β > 0).

    Args:
        d: sqrt(KL) to the initial policy, ≥ 0. Shape: (K,), K ≥ 3.
        gold: gold reward minus the initial policy's gold. Shape: (K,).

    Returns:
        ``ScalingFit(law="bon", alpha, beta, r2, d_peak, gold_peak)``.
    """
    return _fit_linear("bon", d, gold)


def fit_rl_law(d: torch.Tensor | np.ndarray, gold: torch.Tensor | np.ndarray) -> ScalingFit:
    """Least-squares fit of R_RL(d) = d (α − β log d) (Gao, Schulman, Hilton 2023, arXiv 2210.10760).

    Linear in (α, β) as well; points at d = 0 contribute R(0) = 0 (d log d → 0). The
    analytic peak is d* = exp(α/β − 1), R(d*) = β d* (β > 0).

    Args:
        d: sqrt(KL) to the initial policy, ≥ 0. Shape: (K,), K ≥ 3.
        gold: gold reward minus the initial policy's gold. Shape: (K,).

    Returns:
        ``ScalingFit(law="rl", alpha, beta, r2, d_peak, gold_peak)``.
    """
    return _fit_linear("rl", d, gold)


@dataclass(frozen=True)
class OveroptimizationResult:
    """How much gold was lost after the gold peak of a gold-vs-d curve."""

    gold_peak: float
    """Largest gold on the curve (first one when repeated)."""
    d_peak: float
    """d at that point."""
    gold_final: float
    """Gold at the largest d."""
    gold_initial: float
    """Gold at the smallest d."""
    drop: float
    """(gold_peak − gold_final) / (gold_peak − gold_initial): 0 when nothing is lost after the
    peak, 1 when gold fell back to its initial value, > 1 when below it. When the peak is the
    initial point (no gain at all), 0 if gold_final equals it and NaN otherwise."""
    definition: str = "overoptimization/v1"
    """Which definition produced this result; bumped on any change of meaning."""


def overoptimization(
    d: torch.Tensor | np.ndarray, gold: torch.Tensor | np.ndarray
) -> OveroptimizationResult:
    """Peak, final and initial gold of a gold-vs-d curve, and the fraction of the gain lost.

        drop = (gold_peak − gold_final) / (gold_peak − gold_initial)

    The curve is ordered by d (stable) first; initial is the point with the smallest d,
    final the one with the largest. Overoptimization as in Gao, Schulman, Hilton 2023
    (arXiv 2210.10760): gold rises, peaks, then falls while the proxy keeps rising; ``drop``
    is the share of the peak's gain over the start that is lost by the end. When the peak
    is the initial point the ratio is 0/0 or x/0: ``drop`` is 0 if the final gold equals the
    peak and NaN (undefined: no gain to lose) otherwise.

    Args:
        d: sqrt(KL) to the initial policy (or any monotone measure of optimization), ≥ 0.
            Shape: (K,), K ≥ 1.
        gold: gold reward at each d. Shape: (K,).

    Returns:
        ``OveroptimizationResult``.
    """
    d = _as_distance(d)
    gold = _as_curve(gold, "gold")
    if gold.shape != d.shape:
        raise ValueError(f"gold must have the shape of d {tuple(d.shape)}; got {tuple(gold.shape)}")
    if d.numel() == 0:
        raise ValueError("d and gold are empty")
    order = torch.sort(d, stable=True).indices
    d, gold = d[order], gold[order]
    k_peak = int(torch.argmax(gold))  # first maximum
    peak, final, initial = float(gold[k_peak]), float(gold[-1]), float(gold[0])
    gain = peak - initial
    if gain > 0:
        drop = (peak - final) / gain
    else:
        drop = 0.0 if final == peak else math.nan
    return OveroptimizationResult(
        gold_peak=peak,
        d_peak=float(d[k_peak]),
        gold_final=final,
        gold_initial=initial,
        drop=drop,
    )


@dataclass(frozen=True)
class PeakDropIntervals:
    """Bootstrap intervals of a curve's drop from its peak gold to its last point."""

    lo: float
    hi: float
    """Interval of max_k ḡ*_k − ḡ*_K, the peak found again in every resample (≥ 0)."""
    paired_lo: float
    paired_hi: float
    """Interval of ḡ*_k̂ − ḡ*_K with k̂ the observed peak (a paired difference; may be < 0)."""


def peak_drop_intervals(
    gold_per_prompt: torch.Tensor | np.ndarray,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> PeakDropIntervals:
    """Percentile bootstrap intervals, over prompts, of the drop of gold from its peak.

        ḡ_k = (1/P) Σ_p g_pk,   drop = max_k ḡ_k − ḡ_K,   k̂ = argmax_k ḡ_k

    Two intervals from resamples of the P prompts (rows), each resample b giving column
    means ḡ*_b (``core.stats.bootstrap_means``, the resamples of ``bootstrap_ci`` with
    the same seed):

    - ``lo, hi``: quantiles (α/2, 1 − α/2) of max_k ḡ*_bk − ḡ*_bK. The peak is found again
      in every resample, so the interval includes the uncertainty of where the peak is;
      the statistic is ≥ 0 by construction.
    - ``paired_lo, paired_hi``: ``bootstrap_ci`` of the per-prompt difference
      g_pk̂ − g_pK, the peak's column fixed at the observed k̂. It can be negative; an
      interval above 0 is the stricter test that gold fell after its peak.

    The drop is the overoptimization of Gao, Schulman, Hilton 2023 (arXiv 2210.10760): gold
    rises, peaks and falls while the proxy keeps rising (:func:`overoptimization` gives its
    point estimate); the percentile bootstrap is Efron & Tibshirani 1993, ch. 13.

    Args:
        gold_per_prompt: gold of each prompt at each point of the curve, ordered by d
            (e.g. best-of-n gold relative to best-of-1, per prompt). Shape: (P, K), P ≥ 2.
        n_boot: bootstrap resamples, ≥ 1.
        alpha: 1 − coverage, in (0, 1).
        seed: seed of the resampling generator.

    Returns:
        :class:`PeakDropIntervals`.
    """
    g = np.asarray(gold_per_prompt)
    assert g.ndim == 2, g.shape
    k_peak = int(np.argmax(g.mean(axis=0)))  # the first maximum of the mean curve
    q = [alpha / 2, 1 - alpha / 2]
    boot = bootstrap_means(g, n_boot, seed).numpy()  # (n_boot, K)
    drops = boot.max(axis=1) - boot[:, -1]
    lo, hi = (float(x) for x in np.quantile(drops, q))
    paired_lo, paired_hi = bootstrap_ci(g[:, [k_peak]] - g[:, [-1]], n_boot, alpha, seed)
    return PeakDropIntervals(lo, hi, float(paired_lo[0]), float(paired_hi[0]))


def gold_at_kl(
    kl: torch.Tensor | np.ndarray, gold: torch.Tensor | np.ndarray, budget: float
) -> float:
    """Gold of a run when its KL first reaches a budget, interpolated linearly.

        k = min{j : KL_j ≥ b},   gold(b) = g_{k−1} + (b − KL_{k−1}) / (KL_k − KL_{k−1}) · (g_k − g_{k−1})

    The curve is a run's evaluations in step order (KL need not grow monotonically); the first
    crossing is what a practitioner with a KL budget b would stop at. gold(b) = g_0 when the
    run starts at or above b, NaN when it never reaches b (the budget was not spent: no value
    to report). Gold at fixed KL budgets is how Gao, Schulman, Hilton 2023 (arXiv 2210.10760)
    compare methods along the frontier.

    Args:
        kl: KL(π ‖ π0) at each evaluation, in step order (nats). Shape: (K,), K ≥ 1.
        gold: gold at each evaluation. Shape: (K,).
        budget: b in nats, ≥ 0.

    Returns:
        gold(b), or NaN.
    """
    kl = np.asarray(kl, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    assert kl.ndim == 1 and kl.shape == gold.shape, (kl.shape, gold.shape)
    if kl.size == 0:
        raise ValueError("kl and gold are empty")
    if not budget >= 0:
        raise ValueError(f"budget must be >= 0; got {budget}")
    reached = np.nonzero(kl >= budget)[0]
    if reached.size == 0:
        return math.nan
    k = int(reached[0])
    if k == 0:
        return float(gold[0])
    w = (budget - kl[k - 1]) / (kl[k] - kl[k - 1])
    return float(gold[k - 1] + w * (gold[k] - gold[k - 1]))


def gold_at_proxy_gain(
    proxy_gain: torch.Tensor | np.ndarray | list[float],
    gold: torch.Tensor | np.ndarray | list[float],
    level: float,
) -> float:
    """Gold of a run when its proxy gain first reaches a level, interpolated linearly.

        k = min{j : Δproxy_j ≥ c},   gold(c) = g_{k−1} + (c − Δproxy_{k−1}) / (Δproxy_k − Δproxy_{k−1}) · (g_k − g_{k−1})

    the first crossing of ``gold_at_kl`` with the proxy's gain over the base policy in place
    of KL. Comparing methods at equal proxy gain (rather than equal KL) is how Laidlaw et al.
    2024 ("Correlated Proxies", arXiv 2403.03185) compare regularizers: which one buys the
    most true reward for the same optimization of the proxy. NaN when the run never reaches c.

    Args:
        proxy_gain: proxy − the base policy's proxy at each evaluation, in step order.
            Shape: (K,), K ≥ 1.
        gold: gold at each evaluation. Shape: (K,).
        level: c, ≥ 0, in the proxy's units.

    Returns:
        gold(c), or NaN.
    """
    return gold_at_kl(np.asarray(proxy_gain, dtype=np.float64), gold, level)
