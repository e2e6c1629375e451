"""Nash learning from human feedback with Mirror Prox (Nash-MP): preferences, payoffs, steps.

Nash learning from human feedback (NLHF; Munos et al. 2023, arXiv 2312.00886) looks for the
Nash equilibrium of the symmetric two-player game whose payoff is a preference
P(y ≻ y' | x), regularized towards the reference policy π_ref:

    π*_β = argmax_π min_π'  P(π ≻ π') − β KL(π ‖ π_ref) + β KL(π' ‖ π_ref),

with P(π ≻ π') = E_{y∼π, y'∼π'} P(y ≻ y'). Nash Mirror Prox (Tiapkin, Calandriello,
Belomestny, Moulines, Naumov, Rasul, Valko, Ménard 2025, "Accelerating Nash Learning from
Human Feedback via Mirror Prox", arXiv 2505.19731) reaches it by two proximal steps per
iteration k, both anchored at π_k (step size η):

    π_{k+1/2} = argmax_π  η P(π ≻ π_k)       − ηβ KL(π ‖ π_ref) − KL(π ‖ π_k)   (extrapolation)
    π_{k+1}   = argmax_π  η P(π ≻ π_{k+1/2}) − ηβ KL(π ‖ π_ref) − KL(π ‖ π_k)   (update)

whose closed form on a finite action set is :func:`mirror_prox_step`. The paper writes the
steps as argmin_π (1/β) P(π_k ≻ π) + KL(π ‖ π_ref) + (1/η_paper) KL(π ‖ π_k); dividing by
1/β shows the two forms agree with our η = η_paper / β. Its last iterate converges linearly
to π*_β. For language models the paper estimates the proximal steps with stochastic policy
gradients; this module gives the pieces of our version of that (the payoff of a sampled
completion is its preference over the opponent policy's samples, the two KL terms are
regularizers of the loss: :func:`win_rate_against`, :func:`nash_mp_loss`), and
``optimize.nash_mp`` runs them. (Checked against the abstract and the two steps as quoted
in a review of the paper; its practical section's exact estimator was not available to us.)

The preference is either the Bradley-Terry one of a reward model, P(y ≻ y') = σ(r(y) − r(y'))
(:func:`bt_preference`): it is transitive, so the game has no cycles to resolve, but its
equilibrium is not reward maximization (the payoff saturates through σ: beating the other
policy's samples by a wide margin earns nothing more than beating them by a logit or two);
or a general pairwise preference model that reads both completions (``core.pairwise``,
NLHF's own setting), whose preferences over a group come as a tensor
(:func:`win_rate_from_preferences`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from goodhartlab.core.kl import token_kl
from goodhartlab.core.losses import grpo_loss

__all__ = [
    "bt_preference",
    "mirror_prox_step",
    "nash_mp_loss",
    "win_rate_against",
    "win_rate_from_preferences",
]


def bt_preference(r_a: Tensor, r_b: Tensor) -> Tensor:
    """Bradley-Terry preference of a over b: P(a ≻ b) = σ(r_a − r_b).

    Antisymmetric by construction: P(a ≻ b) + P(b ≻ a) = σ(d) + σ(−d) = 1. Bradley & Terry
    1952; the preference model of NLHF's experiments when built from a reward model
    (Munos et al. 2023, arXiv 2312.00886, §2).

    Args:
        r_a: rewards of the first completions (any shape). Shape: (...)
        r_b: rewards of the second, broadcastable against ``r_a``. Shape: (...)

    Returns:
        P(a ≻ b), broadcast shape of the inputs, in (0, 1).
    """
    r_a, r_b = torch.as_tensor(r_a), torch.as_tensor(r_b)
    return torch.sigmoid(r_a - r_b)


def win_rate_against(
    r_self: Tensor,
    group_size: int,
    r_opp: Tensor | None = None,
    opp_group_size: int | None = None,
) -> Tensor:
    """Each completion's estimated preference over the opponent policy of its prompt.

        P̂(y_i ≻ π') = 1/G' Σ_j σ(r(y_i) − r(y'_j))               (opponents y'_j ∼ π')
        P̂(y_i ≻ π)  = 1/(G − 1) Σ_{j ≠ i} σ(r(y_i) − r(y_j))     (self-play, r_opp None)

    The Monte-Carlo payoff of Nash-MP's policy-gradient steps (Tiapkin et al. 2025, arXiv
    2505.19731: the stochastic estimate of P(π ≻ π') in the proximal steps, here the
    completion's preference over the other policy's samples of the same prompt). Self-play leaves the completion itself out, so each term
    is an independent sample of π and the estimate is unbiased (including j = i would add a
    constant 1/2 · 1/G and shrink the rest by (G − 1)/G).

    Args:
        r_self: the reward of each completion, G contiguous rows per prompt. Shape: (B·G,)
        group_size: G (≥ 2 for self-play).
        r_opp: the opponents' rewards, G' contiguous rows per prompt in the same prompt
            order, or None for self-play against the other members of the group.
            Shape: (B·G',)
        opp_group_size: G' (required with ``r_opp``).

    Returns:
        P̂ per completion, in (0, 1). Shape: (B·G,)
    """
    r_self = torch.as_tensor(r_self)
    assert r_self.ndim == 1, r_self.shape
    G = int(group_size)
    if G < 1 or r_self.shape[0] % G:
        raise ValueError(f"group_size: must divide the {r_self.shape[0]} rows; got {G}")
    B = r_self.shape[0] // G
    mine = r_self.reshape(B, G)
    if r_opp is None:
        if G < 2:
            raise ValueError(f"group_size: self-play needs G >= 2 completions; got {G}")
        pref = bt_preference(mine.unsqueeze(2), mine.unsqueeze(1))  # (B, G, G)
        return win_rate_from_preferences(pref, self_play=True)
    r_opp = torch.as_tensor(r_opp).to(r_self.dtype)
    assert r_opp.ndim == 1, r_opp.shape
    if opp_group_size is None or r_opp.shape[0] != B * opp_group_size:
        raise ValueError(
            f"r_opp: expected {B} prompts x opp_group_size rows; got {r_opp.shape[0]} rows "
            f"with opp_group_size={opp_group_size}"
        )
    theirs = r_opp.reshape(B, opp_group_size)
    pref = bt_preference(mine.unsqueeze(2), theirs.unsqueeze(1))  # (B, G, G')
    return win_rate_from_preferences(pref, self_play=False)


def win_rate_from_preferences(preference: Tensor, *, self_play: bool) -> Tensor:
    """Each completion's mean preference over its prompt's opponents, from the preferences.

        P̂(y_i ≻ π') = 1/G' Σ_j P[b, i, j]                 (opponents y'_j ∼ π')
        P̂(y_i ≻ π)  = 1/(G − 1) Σ_{j ≠ i} P[b, i, j]      (self-play: y'_j = y_j, G' = G)

    the payoff of Nash-MP's policy-gradient steps (:func:`win_rate_against`, which builds
    P from a reward model's Bradley-Terry preference; a pairwise preference model gives P
    directly: ``rewards.pairwise.PairwisePreferenceModel.preference_matrix``). Self-play
    leaves the diagonal P(y_i ≻ y_i) out (1/2 for any antisymmetric preference).

    Args:
        preference: P[b, i, j] = P(y_{b,i} ≻ y'_{b,j} | x_b). Shape: (B, G, G')
        self_play: the opponents are the group itself (then G' = G ≥ 2).

    Returns:
        P̂ per completion, prompt-major. Shape: (B·G,)
    """
    assert preference.ndim == 3, preference.shape
    if not self_play:
        return preference.mean(dim=2).reshape(-1)
    G = preference.shape[1]
    if preference.shape[2] != G or G < 2:
        raise ValueError(
            f"preference: self-play needs a square (B, G, G) tensor with G >= 2; got "
            f"{tuple(preference.shape)}"
        )
    off_diagonal = ~torch.eye(G, dtype=torch.bool, device=preference.device)
    return (preference * off_diagonal).sum(dim=2).reshape(-1) / (G - 1)


def nash_mp_loss(
    logp: Tensor,
    logp_old: Tensor,
    logp_ref: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    *,
    prox_coef: float,
    clip_coef: float = 0.2,
    kl_coef: float = 0.0,
    loss_type: str = "grpo",
    kl_estimator: str = "k3",
) -> tuple[Tensor, dict[str, Tensor]]:
    """One Nash-MP proximal step as a loss: clipped policy gradient on the payoff, β KL to
    π_ref and 1/η KL to the anchor π_k.

        L = L_GRPO(Â, β)  +  (1/η) · 1/B Σ_i (Σ_t m_{i,t} k3(π_θ, π_k)_{i,t}) / |y_i|

    with Â the group-normalized payoff P̂(y ≻ opponent) (:func:`win_rate_against`), the
    β KL(π ‖ π_ref) of the proximal steps as GRPO's k3 term (``core.losses.grpo_loss``) and
    KL(π ‖ π_k) as the k3 estimate on the anchor's samples (π_k = π_old, the sampling policy:
    Tiapkin et al. 2025, arXiv 2505.19731, Nash-MP's proximal steps per unit of payoff, 1/η =
    ``prox_coef`` = β / η_paper; GRPO's std normalization of Â rescales the payoff, and so
    these weights relative to it, per group). At θ = θ_k the anchor term and its gradient are 0: it only acts after the
    first of several updates on the same batch (epochs > 1 or minibatches).

    Args:
        logp: log π_θ of the sampled tokens (carries the gradient). Shape: (B, T)
        logp_old: the same under the anchor π_k that sampled them. Shape: (B, T)
        logp_ref: the same under π_ref, or None when ``kl_coef`` = 0. Shape: (B, T)
        advantages: one per completion. Shape: (B,)
        mask: 1 on completion tokens. Shape: (B, T)
        prox_coef: 1/η ≥ 0.
        clip_coef, kl_coef, loss_type, kl_estimator: as ``core.losses.grpo_loss``.

    Returns:
        ``(loss, stats)``: grpo_loss's stats plus ``prox_kl`` (the anchor term's k3 mean).
    """
    assert logp.ndim == 2, logp.shape
    if not prox_coef >= 0.0:
        raise ValueError(f"prox_coef must be >= 0; got {prox_coef}")
    loss, stats = grpo_loss(
        logp, logp_old, logp_ref, advantages, mask,
        clip_coef=clip_coef, kl_coef=kl_coef, loss_type=loss_type, kl_estimator=kl_estimator,
    )  # fmt: skip
    m = mask.to(logp.dtype)
    prox_token = token_kl(logp, logp_old.detach(), "k3")
    prox = ((prox_token * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)).mean()
    return loss + prox_coef * prox, {**stats, "prox_kl": prox.detach()}


def mirror_prox_step(
    log_pi: Tensor, log_ref: Tensor, preference: Tensor, eta: float, beta: float
) -> tuple[Tensor, Tensor]:
    """One exact Nash-MP iteration on a finite action set (a matrix game).

        log π_{k+1/2} = [log π_k + ηβ log π_ref + η P π_k      ] / (1 + ηβ) − log Z
        log π_{k+1}   = [log π_k + ηβ log π_ref + η P π_{k+1/2}] / (1 + ηβ) − log Z'

    the closed forms of the two proximal steps (Tiapkin et al. 2025, arXiv 2505.19731,
    Nash-MP), with (P π)(a) = Σ_b P(a ≻ b) π(b). The fixed point is the β-regularized Nash
    equilibrium π* ∝ π_ref exp(P π* / β) (Munos et al. 2023, arXiv 2312.00886).

    Args:
        log_pi: log π_k. Shape: (A,)
        log_ref: log π_ref. Shape: (A,)
        preference: P[a, b] = P(a ≻ b), with P + Pᵀ = 1. Shape: (A, A)
        eta: η > 0.
        beta: β ≥ 0.

    Returns:
        ``(log π_{k+1/2}, log π_{k+1})``, each normalized. Shapes: (A,), (A,)
    """
    assert log_pi.ndim == 1 and log_ref.shape == log_pi.shape, (log_pi.shape, log_ref.shape)
    assert preference.shape == (log_pi.shape[0],) * 2, preference.shape
    if not (eta > 0 and beta >= 0):
        raise ValueError(f"eta must be > 0 and beta >= 0; got eta={eta}, beta={beta}")

    def prox(opponent: Tensor) -> Tensor:
        z = (log_pi + eta * beta * log_ref + eta * (preference @ opponent.exp())) / (1 + eta * beta)
        return z - torch.logsumexp(z, dim=0)

    half = prox(log_pi)
    return half, prox(half)
