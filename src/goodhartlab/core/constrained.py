"""Constrained RLHF: proxy points of component rewards, the Lagrangian reward and its
multipliers' dual ascent (Moskovitz et al. 2023, "Confronting Reward Model Overoptimization
with Constrained RLHF", arXiv 2310.04373).

With K component reward models r_1..r_K and the KL reward r_0 = −β · KL(π ‖ π0) as the
objective, the paper's two formulations with the KL reward as the objective differ only in
their constraints (``ConstraintKind``):

    μ-PPO ("ge"):  max_π  E[r_0]   s.t.  E[r_k] ≥ θ_k   (k = 1..K),   multipliers μ_k ≥ 0
    ξ-PPO ("eq"):  max_π  E[r_0]   s.t.  E[r_k] = θ_k   (k = 1..K),   multipliers ξ_k ∈ ℝ

through the Lagrangian L(π, μ) = E[r_0] + Σ_k μ_k (E[r_k] − θ_k), maximized in π and
minimized in μ. θ_k is component k's *proxy point* (:func:`proxy_point`): the value past
which more of r_k lowers gold. Under μ-PPO a component may overshoot its threshold (its
multiplier then falls to 0 and only the KL pulls it back); under ξ-PPO a component above its
threshold gets a negative multiplier, so the policy is pushed *down* that component: every
component is held at its proxy point, the paper's aim. The paper's All-PPO (the components
bounded above, the KL constrained too) is not implemented here.

As in the paper's reference code (github.com/tedmoskovitz/ConstrainedRL4LMs at 11ac8fe,
``rl4lms/algorithms/constrained_ppo/constrained_ppo.py``), the multipliers are squashed,
μ_k = σ(λ_k) ∈ (0, 1) for inequalities and ξ_k = tanh(λ_k) ∈ (−1, 1) for equalities
(lines 186-189: ``equality_constraints`` selects tanh), and the policy's signal is the
mixture (K − Σ_k μ_k) · r_0 + Σ_k μ_k · r_k (line 286; the weights sum to K). ξ-PPO is
that code with ``equality_constraints: True``, as its dialog configs set it
(``scripts/training/task_configs/dialog/gpt2_constrained_ppo.yml`` lines 40-46, "mu/xi-PPO -
KL"; ``gpt2_nm_ppo.yml`` line 46, NM-PPO's inner solver, though its line 40 says "mu-PPO").
Where we differ: the code mixes per-batch-normalized advantages; we mix the rewards, which
the RL algorithm then normalizes (GRPO per group, PPO after GAE). The code also clips the multipliers' gradient norm to
``max_grad_norm`` (lines 369-370) and starts λ at N(0, 0.01²) (lines 192-196); we do
neither (λ starts at ``init``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "ConstraintKind",
    "ProxyPoint",
    "dual_ascent_step",
    "lagrangian_reward",
    "multipliers",
    "proxy_point",
]

#: "ge": E[r_k] ≥ θ_k (μ-PPO, multipliers σ(λ) ∈ (0, 1)); "eq": E[r_k] = θ_k (ξ-PPO,
#: multipliers tanh(λ) ∈ (−1, 1)). Moskovitz et al. 2023 (arXiv 2310.04373).
ConstraintKind = Literal["ge", "eq"]


def multipliers(lam: Tensor, kind: ConstraintKind = "ge") -> Tensor:
    """The squashed Lagrange multipliers μ = σ(λ) ("ge", μ-PPO) or ξ = tanh(λ) ("eq", ξ-PPO).

    Args:
        lam: the unconstrained parameters λ. Shape: (K,)

    Returns:
        μ. Shape: (K,)
    """
    assert lam.ndim == 1, lam.shape
    if kind == "ge":
        return torch.sigmoid(lam)
    if kind == "eq":
        return torch.tanh(lam)
    raise ValueError(f"kind: expected 'ge' or 'eq', got {kind!r}")


def lagrangian_reward(r_objective: Tensor, r_components: Tensor, mu: Tensor) -> Tensor:
    """The policy's reward under the Lagrangian: (K − Σ_k μ_k) · r_0 + Σ_k μ_k · r_k.

    Moskovitz et al. 2023 (arXiv 2310.04373), the reference code's mixed advantage with
    squashed multipliers; the constant −Σ μ_k θ_k of the Lagrangian does not change the
    policy gradient and is left out.

    Args:
        r_objective: r_0, the objective's reward (the KL reward −β · KL). Shape: (B,)
        r_components: the component rewards r_k. Shape: (K, B)
        mu: the squashed multipliers (μ ∈ (0, 1) for μ-PPO, ξ ∈ (−1, 1) for ξ-PPO, whose
            KL weight K − Σ ξ_k then lies in (0, 2K)). Shape: (K,)

    Returns:
        Shape: (B,)
    """
    assert r_objective.ndim == 1, r_objective.shape
    assert r_components.ndim == 2, r_components.shape
    assert mu.ndim == 1 and mu.shape[0] == r_components.shape[0], (mu.shape, r_components.shape)
    mu = mu.to(r_components.dtype)
    k = r_components.shape[0]
    return (k - mu.sum()) * r_objective.to(r_components.dtype) + mu @ r_components


def dual_ascent_step(
    lam: Tensor,
    v: Tensor,
    theta: Tensor,
    *,
    lr: float,
    kind: ConstraintKind = "ge",
    momentum: float = 0.0,
    velocity: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One step on the multipliers: SGD (with momentum) on Σ_k μ_k(λ_k) · (v_k − θ_k).

    The Lagrangian is minimized in μ, so a component below its threshold (v_k < θ_k) raises
    its multiplier and one above lowers it (to 0 for "ge", μ-PPO: σ(λ) → 0; below 0 for "eq",
    ξ-PPO, which then pushes the component down toward θ_k):

        g_k = μ'(λ_k) · (v_k − θ_k)          (σ' = σ(1 − σ), tanh' = 1 − tanh²)
        b_k ← momentum · b_k + g_k,   λ_k ← λ_k − lr · b_k

    as torch.optim.SGD steps the reference code's ``lagrange_loss`` (Moskovitz et al. 2023,
    arXiv 2310.04373; their lr 0.1, momentum 0.1; they also clip this gradient's norm).

    Args:
        lam: λ. Shape: (K,)
        v: each component's value under the current policy (the batch mean). Shape: (K,)
        theta: the thresholds θ_k. Shape: (K,)
        lr: the multipliers' learning rate.
        momentum: SGD momentum.
        velocity: the momentum buffer b (None: the first step, b = g as in torch's SGD).
            Shape: (K,)

    Returns:
        (λ after the step, the new buffer). Shapes: (K,), (K,)
    """
    assert lam.ndim == 1 and v.shape == lam.shape and theta.shape == lam.shape, (
        lam.shape, v.shape, theta.shape,
    )  # fmt: skip
    mu = multipliers(lam, kind)
    dmu = mu * (1 - mu) if kind == "ge" else 1 - mu.square()
    g = dmu * (v.to(lam.dtype) - theta.to(lam.dtype))
    b = g if velocity is None else momentum * velocity + g
    return lam - lr * b, b


