"""A linear Bradley-Terry model on domain-knowledge features alone (no backbone).

The features-only baseline of ``core.feature_reward``: r(x, y) = wᵀ (φ(x, y) − μ) / σ + b,
(μ, σ) from the training completions, w fitted by full-batch Adam on the Bradley-Terry loss
(``core.losses.bradley_terry_loss``) plus an L2 penalty λ ‖w‖² (b cancels in every pair
difference and stays 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from goodhartlab.core.losses import bradley_terry_loss
from goodhartlab.data.schema import PreferencePair
from goodhartlab.rewards.feature_head import FeatureHead, FeatureOnlyReward, compute_features


def train_feature_only(
    pairs: Sequence[PreferencePair],
    features: str,
    *,
    steps: int = 300,
    lr: float = 0.05,
    l2: float = 1e-3,
    seed: int = 0,
) -> FeatureOnlyReward:
    """Fit w on ``pairs`` (deterministic given ``seed``; the loss is convex, so the seed
    matters little)."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs: expected at least one training pair")
    torch.manual_seed(seed)
    prompts = [p.prompt for p in pairs]
    phi_c = compute_features(features, prompts, [p.chosen for p in pairs])
    phi_r = compute_features(features, prompts, [p.rejected for p in pairs])
    head = FeatureHead.fit_statistics(features, torch.cat([phi_c, phi_r]))
    head.bias.requires_grad_(False)
    optimizer = torch.optim.Adam([head.weight], lr=lr)
    zeros = torch.zeros(len(pairs))
    for _ in range(steps):
        loss, _stats = bradley_terry_loss(head(zeros, phi_c), head(zeros, phi_r))
        loss = loss + l2 * head.weight.square().sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    head.eval()
    return FeatureOnlyReward(head)
