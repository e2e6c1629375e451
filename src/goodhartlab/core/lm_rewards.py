"""Rewards read off a language model's own logits: confidence, reference likelihood, follow-up
likelihood and the endogenous (inverse soft-Q) reward.

Pure tensor functions; ``goodhartlab.rewards.lm_self`` builds the token sequences, runs the
model and calls these. Conventions: ``logits`` (B, T, V) are the model's next-token logits at
the T positions that *predict* ``targets`` (B, T) (position t holds the logits of the state
before token t); ``mask`` (B, T) is 1 on the tokens a reward reads, 0 elsewhere (padding, the
prompt). All reductions are over the masked tokens of each row, in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "crew_confidence",
    "endogenous_reward",
    "followup_likelihood",
    "reference_loglik",
    "token_logprobs",
]


def _check(logits: Tensor, targets: Tensor, mask: Tensor) -> None:
    if logits.dim() != 3:
        raise ValueError(f"logits: expected (B, T, V), got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape[:2] or mask.shape != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)} and mask "
            f"{tuple(mask.shape)}: expected (B, T, V), (B, T) and (B, T)"
        )


def token_logprobs(logits: Tensor, targets: Tensor) -> Tensor:
    """log p(y_t | state_t) = logits[t, y_t] − logsumexp(logits[t, :]).

    Shape: (B, T, V), (B, T) -> (B, T)
    """
    logits = logits.float()
    return logits.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1) - torch.logsumexp(
        logits, dim=-1
    )


def crew_confidence(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Confidence as a reward (CRew): the mean probability the model gives its own tokens.

        CRew(x, y) = (1 / |A|) Σ_{t ∈ A} p_θ(y_t | x, y_<t)

    Confidence-as-a-Reward (CRew), "Confidence as a Reward: Transforming LLMs into Reward
    Models" (2025): "token-level confidence in the model's final answers as a proxy for
    reward". The abstract leaves open which token-level confidence; this is the mean token
    *probability* (not log-prob, not negative entropy) over the answer tokens A (``mask``).
    In a close-ended task A is the final-answer span; the caller chooses it.

    A row with no masked token scores 0. Shape: (B, T, V), (B, T), (B, T) -> (B,)
    """
    _check(logits, targets, mask)
    m = mask.float()
    p = token_logprobs(logits, targets).exp()
    return (p * m).sum(-1) / m.sum(-1).clamp(min=1.0)


def reference_loglik(
    logits: Tensor, targets: Tensor, mask: Tensor, *, reduction: str = "sum"
) -> Tensor:
    """Log-probability of a reference answer after the completion.

        R(x, y) = log p_θ(a* | x, y) = Σ_{t ∈ a*} log p_θ(a*_t | x, y, a*_<t)

    "Likelihood-Based Reward Designs for General LLM Reasoning" (2025): the log-probability
    of the reference answer a* (conditioned on the prompt x and the chain of thought y) is the
    one likelihood reward that "performs well in all setups" (probability rewards such as
    VeriFree's vanish on long answers). ``reduction="sum"`` is that log-probability;
    ``"mean"`` divides by the reference's token count (the same ranking among completions of
    one prompt, which share a reference). ``mask`` marks the reference tokens.

    Shape: (B, T, V), (B, T), (B, T) -> (B,)
    """
    _check(logits, targets, mask)
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction: expected 'sum' or 'mean', got {reduction!r}")
    m = mask.float()
    total = (token_logprobs(logits, targets) * m).sum(-1)
    return total / m.sum(-1).clamp(min=1.0) if reduction == "mean" else total


