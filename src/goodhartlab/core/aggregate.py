"""Aggregate the rewards of an ensemble of reward models into one reward per item.

Every aggregator maps r_members of shape (M, B) to (B,) and is NaN-aware: a member whose
reward for an item is NaN is left out for that item; an item with no finite member gets NaN.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch

from goodhartlab.registry import AGGREGATORS

__all__ = [
    "AGGREGATORS",
    "first",
    "get_aggregator",
    "mean",
    "mean_minus_std",
    "median",
    "standardize_members",
    "uwo",
    "wco",
]


def _as_members(r_members: torch.Tensor | np.ndarray) -> torch.Tensor:
    r = torch.as_tensor(r_members)
    if r.ndim != 2:
        raise ValueError(f"r_members must have shape (M, B); got {tuple(r.shape)}")
    if r.shape[0] == 0:
        raise ValueError("r_members has no members (M = 0)")
    if not r.is_floating_point():
        r = r.to(torch.float64)
    return r


def _nan_variance(r: torch.Tensor) -> torch.Tensor:
    """Population variance over dim 0, ignoring NaN. Shape: (M, B) -> (B,)."""
    mu = torch.nanmean(r, dim=0)
    return torch.nanmean((r - mu).square(), dim=0)


def standardize_members(
    r_members: torch.Tensor, r_ref: torch.Tensor | None = None, eps: float = 1e-8
) -> torch.Tensor:
    """Put every member on a common scale: z_i = (R_i − μ_i) / σ_i.

    μ_i and σ_i are member i's mean and (population) standard deviation over reference items
    ``r_ref`` — the base policy's own samples, as reward models are normalized on the SFT
    distribution (Stiennon et al. 2020, arXiv 2009.01325, normalize so that reference outputs
    score 0). Bradley-Terry fixes a reward only up to an additive constant (and a noisy scale),
    so members trained with different seeds carry arbitrary offsets: without this the minimum
    of WCO is mostly the member with the lowest offset, and UWO's variance mostly the spread
    of the offsets, not disagreement about the item.

    Args:
        r_members: rewards to standardize. Shape: (M, B).
        r_ref: rewards of the same members on the reference items. Shape: (M, K).
            Default: ``r_members`` itself.
        eps: floor on σ_i (a constant member is only centered).

    Returns:
        Shape: (M, B).
    """
    r = _as_members(r_members)
    ref = r if r_ref is None else _as_members(r_ref).to(r.dtype)
    if ref.shape[0] != r.shape[0]:
        raise ValueError(
            f"r_ref has {ref.shape[0]} members, r_members has {r.shape[0]}; expected the same"
        )
    mu = torch.nanmean(ref, dim=1, keepdim=True)
    sd = torch.nanmean((ref - mu).square(), dim=1, keepdim=True).sqrt().clamp_min(eps)
    return (r - mu) / sd


def mean(r_members: torch.Tensor) -> torch.Tensor:
    """Mean over members: R = (1/M) Σ_i R_i.

    (Coste et al. 2023, "Reward model ensembles help mitigate overoptimization",
    arXiv 2310.02743.)

    Args:
        r_members: reward of each member for each item. Shape: (M, B).

    Returns:
        Shape: (B,).
    """
    return torch.nanmean(_as_members(r_members), dim=0)


def wco(r_members: torch.Tensor) -> torch.Tensor:
    """Worst-case optimization: the minimum over members, R = min_i R_i.

    (Coste et al. 2023, arXiv 2310.02743.)

    Args:
        r_members: reward of each member for each item. Shape: (M, B).

    Returns:
        Shape: (B,).
    """
    r = _as_members(r_members)
    nan = torch.isnan(r)
    low = torch.where(nan, torch.full_like(r, float("inf")), r).amin(dim=0)
    return torch.where(nan.all(dim=0), torch.full_like(low, float("nan")), low)


def uwo(r_members: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """Uncertainty-weighted optimization: mean minus λ times the variance over members.

        R = (1/M) Σ_i R_i − λ · (1/M) Σ_i (R_i − R̄)²

    with the population variance (Coste et al. 2023, arXiv 2310.02743, who use λ = 0.5 for
    best-of-n and 0.1 for PPO). ``lam`` is λ.

    Args:
        r_members: reward of each member for each item. Shape: (M, B).
        lam: weight λ of the variance penalty.

    Returns:
        Shape: (B,).
    """
    r = _as_members(r_members)
    return torch.nanmean(r, dim=0) - lam * _nan_variance(r)


def median(r_members: torch.Tensor) -> torch.Tensor:
    """Median over members; for an even count, the mean of the two middle values.

    (Eisenstein et al. 2023, "Helping or Herding? Reward model ensembles mitigate but do not
    eliminate reward hacking", arXiv 2312.09244.) Unlike ``torch.median``, which returns the
    lower middle value, this is the usual median (as ``numpy.nanmedian``).

    Args:
        r_members: reward of each member for each item. Shape: (M, B).

    Returns:
        Shape: (B,).
    """
    r = _as_members(r_members)
    nan = torch.isnan(r)
    # NaN becomes +inf and sorts last; the first `count` sorted values are the valid ones.
    ordered = torch.where(nan, torch.full_like(r, float("inf")), r).sort(dim=0).values
    count = (~nan).sum(dim=0)
    lo = ((count - 1).clamp(min=0) // 2).unsqueeze(0)
    hi = (count // 2).clamp(max=r.shape[0] - 1).unsqueeze(0)
    mid = 0.5 * (ordered.gather(0, lo) + ordered.gather(0, hi)).squeeze(0)
    return torch.where(count == 0, torch.full_like(mid, float("nan")), mid)


def mean_minus_std(r_members: torch.Tensor, k: float = 1.0) -> torch.Tensor:
    """Mean minus k standard deviations over members: R = R̄ − k · σ.

    (Eisenstein et al. 2023, arXiv 2312.09244.) σ is the population standard deviation
    (ddof = 0), as in ``uwo``, so one member gives σ = 0 and R = R_1.

    Args:
        r_members: reward of each member for each item. Shape: (M, B).
        k: number of standard deviations subtracted.

    Returns:
        Shape: (B,).
    """
    r = _as_members(r_members)
    return torch.nanmean(r, dim=0) - k * _nan_variance(r).sqrt()


def first(r_members: torch.Tensor) -> torch.Tensor:
    """The first member alone: R = R_1.

    A run that optimizes one proxy (the study's single proxy is member 0) while something
    else reads the whole ensemble: GARDO's gated KL takes its uncertainty from the other
    members (He et al. 2025, arXiv 2512.24138, who optimize one reward model and consult
    auxiliary ones; ``optimize.gardo``).

    Args:
        r_members: reward of each member for each item. Shape: (M, B).

    Returns:
        Shape: (B,).
    """
    return _as_members(r_members)[0]


COSTE = "Coste et al. 2023, arXiv 2310.02743"
EISENSTEIN = "Eisenstein et al. 2023, arXiv 2312.09244"
AGGREGATORS.register("mean", mean, paper=COSTE)
AGGREGATORS.register("wco", wco, paper=COSTE)
AGGREGATORS.register(
    "uwo",
    uwo,
    paper=COSTE,
    params={"lam": "λ, the weight of the variance penalty (Coste et al.: 0.5 for best-of-n)"},
    # Coste et al.'s λ for PPO; what an RL reward pipeline takes unless told otherwise.
    rl_params={"lam": 0.1},
)
AGGREGATORS.register("median", median, paper=EISENSTEIN)
AGGREGATORS.register(
    "first",
    first,
    description="The first member alone (the others read only by e.g. GARDO's kl_gate).",
    paper="He et al. 2025, arXiv 2512.24138 (one optimized proxy, auxiliary members)",
)
AGGREGATORS.register(
    "mean_minus_std",
    mean_minus_std,
    paper=EISENSTEIN,
    params={"k": "standard deviations subtracted"},
)


def get_aggregator(name: str, **params: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The aggregator called ``name`` with its parameters bound, e.g. ``get_aggregator("uwo", lam=0.1)``.

    Args:
        name: a name in the ``AGGREGATORS`` registry (``goodhart list aggregator``).
        **params: keyword parameters of that aggregator (``lam`` for uwo, ``k`` for
            mean_minus_std), checked against the entry's parameter model.

    Returns:
        A callable ``r_members -> reward``; Shape: (M, B) -> (B,).

    Raises:
        ValueError: unknown name (listing the registered ones), or a parameter the
            aggregator does not take or a bad value.
    """
    entry = AGGREGATORS.entry(name)
    entry.validate_params(params, where=f"aggregator {name!r}")
    return functools.partial(entry.obj, **params) if params else entry.obj