@dataclass(frozen=True)
class ProxyPoint:
    """A component's proxy point and the binned curve it was read from."""

    threshold: float
    """The mean component value of the bin of highest mean gold."""
    centers: list[float]
    """Each bin's mean component value (bins of equal counts, ascending)."""
    mean_gold: list[float]
    """Each bin's mean gold."""
    counts: list[int]
    peak_bin: int


def proxy_point(r_component: Tensor, r_gold: Tensor, bins: int = 10) -> ProxyPoint:
    """The proxy point of one component reward: where mean gold, binned by the component's
    value, peaks.

    Moskovitz et al. 2023 (arXiv 2310.04373) define the proxy point θ* of a component RM as
    the value past which more of it lowers the evaluation score. We read it from samples
    (base-policy, best-of-n or along an RL run): sort by r_component, cut into ``bins`` bins
    of equal counts (the first ``N mod bins`` one larger), take each bin's mean component
    value and mean gold; θ* is the mean component value of the bin of highest mean gold. A
    monotone relation puts θ* in the last bin: no proxy point within the samples' range.

    Args:
        r_component: the component proxy's value of each sample. Shape: (N,)
        r_gold: gold of each sample. Shape: (N,)
        bins: number of bins (N >= bins).

    Returns:
        :class:`ProxyPoint`.
    """
    assert r_component.ndim == 1 and r_gold.shape == r_component.shape, (
        r_component.shape, r_gold.shape,
    )  # fmt: skip
    n = r_component.shape[0]
    if not 1 <= bins <= n:
        raise ValueError(f"bins: expected 1 <= bins <= N = {n}, got {bins}")
    order = torch.argsort(r_component.double(), stable=True)
    x, g = r_component.double()[order], r_gold.double()[order]
    sizes = [n // bins + (i < n % bins) for i in range(bins)]
    centers, means, lo = [], [], 0
    for s in sizes:
        centers.append(float(x[lo : lo + s].mean()))
        means.append(float(g[lo : lo + s].mean()))
        lo += s
    peak = max(range(bins), key=lambda i: means[i])
    return ProxyPoint(centers[peak], centers, means, sizes, peak)
