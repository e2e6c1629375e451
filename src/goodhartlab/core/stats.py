"""Confidence intervals: over prompts (bootstrap) and over seeds (Student t)."""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["bootstrap_ci", "bootstrap_means", "t_interval"]


def bootstrap_ci(
    per_prompt: torch.Tensor | np.ndarray,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile bootstrap confidence interval of the mean over prompts, per column.

    Draw ``n_boot`` resamples of the P rows with replacement; for each, take the column means
    m*_b = (1/P) Σ_p c_bp · x_p (c_bp the number of times row p was drawn); the interval is
    the (α/2, 1 − α/2) quantiles of m*_b (Efron & Tibshirani 1993, "An Introduction to the
    Bootstrap", ch. 13). Rows are prompts: rewards of samples of one prompt are correlated,
    so prompts are the unit of resampling. Deterministic given ``seed``.

    Args:
        per_prompt: one row per prompt, one column per statistic (e.g.
            ``BonCurve.gold_per_prompt``). Shape: (P, K), P ≥ 2.
        n_boot: number of bootstrap resamples, ≥ 1.
        alpha: 1 − coverage, in (0, 1).
        seed: seed of the resampling generator.

    Returns:
        ``(low, high)``, float64. Shape: (K,) each.
    """
    # Lists go through NumPy so that Python floats stay float64 (torch would make float32).
    x = (
        per_prompt
        if isinstance(per_prompt, torch.Tensor)
        else torch.as_tensor(np.asarray(per_prompt))
    )
    if x.ndim != 2:
        raise ValueError(f"per_prompt must have shape (P, K); got {tuple(x.shape)}")
    n_prompts = x.shape[0]
    if n_prompts < 2:
        raise ValueError(f"per_prompt needs at least 2 rows (prompts) to resample; got {n_prompts}")
    x = x.to(torch.float64)
    if bool(torch.isnan(x).any()):
        raise ValueError("per_prompt contains NaN")
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be an integer ≥ 1; got {n_boot!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1); got {alpha!r}")

    boot_means = bootstrap_means(x, n_boot, seed)  # (n_boot, K)
    q = torch.tensor([alpha / 2, 1 - alpha / 2], dtype=torch.float64)
    low, high = torch.quantile(boot_means, q, dim=0)
    return low, high


def bootstrap_means(
    per_prompt: torch.Tensor | np.ndarray, n_boot: int, seed: int = 0
) -> torch.Tensor:
    """The column means of ``n_boot`` bootstrap resamples of the rows (prompts).

    m*_b = (1/P) Σ_p c_bp · x_p, c_bp the number of times row p was drawn in resample b: the
    resamples behind :func:`bootstrap_ci`, exposed for statistics that are not a mean over
    prompts (e.g. the drop of a best-of-n curve from its peak, computed per resample).
    Deterministic given ``seed`` (the same rows as ``bootstrap_ci`` with that seed).

    Args:
        per_prompt: Shape: (P, K).
        n_boot: number of resamples, ≥ 1.
        seed: seed of the resampling generator.

    Returns:
        float64. Shape: (n_boot, K).
    """
    x = torch.as_tensor(
        np.asarray(per_prompt) if not isinstance(per_prompt, torch.Tensor) else per_prompt
    )
    if x.ndim != 2:
        raise ValueError(f"per_prompt must have shape (P, K); got {tuple(x.shape)}")
    n_prompts = x.shape[0]
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randint(0, n_prompts, (int(n_boot), n_prompts), generator=gen)
    # Counts instead of gathered copies: memory n_boot × P rather than n_boot × P × K.
    counts = torch.zeros(int(n_boot), n_prompts, dtype=torch.float64)
    counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
    return counts @ x.to(torch.float64) / n_prompts


def t_interval(values: torch.Tensor | np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Student-t confidence interval of the mean of a few independent runs (e.g. seeds).

        x̄ ± t_{1 − α/2, n − 1} · s / √n,   s² = Σ (x_i − x̄)² / (n − 1)

    (Student 1908.) For the n = 3 to 10 seeds of an RL comparison; a percentile bootstrap
    over 3 seeds has only 10 distinct resamples and its interval (at most the range of the
    values) covers far less than 1 − α. NaN values (a run that never reached a KL budget)
    are dropped first; fewer than 2 left gives (NaN, NaN).

    Args:
        values: one value per run. Shape: (n,).
        alpha: 1 − coverage, in (0, 1).

    Returns:
        (low, high).
    """
    from scipy.stats import t as student_t

    x = np.asarray(values, dtype=np.float64)
    assert x.ndim == 1, x.shape
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1); got {alpha!r}")
    x = x[~np.isnan(x)]
    if x.size < 2:
        return math.nan, math.nan
    half = (
        float(student_t.ppf(1 - alpha / 2, x.size - 1)) * float(x.std(ddof=1)) / math.sqrt(x.size)
    )
    return float(x.mean()) - half, float(x.mean()) + half
