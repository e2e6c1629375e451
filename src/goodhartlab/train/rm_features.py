"""A linear Bradley-Terry model on domain-knowledge features alone (no backbone).

The features-only baseline of ``core.feature_reward``: r(x, y) = wᵀ (φ(x, y) − μ) / σ + b,
(μ, σ) from the training completions, w fitted by full-batch Adam on the Bradley-Terry loss
(``core.losses.bradley_terry_loss``) plus an L2 penalty λ ‖w‖² (b cancels in every pair
difference and stays 0). :func:`fit_feature_head` also builds the feature layer a backbone
model trains with (``RMTrainConfig.features``, ``train.rm.ScalarHead``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from goodhartlab.core.losses import bradley_terry_loss
from goodhartlab.data.schema import PreferencePair
from goodhartlab.rewards.feature_head import FeatureHead, FeatureOnlyReward, compute_features
from goodhartlab.train.rm_loop import run_epochs


def fit_feature_head(
    features: str, pairs: Sequence[PreferencePair]
) -> tuple[FeatureHead, torch.Tensor, torch.Tensor]:
    """The feature layer of ``features`` (μ, σ from both completions of ``pairs``; w = 0,
    b = 0) and the features of the chosen and of the rejected completions. Shapes: (n, F)."""
    prompts = [p.prompt for p in pairs]
    phi_c = compute_features(features, prompts, [p.chosen for p in pairs])
    phi_r = compute_features(features, prompts, [p.rejected for p in pairs])
    return FeatureHead.fit_statistics(features, torch.cat([phi_c, phi_r])), phi_c, phi_r


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
    head, phi_c, phi_r = fit_feature_head(features, pairs)
    head.bias.requires_grad_(False)
    zeros = torch.zeros(len(pairs))

    def full_batch_loss(_idx: list[int]) -> tuple[torch.Tensor, None]:
        loss, _stats = bradley_terry_loss(head(zeros, phi_c), head(zeros, phi_r))
        return loss + l2 * head.weight.square().sum(), None

    optimizer = torch.optim.Adam([head.weight], lr=lr)
    run_epochs(
        full_batch_loss, optimizer, None, items=len(pairs), batch=len(pairs), epochs=steps,
        order_gen=None, module=head,
    )  # fmt: skip
    return FeatureOnlyReward(head)
