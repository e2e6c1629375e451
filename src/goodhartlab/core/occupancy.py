"""Occupancy-measure regularization over whole sequences: χ², √χ², total variation and KL.

Laidlaw, Singhal & Dragan 2024, "Correlated Proxies: A New Definition and Improved
Mitigation for Reward Hacking", arXiv 2403.03185, regularize the divergence between the
occupancy measures of the policy and of the reference (base) policy,

    max_π  J(π, R̃) − λ · √χ²(μ_π ‖ μ_ref),      λ = σ_R̃ · √(1 − r²)        (Theorem 5.1)

with σ_R̃ the proxy's standard deviation under the reference and r its correlation with the
true reward there. For a language model the states are prefixes and the transitions are
deterministic, so the ratio of occupancy measures of a completion y is the ratio of sequence
probabilities, w(y) = π(y | x) / π_ref(y | x), and a divergence of the occupancy measures
over whole sequences is that divergence between the two sequence distributions; it is
estimated from the sampled completions' sequence log-ratio Σ_t (log π − log π_ref) (as the
paper's RLHF code, cassidylaidlaw/llm_optimization, ``PPOWithRefPolicyConfig.loss``, does).

Every divergence here returns the batch estimate and a per-sample *reward term* t(y) whose
policy gradient is the divergence's gradient, ∇_θ D(π_θ) = E_{y~π}[t(y) ∇_θ log π_θ(y)], so
that r − λ·t is the reward of a policy-gradient step on J − λ·D (ORPO's form, which puts the
regularizer in the reward: cassidylaidlaw/orpo, ``ORPO._sqrt_chi2_discriminator_rewards``).
√χ² is not additive over samples: its term is the chain rule's 1/(2√χ̂²) times χ²'s, with
χ̂² the batch estimate.

Numerics: w is exp of a sum over up to T tokens; as in the reference code, w − 1 and 1/w − 1
are expm1 below |log w| = ``clip`` and continued linearly in log w past it (value and slope
continuous), so one runaway sequence gives a large but finite term.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from goodhartlab.core.kl import sequence_kl
from goodhartlab.registry import OCCUPANCY_DIVERGENCES

__all__ = [
    "LOG_RATIO_CLIP",
    "OCCUPANCY_DIVERGENCES",
    "OccupancyPenalty",
    "inverse_ratio_minus_one",
    "occupancy_lambda",
    "ratio_minus_one",
    "sequence_log_ratio",
]

#: |log w| past which w − 1 and 1/w − 1 continue linearly (the reference code's 10).
LOG_RATIO_CLIP = 10.0

#: Floor of χ̂² under the square root (the reference code's ``chi2.clip(min=1e-4)``).
CHI2_FLOOR = 1e-4

_LAIDLAW = "Laidlaw, Singhal & Dragan 2024, arXiv 2403.03185 (Correlated Proxies; ORPO)"


class OccupancyPenalty(NamedTuple):
    """A divergence's batch estimate and the per-sample reward terms of its gradient."""

    value: Tensor
    """The estimate of D(π ‖ π_ref). Shape: ()"""
    reward_terms: Tensor
    """t(y): E_π[t ∇log π] estimates ∇D; the reward becomes r − λ·t. Shape: (B,)"""
    clipfrac: Tensor
    """Fraction of samples with |log w| past the clip. Shape: ()"""


def sequence_log_ratio(logp: Tensor, logp_ref: Tensor, mask: Tensor) -> Tensor:
    """log w(y) = Σ_t mask_t (log π(y_t) − log π_ref(y_t)), the sequence log-ratio.

    Args:
        logp: log π of the sampled tokens. Shape: (B, T).
        logp_ref: log π_ref of the same tokens. Shape: (B, T).
        mask: 1 on completion tokens. Shape: (B, T).

    Returns:
        log π(y) − log π_ref(y) per sequence, nats. Shape: (B,)
    """
    # The per-sequence sum of k1 is exactly the sequence log-ratio.
    return sequence_kl(logp, logp_ref, mask, "k1")


def ratio_minus_one(log_ratio: Tensor, clip: float = LOG_RATIO_CLIP) -> Tensor:
    """w − 1 = expm1(log w), continued linearly past log w = clip: e^c (1 + log w − c) − 1.

    Args:
        log_ratio: log w. Shape: (B,), any shape; elementwise.
        clip: c > 0.

    Returns:
        Shape: as ``log_ratio``.
    """
    x = log_ratio
    linear = math.exp(clip) * (1.0 + x - clip) - 1.0
    return torch.where(x >= clip, linear, torch.expm1(x.clamp(max=clip)))


