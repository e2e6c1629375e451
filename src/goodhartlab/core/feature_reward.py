"""A reward model with domain-knowledge features, as pure functions of tensors.

"Leveraging Domain Knowledge for Efficient Reward Modelling in RLHF: A Case-Study in
E-Commerce Opinion Summarization" (11 authors, February 2024; its abstract is in the seed
papers): instead of asking
thousands of preference labels for a reward model to discover what a good summary is, a
domain expert writes down what matters (aspects covered, sentiment, fluency, length, ...) as
features, and the reward is learned over them, so that few labels (940 in the paper) suffice.

Here the features sit beside a learned backbone: with φ(x, y) ∈ R^F the feature vector of a
prompt and completion (a feature set of ``RM_FEATURES``), μ and σ its per-feature mean and
standard deviation over the training completions (frozen before training),

    r(x, y) = s_θ(x, y) + wᵀ (φ(x, y) − μ) / σ + b

with s_θ the backbone's scalar head at the last token and (w, b) a linear layer, trained
jointly under the usual objective (Bradley-Terry: −log σ(r(x, y_c) − r(x, y_r))). Without a
backbone (``s_θ = 0``) it is a linear Bradley-Terry model on the features alone, the
features-only baseline. A feature constant over the training
completions (σ = 0) gets σ = 1, so it is centred but never divides by zero.
"""

from __future__ import annotations

import torch
from torch import Tensor

FEATURE_REWARD_PAPER = (
    "'Leveraging Domain Knowledge for Efficient Reward Modelling in RLHF: A Case-Study in "
    "E-Commerce Opinion Summarization' (February 2024)"
)


def feature_statistics(phi: Tensor, *, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Per-feature mean μ and (population) standard deviation σ, σ < eps replaced by 1.

    Args:
        phi: feature vectors of the training completions. Shape: (N, F)

    Returns:
        (μ, σ). Shapes: (F,), (F,)
    """
    if phi.ndim != 2 or phi.shape[0] < 1:
        raise ValueError(f"phi: expected shape (N >= 1, F), got {tuple(phi.shape)}")
    mean = phi.mean(dim=0)
    std = phi.std(dim=0, unbiased=False)
    return mean, torch.where(std < eps, torch.ones_like(std), std)


def standardize(phi: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(φ − μ) / σ. Shapes: (B, F), (F,), (F,) -> (B, F)"""
    return (phi - mean) / std


def feature_reward(
    backbone_score: Tensor, phi: Tensor, mean: Tensor, std: Tensor, weight: Tensor, bias: Tensor
) -> Tensor:
    """r = s + wᵀ (φ − μ) / σ + b (the module docstring).

    Args:
        backbone_score: s_θ(x, y); zeros for the features-only model. Shape: (B,)
        phi: φ(x, y). Shape: (B, F)
        mean, std: μ, σ. Shape: (F,)
        weight: w. Shape: (F,)
        bias: b. Shape: () or (1,)

    Returns:
        Rewards. Shape: (B,)
    """
    return backbone_score + standardize(phi, mean, std) @ weight + bias.reshape(())
