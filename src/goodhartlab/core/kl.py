"""KL divergence between a policy and its reference, per token, per sequence, and for best-of-n."""

from __future__ import annotations

import numpy as np
import torch

from goodhartlab.registry import REGULARIZERS

__all__ = ["REGULARIZERS", "KLEstimator", "bon_kl", "sequence_kl", "token_kl"]

#: A name in the ``REGULARIZERS`` registry: "k1", "k2", "k3" built in.
KLEstimator = str

# Below this |log r|, expm1(x) - x loses most of its digits to cancellation (relative error
# ~ 2 eps / |x|); the Taylor series up to x^6 has relative truncation error ~ x^5 / 2520.
# At 1e-2 both are ~1e-14 in float64.
_K3_SERIES_BELOW = 1e-2


def _k3(log_r: torch.Tensor) -> torch.Tensor:
    x = log_r
    # e^x - 1 - x = x^2 (1/2 + x (1/6 + x (1/24 + x (1/120 + x / 720))))
    series = x * x * (0.5 + x * (1 / 6 + x * (1 / 24 + x * (1 / 120 + x / 720))))
    return torch.where(x.abs() < _K3_SERIES_BELOW, series, torch.expm1(x) - x)


def token_kl(
    logp: torch.Tensor, logp_ref: torch.Tensor, estimator: KLEstimator = "k1"
) -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from tokens sampled from π.

    With log r = log π_ref(x) − log π(x) and x ~ π (Schulman 2020, "Approximating KL
    divergence", http://joschu.net/blog/kl-approx.html):

        k1 = −log r                 unbiased, high variance, can be negative
        k2 = (log r)² / 2           biased (low for small KL), always ≥ 0
        k3 = (r − 1) − log r        unbiased, always ≥ 0

    k3 is computed as expm1(log r) − log r, and by its Taylor series where |log r| < 1e-2,
    so that it stays accurate (and ≥ 0) when π ≈ π_ref.

    Args:
        logp: log-probabilities of the sampled tokens under π. Shape: (B, T), or any
            shape; elementwise.
        logp_ref: log-probabilities of the same tokens under π_ref. Shape: as ``logp``.
        estimator: "k1", "k2", "k3", or another name in the ``REGULARIZERS`` registry.

    Returns:
        The per-token estimate, in nats. Shape: as ``logp``.
    """
    logp = torch.as_tensor(logp)
    logp_ref = torch.as_tensor(logp_ref)
    if logp.shape != logp_ref.shape:
        raise ValueError(
            f"logp_ref must have the shape of logp; got logp {tuple(logp.shape)}, "
            f"logp_ref {tuple(logp_ref.shape)}"
        )
    try:
        fn = REGULARIZERS[estimator]
    except ValueError as e:
        raise ValueError(f"estimator: {e}") from None
    return fn(logp, logp_ref)


_SCHULMAN = "Schulman 2020, Approximating KL divergence, http://joschu.net/blog/kl-approx.html"


@REGULARIZERS.register("k1", paper=_SCHULMAN)
def k1(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """k1 = log π − log π_ref: unbiased for KL(π ‖ π_ref), high variance, can be negative."""
    return logp - logp_ref


@REGULARIZERS.register("k2", paper=_SCHULMAN)
def k2(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """k2 = (log π_ref − log π)² / 2: biased (low for small KL), always ≥ 0."""
    return 0.5 * (logp_ref - logp).square()


@REGULARIZERS.register("k3", paper=_SCHULMAN + "; Shao et al. 2024, arXiv 2402.03300 (GRPO)")
def k3(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """k3 = (r − 1) − log r with r = π_ref / π: unbiased, always ≥ 0 (GRPO's KL term)."""
    return _k3(logp_ref - logp)


def sequence_kl(
    logp: torch.Tensor,
    logp_ref: torch.Tensor,
    mask: torch.Tensor,
    estimator: KLEstimator = "k1",
) -> torch.Tensor:
    """Sequence-level estimate of KL(π ‖ π_ref): the sum of ``token_kl`` over completion tokens.

        KL(π(·|x) ‖ π_ref(·|x)) ≈ Σ_t mask_t · k(log π_ref(y_t) − log π(y_t))

    (Schulman 2020, "Approximating KL divergence"; the sum over tokens is the chain rule of
    KL for autoregressive policies.) Positions where ``mask`` is 0 are excluded even when
    ``logp`` holds −inf or NaN there (padding).

    Args:
        logp: log π of the sampled tokens. Shape: (B, T).
        logp_ref: log π_ref of the same tokens. Shape: (B, T).
        mask: 1 (or True) on completion tokens, 0 (False) on prompt and padding.
            Shape: (B, T).
        estimator: "k1", "k2" or "k3" (see ``token_kl``).

    Returns:
        KL in nats per sequence. Shape: (B,).
    """
    logp = torch.as_tensor(logp)
    logp_ref = torch.as_tensor(logp_ref)
    mask = torch.as_tensor(mask)
    if logp.ndim != 2:
        raise ValueError(f"logp must have shape (B, T); got {tuple(logp.shape)}")
    if mask.shape != logp.shape:
        raise ValueError(
            f"mask must have the shape of logp {tuple(logp.shape)}; got {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must hold only 0 and 1 (or bool)")
        mask = mask.bool()
    kl_token = token_kl(logp, logp_ref, estimator)
    return torch.where(mask, kl_token, torch.zeros((), dtype=kl_token.dtype)).sum(dim=-1)


def bon_kl(n: int | list[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Analytic KL of best-of-n sampling against the base policy.

        KL_bon(n) = log n − (n − 1) / n

    (Stiennon et al. 2020, "Learning to summarize from human feedback", arXiv 2009.01325,
    appendix.) This is an upper bound, not the exact KL: it is tight only when the reward has
    no ties and the base policy's probability mass is spread thin (Beirami et al. 2024,
    "Theoretical guarantees on the best-of-n alignment policy", arXiv 2401.01879). Report it
    as a bound, next to an empirical estimate where one is available.

    Args:
        n: number of samples (integer ≥ 1). Shape: () or (K,), any shape; elementwise.

    Returns:
        The bound in nats, float64. Shape: as ``n``.
    """
    n_t = torch.as_tensor(n, dtype=torch.float64)
    if n_t.numel() and not bool((n_t == n_t.round()).all()):
        raise ValueError(f"n must hold integers; got {n!r}")
    if n_t.numel() and not bool((n_t >= 1).all()):
        raise ValueError(f"n must be ≥ 1; got {n!r}")
    return torch.log(n_t) - (n_t - 1) / n_t