def inverse_ratio_minus_one(log_ratio: Tensor, clip: float = LOG_RATIO_CLIP) -> Tensor:
    """1/w − 1 = expm1(−log w), continued linearly past log w = −clip.

    Args:
        log_ratio: log w. Shape: (B,), any shape; elementwise.
        clip: c > 0.

    Returns:
        Shape: as ``log_ratio``.
    """
    return ratio_minus_one(-log_ratio, clip)


def _checked(log_ratio: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor]:
    log_ratio = torch.as_tensor(log_ratio)
    assert log_ratio.ndim == 1, log_ratio.shape
    if not bool(torch.isfinite(log_ratio).all()):
        raise ValueError("log_ratio: expected finite sequence log-ratios")
    if weights is None:
        weights = torch.full_like(log_ratio, 1.0 / max(len(log_ratio), 1))
    else:
        weights = torch.as_tensor(weights, dtype=log_ratio.dtype)
        assert weights.shape == log_ratio.shape, (weights.shape, log_ratio.shape)
        weights = weights / weights.sum()
    return log_ratio, weights


def _clipfrac(log_ratio: Tensor, w: Tensor, clip: float) -> Tensor:
    return (w * (log_ratio.abs() >= clip).to(w.dtype)).sum()


def _chi2_estimate(log_ratio: Tensor, w: Tensor, clip: float) -> tuple[Tensor, Tensor]:
    """χ̂² and w − 1: E_π[(w − 1) + (1/w − 1)], each sample's term w + 1/w − 2 ≥ 0."""
    ratio_m1 = ratio_minus_one(log_ratio, clip)
    chi2 = (w * (ratio_m1 + inverse_ratio_minus_one(log_ratio, clip))).sum()
    return chi2, ratio_m1


@OCCUPANCY_DIVERGENCES.register("chi2", paper=_LAIDLAW)
def chi2(
    log_ratio: Tensor, weights: Tensor | None = None, clip: float = LOG_RATIO_CLIP
) -> OccupancyPenalty:
    """χ²(π ‖ π_ref) = E_π[w] − 1, and its reward term 2(w − 1).

        χ̂² = Σ_i ω_i [(w_i − 1) + (1/w_i − 1)]

    The second bracket has mean 0 under π (E_π[1/w] = 1 where π_ref's support lies in π's)
    and makes every sample's term w + 1/w − 2 ≥ 0: the estimator of Laidlaw et al.'s RLHF
    code (cassidylaidlaw/llm_optimization). Gradient: ∇χ² = 2 E_π[w ∇log π], so t = 2(w − 1)
    (the −1 is a baseline). ORPO's ``chi2`` reward uses w − 1, i.e. its coefficient is λ/2
    in our units.

    Args:
        log_ratio: log w of B completions sampled from π. Shape: (B,).
        weights: ω, each row's probability (normalized to sum 1); None: 1/B, Monte Carlo
            samples. Pass π(y) over an enumerated support for the exact divergence.
            Shape: (B,).
        clip: |log w| past which w is continued linearly (see ``ratio_minus_one``).
    """
    log_ratio, w = _checked(log_ratio, weights)
    value, ratio_m1 = _chi2_estimate(log_ratio, w, clip)
    return OccupancyPenalty(value, 2.0 * ratio_m1, _clipfrac(log_ratio, w, clip))


@OCCUPANCY_DIVERGENCES.register("sqrt_chi2", paper=_LAIDLAW)
def sqrt_chi2(
    log_ratio: Tensor, weights: Tensor | None = None, clip: float = LOG_RATIO_CLIP
) -> OccupancyPenalty:
    """√χ²(π ‖ π_ref), the paper's regularizer, and its reward term (w − 1) / √χ̂².

        √χ̂² = √max(χ̂², 1e-4),     t = (1 / (2√χ̂²)) · 2(w − 1) = (w − 1) / √χ̂²

    (Laidlaw et al. 2024, eq. of Theorem 5.1 and ORPO's augmented reward R̃ − λ e^d / √χ̂²,
    whose e^d is our w; the floor is the RLHF code's.) The square root makes the penalty's
    gradient O(λ) already near π_ref, where a KL penalty's vanishes. χ̂² is ``chi2``'s
    estimate over the batch (no trimming: ORPO trims 1 % per tail, none of 64 samples).

    Args:
        log_ratio: log w of B completions sampled from π. Shape: (B,).
        weights: ω (see ``chi2``). Shape: (B,).
        clip: see ``ratio_minus_one``.
    """
    log_ratio, w = _checked(log_ratio, weights)
    chi2_hat, ratio_m1 = _chi2_estimate(log_ratio, w, clip)
    value = chi2_hat.clamp(min=CHI2_FLOOR).sqrt()
    return OccupancyPenalty(value, ratio_m1 / value, _clipfrac(log_ratio, w, clip))


