"""A generative judge's verdict read off its next-token distribution, without sampling.

Issue 16 item 4: a language model prompted as a judge (directly, or after writing a rubric:
RM-R1, "Reward Modeling as Reasoning", Chen et al. 2025, arXiv 2505.02387, whose reasoning
reward models write chat-specific rubrics and then judge against them; Proxy-GRM,
"Rationale Matters: Learning Transferable Rubrics via Proxy-Guided Critique for VLM Reward
Models", code github.com/Qwen-Applications/Proxy-GRM, whose pipeline is rubric, then
criterion-based scoring, then a verdict) is asked for a rating, and the rating is not
sampled: its expectation under the model's next-token distribution restricted to the rating
tokens is the reward (the probability-weighted score of G-Eval, Liu et al. 2023, arXiv
2303.16634). Ties between samples, which a sampled or argmax rating makes common, become
rare, and the score is deterministic.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["expected_rating"]


def expected_rating(logits: Tensor, rating_token_ids: Tensor, ratings: Tensor) -> Tensor:
    """The expected rating under the next-token distribution restricted to the rating tokens.

    With z the next-token logits, t_1..t_K the rating tokens and r_1..r_K their ratings:

        p_k = exp(z[t_k]) / sum_j exp(z[t_j])          (softmax over the rating tokens only)
        E[r] = sum_k p_k r_k

    Restricting to the rating tokens renormalizes away the mass the model puts elsewhere
    (G-Eval's probability-weighted score, Liu et al. 2023, arXiv 2303.16634). With the two
    tokens Yes / No rated 1 / 0 this is P(Yes | Yes or No) = sigmoid(z[Yes] - z[No]).

    Args:
        logits: next-token logits. Shape: (..., V).
        rating_token_ids: the K distinct rating tokens' ids, each < V. Shape: (K,), K ≥ 2.
        ratings: the rating each token stands for. Shape: (K,).

    Returns:
        E[r], float32. Shape: (...,).

    >>> z = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))   # tokens 0..3
    >>> expected_rating(z, torch.tensor([1, 3]), torch.tensor([1.0, 2.0]))  # (0.2, 0.4)/0.6
    tensor([1.6667])
    """
    ids = torch.as_tensor(rating_token_ids)
    r = torch.as_tensor(ratings)
    if ids.ndim != 1 or ids.numel() < 2 or ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"rating_token_ids: expected a 1-d integer tensor of >= 2 ids, got shape "
            f"{tuple(ids.shape)} dtype {ids.dtype}"
        )
    if r.shape != ids.shape:
        raise ValueError(
            f"ratings: expected shape {tuple(ids.shape)} (one per rating token), got "
            f"{tuple(r.shape)}"
        )
    if logits.ndim < 1:
        raise ValueError("logits: expected shape (..., V), got a scalar")
    vocab = logits.shape[-1]
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise ValueError(f"rating_token_ids: expected ids in [0, {vocab}), got {ids.tolist()}")
    if ids.unique().numel() != ids.numel():
        raise ValueError(f"rating_token_ids: expected distinct ids, got {ids.tolist()}")
    z = logits.float().index_select(-1, ids.to(logits.device))
    if not bool(torch.isfinite(z).all()):
        raise ValueError("logits: the rating tokens' logits must be finite")
    p = torch.softmax(z, dim=-1)
    return (p * r.to(device=p.device, dtype=torch.float32)).sum(-1)
