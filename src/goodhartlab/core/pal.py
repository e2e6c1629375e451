"""Pluralistic alignment with an ideal-point model (PAL-A), as pure functions of tensors.

Chen, Chen, Rege & Vinayak 2024, "PAL: Pluralistic Alignment Framework for Learning from
Heterogeneous Preferences", arXiv 2406.08469. Users differ in where their ideal point sits in
a latent space shared by all of them; a completion is the better for a user the closer its
embedding is to that user's ideal point:

    r_u(x, y) = −‖f(x, y) − a_u‖²,       a_u = Σ_k w_uk p_k,   w_u = softmax(θ_u)

with f(x, y) the latent of a completion (here a small MLP on the reward model's last hidden
state), p_k (k = 1..K) prototypes learned with f, and w_u a convex mixture of them per user
(PAL-A; the paper's softmax mixture over prototypes). A preference is Bradley-Terry on the
user's reward: P(y_c ≻ y_r | x, u) = σ(r_u(x, y_c) − r_u(x, y_r)). An unseen user is fitted
few-shot by learning only θ_u with f and the prototypes frozen.

Registered in ``RM_OBJECTIVES`` as ``pal`` (meta ``ideal_point``: ``train.rm`` hands it to
``train.rm_pal``, which builds the head ``rewards.pal_head``).

Notation: the paper's users are our personas (``meta["persona"]`` of a pair).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from goodhartlab.registry import RM_OBJECTIVES

PAL_PAPER = (
    "Chen, Chen, Rege & Vinayak 2024, 'PAL: Pluralistic Alignment Framework for Learning from "
    "Heterogeneous Preferences', arXiv 2406.08469"
)


def mixture_weights(weight_logits: Tensor) -> Tensor:
    """Each user's convex weights over the K prototypes: w_u = softmax(θ_u).

    Args:
        weight_logits: θ, one row per user. Shape: (U, K)

    Returns:
        w, rows on the simplex. Shape: (U, K)
    """
    assert weight_logits.ndim == 2, weight_logits.shape
    return torch.softmax(weight_logits, dim=-1)


def ideal_points(weight_logits: Tensor, prototypes: Tensor) -> Tensor:
    """The users' ideal points, convex mixtures of the prototypes: a_u = Σ_k w_uk p_k.

    PAL-A (Chen et al. 2024, arXiv 2406.08469, sec. 3).

    Args:
        weight_logits: θ, one row per user (w_u = softmax(θ_u)). Shape: (U, K)
        prototypes: p_k, one row per prototype. Shape: (K, D)

    Returns:
        a. Shape: (U, D)
    """
    assert prototypes.ndim == 2, prototypes.shape
    assert weight_logits.ndim == 2 and weight_logits.shape[1] == prototypes.shape[0], (
        weight_logits.shape,
        prototypes.shape,
    )
    return mixture_weights(weight_logits) @ prototypes


def ideal_point_reward(latents: Tensor, ideal: Tensor) -> Tensor:
    """The ideal-point reward: r = −‖f(x, y) − a_u‖² (squared Euclidean distance, negated).

    Chen et al. 2024 (arXiv 2406.08469, sec. 3, the ideal-point model of Coombs 1950).

    Args:
        latents: f(x, y) of each completion. Shape: (B, D)
        ideal: the ideal point of the user each completion is scored for. Shape: (B, D)

    Returns:
        r. Shape: (B,)
    """
    assert latents.ndim == 2 and ideal.shape == latents.shape, (latents.shape, ideal.shape)
    return -((latents - ideal) ** 2).sum(dim=-1)


def pal_loss(
    r_chosen: Tensor, r_rejected: Tensor, **_unused: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """Bradley-Terry on each pair's user's ideal-point rewards: −log σ(r_u(y_c) − r_u(y_r)).

    Chen et al. 2024 (arXiv 2406.08469, eq. for PAL-A with the logistic link). The rewards are
    :func:`ideal_point_reward` for the pair's user (``train.rm_pal`` computes them).

    Args:
        r_chosen: r_u(x, y_c). Shape: (B,)
        r_rejected: r_u(x, y_r). Shape: (B,)

    Returns:
        (mean loss, {"accuracy": fraction with r_c > r_r}).
    """
    assert r_chosen.ndim == 1 and r_rejected.shape == r_chosen.shape, (
        r_chosen.shape,
        r_rejected.shape,
    )
    gap = r_chosen - r_rejected
    return F.softplus(-gap).mean(), {"accuracy": (gap > 0).float().mean().detach()}


def mixture_prior_penalty(
    weight_logits: Tensor, prior_logits: Tensor, strength: float, n_pairs: int
) -> Tensor:
    """A Gaussian prior on a new user's mixture logits, per pair: λ/(2n) ‖θ_u − θ̄‖².

    Few-shot fitting of θ_u alone (Chen et al. 2024, arXiv 2406.08469, sec. 3: an unseen
    user gets only its weights learned) is maximum likelihood on n pairs; with few pairs it
    puts all weight on one prototype. Adding this term to the *mean* pair loss makes the fit
    the MAP estimate under θ_u ~ N(θ̄, λ⁻¹ I): (1/n) [Σ_i −log σ(Δr_i) + (λ/2) ‖θ_u − θ̄‖²].
    θ̄ is the population's logits (the mean of the seen users' θ, or 0 for the uniform
    mixture). The prior is worth a fixed amount of evidence, so its pull fades as n grows.
    Our addition, not in the paper (which fits θ_u unregularized).

    Args:
        weight_logits: θ_u. Shape: (K,) or (1, K)
        prior_logits: θ̄, broadcastable to ``weight_logits``. Shape: (K,) or (1, K)
        strength: λ ≥ 0, the prior's precision (0: no prior).
        n_pairs: n ≥ 1, the pairs whose mean loss the penalty is added to.

    Returns:
        The penalty, a scalar.
    """
    if strength < 0 or n_pairs < 1:
        raise ValueError(f"strength >= 0 and n_pairs >= 1 expected, got {strength}, {n_pairs}")
    return strength / (2.0 * n_pairs) * ((weight_logits - prior_logits) ** 2).sum()


RM_OBJECTIVES.register(
    "pal",
    pal_loss,
    description="PAL-A: ideal-point reward −‖f(x, y) − a_u‖² with each persona's ideal point a "
    "softmax mixture of K learned prototypes, Bradley-Terry per persona (pairs' "
    "meta['persona']; RMTrainConfig pal_* fields); few-shot: fit only a new persona's weights.",
    paper=PAL_PAPER,
    version="1",
    ideal_point=True,
)