def followup_likelihood(positive: Tensor, negative: Tensor | None = None) -> Tensor:
    """Follow-up likelihood as reward (FLR): how likely the user's next turn is a positive one.

        FLR(x, y) = mean_{f ∈ F+} ℓ(f | x, y) − mean_{f ∈ F−} ℓ(f | x, y)

    with ℓ(f | x, y) the log-likelihood of the follow-up user utterance f after the
    conversation (x, y) ("Aligning Language Models Using Follow-up Likelihood as Reward
    Signal", Zhang et al. 2024, arXiv 2409.13948). The caller chooses ℓ (``lm_self`` uses the
    per-token mean log-prob, so follow-ups of different lengths weigh alike). Without
    ``negative`` the reward is the positive term alone.

    Shape: (K+, B) [, (K−, B)] -> (B,)
    """
    if positive.dim() != 2 or positive.shape[0] < 1:
        raise ValueError(f"positive: expected (K, B) with K >= 1, got {tuple(positive.shape)}")
    r = positive.float().mean(0)
    if negative is not None:
        if negative.dim() != 2 or negative.shape[0] < 1 or negative.shape[1] != r.shape[0]:
            raise ValueError(
                f"negative: expected (K, {r.shape[0]}) with K >= 1, got {tuple(negative.shape)}"
            )
        r = r - negative.float().mean(0)
    return r


def endogenous_reward(
    logits: Tensor,
    actions: Tensor,
    mask: Tensor,
    *,
    alpha: float = 1.0,
    gamma: float = 1.0,
    terminal: bool = True,
) -> Tensor:
    """The endogenous reward: inverse soft Bellman residual of the logits as soft Q-values.

    "Generalist Reward Models: Found Inside Large Language Models" (2025): a model trained
    by next-token prediction holds a reward equivalent to one learned by offline inverse RL.
    Read its logits as a soft Q-function, Q(s, a) = logits(s)[a], with the soft value
    V(s) = α log Σ_a exp(Q(s, a) / α) (so π(a | s) = softmax(Q(s, ·) / α), the model's own
    policy at temperature α); inverting the soft Bellman equation gives

        r(s_t, a_t) = Q(s_t, a_t) − γ V(s_{t+1}),        R(x, y) = Σ_t r(s_t, a_t)

    summed over the completion's actions (``mask``). The state after the last action gets
    V = 0 when ``terminal`` (the last action ends the episode: the end-of-turn token), else
    its value from the logits there. Implemented per token, as above; with γ = 1 and a
    terminal last action the sum telescopes to

        R(x, y) = α Σ_t log π(a_t | s_t) + V(s_0),

    the completion's log-likelihood (scaled by α) plus the prompt's value, which is the same
    for every completion of a prompt (a test checks the identity).

    Args:
        logits: (B, T + 1, V): the logits at states s_0 … s_T; row b's state after its last
            action (index = its action count) must be present unless ``terminal``.
        actions: (B, T) token ids a_t; ``mask`` (B, T) marks each row's actions, a prefix.
        alpha: the soft-max temperature α > 0. gamma: the discount γ.

    Returns: R. Shape: (B,)
    """
    if logits.dim() != 3 or logits.shape[1] != actions.shape[1] + 1:
        raise ValueError(
            f"logits {tuple(logits.shape)}, actions {tuple(actions.shape)}: expected "
            "(B, T + 1, V) and (B, T) (the states s_0 ... s_T)"
        )
    if mask.shape != actions.shape or logits.shape[0] != actions.shape[0]:
        raise ValueError(f"mask {tuple(mask.shape)}: expected {tuple(actions.shape)}")
    if not alpha > 0:
        raise ValueError(f"alpha: expected > 0, got {alpha}")
    q = logits.float()
    m = mask.float()
    v = alpha * torch.logsumexp(q / alpha, dim=-1)  # (B, T + 1): V(s_0) ... V(s_T)
    q_taken = q[:, :-1].gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)  # (B, T)
    v_next = v[:, 1:]
    if terminal:
        nxt = torch.cat([m[:, 1:], torch.zeros_like(m[:, :1])], dim=1)
        last = m * (1.0 - nxt)  # each row's last action
        v_next = torch.where(last > 0, torch.zeros_like(v_next), v_next)
    return ((q_taken - gamma * v_next) * m).sum(-1)
