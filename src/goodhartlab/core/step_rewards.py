"""Step-level (process) rewards: bound the return a policy can collect from a sequence of steps.

Gao et al. 2024, "On designing effective RL reward at training time for LLM reasoning",
arXiv 2410.15115. A completion is a sequence of K steps (reasoning steps there, sentences in
toy_text); the reward model scores every prefix p^(k) = steps 1..k, r_k = r(q, p^(k)). Used
as dense rewards, Σ_k r_k grows with every extra step the model scores well, and the policy
learns to repeat correct but useless steps. The paper's two refinements bound the return:

- Clip: r'_k = min(r_k − η, 0), so every step's reward is ≤ 0 and the return Σ_k r'_k ≤ 0;
- Delta: r'_k = r_k − r_{k+1} for k < K and r'_K = r_K, so that the return from step k on
  telescopes to Σ_{j ≥ k} r'_j = r_k, one reward-model score, whatever follows it.

A sequence-level algorithm (GRPO, RLOO) sees only the return from the first step: Σ_k r'_k,
which for Delta is r_1, the score of the first step alone; the per-step rewards matter to a
token-level one (PPO, each on the last token of its step: :func:`scatter_step_rewards`).

Notation: our ``r_steps[b, k]`` is the paper's r_process(q, p^(k+1)) (0-based k); rows hold
K_b ≥ 1 steps, left-aligned, ``step_mask`` 1 on them. The paper adds the success reward of
the final answer and, in its figure, drops the last step's process reward (the answer step is
judged by the success reward); toy_text has no success reward, so our default keeps r_K (the
proxy's score of the whole completion) and ``drop_last=True`` gives the paper's form.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "clip_step_rewards",
    "delta_step_rewards",
    "scatter_step_rewards",
    "step_returns",
]


def _check_steps(r_steps: Tensor, step_mask: Tensor) -> tuple[Tensor, Tensor]:
    r_steps, step_mask = torch.as_tensor(r_steps), torch.as_tensor(step_mask)
    assert r_steps.ndim == 2, r_steps.shape
    if step_mask.shape != r_steps.shape:
        raise ValueError(
            f"step_mask must have the shape of r_steps {tuple(r_steps.shape)}; "
            f"got {tuple(step_mask.shape)}"
        )
    mask = step_mask.to(torch.bool)
    counts = mask.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("step_mask: every row needs at least one step")
    left_aligned = torch.arange(mask.shape[1], device=mask.device) < counts.unsqueeze(1)
    if not torch.equal(mask, left_aligned):
        raise ValueError("step_mask: the steps of each row must be left-aligned (1s, then 0s)")
    if not r_steps.is_floating_point():
        r_steps = r_steps.to(torch.float64)
    if not bool(torch.isfinite(r_steps[mask]).all()):
        raise ValueError("r_steps: step rewards must be finite")
    return r_steps, mask


def clip_step_rewards(r_steps: Tensor, step_mask: Tensor, eta: float) -> Tensor:
    """Gao et al. 2024's Clip: every step's reward bounded above by 0 after a shift η.

        r'_k = min(r_k − η, 0),   so   Σ_k r'_k ≤ 0

    (arXiv 2410.15115, the Clip mechanism; η a threshold on the reward-model score: a step
    scored above η earns 0, one below it is penalized by how far below it is.)

    Args:
        r_steps: reward-model score of each prefix, r_k = r(q, p^(k)). Shape: (B, K)
        step_mask: 1 on each row's K_b steps (left-aligned), 0 on padding. Shape: (B, K)
        eta: the threshold η, in the reward model's units.

    Returns:
        r'_k, 0 on padding. Shape: (B, K)
    """
    r_steps, mask = _check_steps(r_steps, step_mask)
    return torch.where(mask, torch.clamp(r_steps - eta, max=0.0), torch.zeros_like(r_steps))


def delta_step_rewards(r_steps: Tensor, step_mask: Tensor, drop_last: bool = False) -> Tensor:
    """Gao et al. 2024's Delta: each step rewarded by the difference of successive scores.

        r'_k = r_k − r_{k+1}  (k < K),   r'_K = r_K,   so   Σ_{j ≥ k} r'_j = r_k

    (arXiv 2410.15115, the Delta mechanism.) The return from any step is a single score,
    so repeating a well-scored step gains nothing. With ``drop_last`` the last step is left
    out first (the paper's answer step, whose reward is the success reward): r'_K = 0,
    r'_{K−1} = r_{K−1}; a row of one step then gets 0.

    Args:
        r_steps: reward-model score of each prefix, r_k = r(q, p^(k)). Shape: (B, K)
        step_mask: 1 on each row's K_b steps (left-aligned), 0 on padding. Shape: (B, K)
        drop_last: leave each row's last step out.

    Returns:
        r'_k, 0 on padding. Shape: (B, K)
    """
    r_steps, mask = _check_steps(r_steps, step_mask)
    if drop_last:
        last = mask.sum(dim=1, keepdim=True) - 1
        mask = mask & (torch.arange(mask.shape[1], device=mask.device) < last)
    nxt = torch.zeros_like(r_steps)
    nxt[:, :-1] = torch.where(mask[:, 1:], r_steps[:, 1:], torch.zeros_like(r_steps[:, 1:]))
    return torch.where(mask, r_steps - nxt, torch.zeros_like(r_steps))


def step_returns(step_rewards: Tensor, step_mask: Tensor) -> Tensor:
    """Undiscounted return from each step on: G_k = Σ_{j ≥ k} r'_j (0 on padding).

    G_1 is the sequence-level reward a sequence-level algorithm (GRPO, RLOO) optimizes.

    Args:
        step_rewards: r'_k. Shape: (B, K)
        step_mask: 1 on each row's steps (left-aligned). Shape: (B, K)

    Returns:
        Shape: (B, K)
    """
    step_rewards, mask = _check_steps(step_rewards, step_mask)
    r = torch.where(mask, step_rewards, torch.zeros_like(step_rewards))
    return torch.where(mask, r.flip(1).cumsum(1).flip(1), torch.zeros_like(r))


def scatter_step_rewards(
    step_rewards: Tensor, step_mask: Tensor, step_token: Tensor, num_tokens: int
) -> Tensor:
    """Per-token rewards with each step's reward on the last token of that step.

        r_t = Σ_k [t = t_k] · r'_k,   so   Σ_t r_t = Σ_k r'_k

    (As a process reward is given for a PRM-scored step at its last token, Gao et al. 2024,
    arXiv 2410.15115, and as Ziegler et al. 2019 put the sequence reward on the last token.)
    Two steps ending on the same token add up there.

    Args:
        step_rewards: r'_k. Shape: (B, K)
        step_mask: 1 on each row's steps (left-aligned). Shape: (B, K)
        step_token: t_k, the completion-token index where step k ends, in [0, num_tokens).
            Shape: (B, K)
        num_tokens: T, the completion width.

    Returns:
        Shape: (B, T)
    """
    step_rewards, mask = _check_steps(step_rewards, step_mask)
    step_token = torch.as_tensor(step_token, device=step_rewards.device)
    if step_token.shape != step_rewards.shape:
        raise ValueError(
            f"step_token must have shape {tuple(step_rewards.shape)}; got {tuple(step_token.shape)}"
        )
    index = torch.where(mask, step_token.long(), torch.zeros_like(step_token, dtype=torch.long))
    if bool(((index < 0) | (index >= num_tokens)).any()):
        raise ValueError(f"step_token: indices must be in [0, {num_tokens})")
    out = torch.zeros(step_rewards.shape[0], num_tokens, dtype=step_rewards.dtype)
    out = out.to(step_rewards.device)
    return out.scatter_add(
        1, index, torch.where(mask, step_rewards, torch.zeros_like(step_rewards))
    )