@OCCUPANCY_DIVERGENCES.register("tv", paper=_LAIDLAW)
def tv(
    log_ratio: Tensor, weights: Tensor | None = None, clip: float = LOG_RATIO_CLIP
) -> OccupancyPenalty:
    """Total variation TV(π, π_ref) = Σ_y (π − π_ref)₊ = E_π[max(0, 1 − 1/w)], term 1[w > 1].

    ∇TV = Σ_{π > π_ref} ∇π = E_π[1[w > 1] ∇log π]. (Laidlaw et al. 2024 compare TV; ORPO's
    ``tv`` reward is the discriminator's sign, 2·1[w > 1] − 1.) 1 − 1/w = −expm1(−log w) is
    bounded in [0, 1): no clip is needed; ``clip`` only counts ``clipfrac``.

    Args:
        log_ratio: log w of B completions sampled from π. Shape: (B,).
        weights: ω (see ``chi2``). Shape: (B,).
        clip: see ``ratio_minus_one``.
    """
    log_ratio, w = _checked(log_ratio, weights)
    value = (w * (-torch.expm1(-log_ratio)).clamp(min=0.0)).sum()
    terms = (log_ratio > 0).to(log_ratio.dtype)
    return OccupancyPenalty(value, terms, _clipfrac(log_ratio, w, clip))


@OCCUPANCY_DIVERGENCES.register("kl", paper=_LAIDLAW + "; Schulman 2020 (k3)")
def kl(
    log_ratio: Tensor, weights: Tensor | None = None, clip: float = LOG_RATIO_CLIP
) -> OccupancyPenalty:
    """KL(π ‖ π_ref) over sequences, E_π[log w + 1/w − 1] (k3 of the sequence), term log w.

    The estimate is the RLHF code's ``kl`` (each term ≥ 0); ∇KL = E_π[(log w + 1) ∇log π],
    so t = log w (the +1 is a baseline): the same gradient as ``kl_coef`` with k1 in the
    reward, here with λ in the units of ``occupancy_lambda``.

    Args:
        log_ratio: log w of B completions sampled from π. Shape: (B,).
        weights: ω (see ``chi2``). Shape: (B,).
        clip: see ``ratio_minus_one`` (for 1/w − 1).
    """
    log_ratio, w = _checked(log_ratio, weights)
    value = (w * (log_ratio + inverse_ratio_minus_one(log_ratio, clip))).sum()
    return OccupancyPenalty(value, log_ratio.clone(), _clipfrac(log_ratio, w, clip))


def occupancy_lambda(r_base: Tensor, coef: float) -> float:
    """λ = coef · σ_R̃, with σ_R̃ the proxy's standard deviation on base-policy samples.

    Theorem 5.1 of Laidlaw et al. 2024 (arXiv 2403.03185) gives λ = σ_R̃ √(1 − r²), with r
    the proxy's correlation with the true reward under π_ref; r needs the true reward, so
    their code scales a scale-free coefficient by σ_R̃ and sweeps it over {1, 0.5, 0.2, 0.1,
    0.05, 0.02, 0.01} (cassidylaidlaw/orpo README). ``coef`` is that coefficient (√(1 − r²)
    when r is known).

    Args:
        r_base: proxy rewards of completions sampled from π_ref (over prompts and samples).
            Shape: (N,) or (P, M), flattened.
        coef: ≥ 0.

    Returns:
        λ in the proxy's units.
    """
    r = torch.as_tensor(r_base, dtype=torch.float64).flatten()
    if r.numel() < 2:
        raise ValueError(f"r_base: expected at least 2 base-policy rewards, got {r.numel()}")
    if not coef >= 0:
        raise ValueError(f"coef: expected >= 0, got {coef}")
    return float(coef) * float(r.std())
