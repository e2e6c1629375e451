"""The feature layer of a domain-knowledge reward model (``core.feature_reward``).

A reward model with a feature set of ``RM_FEATURES`` scores

    r(x, y) = s_θ(x, y) + wᵀ (φ(x, y) − μ) / σ + b

with s_θ its backbone's scalar head. :class:`FeatureHead` holds (μ, σ, w, b); the
``RewardModel`` computes φ from the text of each pair it scores (at training and at scoring
alike) and adds the head's term. It is saved in ``goodhart_rm.json`` (``spec()``: the feature
set, its version and the F + F + F + 1 numbers, sealed with the directory), so
``RewardModel.from_pretrained`` scores with the features again. :class:`FeatureOnlyReward`
is the same layer without a backbone (s_θ = 0): a linear model on the features alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from goodhartlab.core.feature_reward import feature_reward, feature_statistics
from goodhartlab.registry import RM_FEATURES


def compute_features(name: str, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
    """φ of each (prompt, completion) under the feature set ``name``. Shape: (B, F), float32."""
    entry = RM_FEATURES.entry(name)
    f = len(entry.meta["names"])
    rows = [entry.obj(p, c) for p, c in zip(prompts, completions, strict=True)]
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), f)


class FeatureHead(nn.Module):
    """(μ, σ) buffers frozen from the training completions' features, and w, b learned
    (both zero at the start: the model begins as its backbone alone)."""

    def __init__(self, features: str, mean: Tensor, std: Tensor):
        super().__init__()
        self.features = RM_FEATURES.check(features, "features")
        self.register_buffer("mean", mean.detach().float().clone())
        self.register_buffer("std", std.detach().float().clone())
        self.weight = nn.Parameter(torch.zeros(mean.shape[0]))
        self.bias = nn.Parameter(torch.zeros(()))

    @classmethod
    def fit_statistics(cls, features: str, phi: Tensor) -> FeatureHead:
        mean, std = feature_statistics(phi)
        return cls(features, mean, std)

    def forward(self, backbone_score: Tensor, phi: Tensor) -> Tensor:
        phi = phi.to(self.weight.device)
        return feature_reward(backbone_score, phi, self.mean, self.std, self.weight, self.bias)

    def spec(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "features_version": RM_FEATURES.entry(self.features).version,
            "names": list(RM_FEATURES.entry(self.features).meta["names"]),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "weight": self.weight.detach().tolist(),
            "bias": float(self.bias.detach()),
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> FeatureHead:
        entry = RM_FEATURES.entry(spec["features"])
        if spec.get("features_version") != entry.version:
            raise ValueError(
                f"features {spec['features']!r}: saved with version "
                f"{spec.get('features_version')!r}, registered {entry.version!r}; retrain"
            )
        head = cls(spec["features"], torch.tensor(spec["mean"]), torch.tensor(spec["std"]))
        with torch.no_grad():
            head.weight.copy_(torch.tensor(spec["weight"]))
            head.bias.fill_(float(spec["bias"]))
        return head


class FeatureOnlyReward:
    """r(x, y) = wᵀ (φ(x, y) − μ) / σ + b: the features alone, no backbone."""

    def __init__(self, head: FeatureHead):
        self.head = head
        self.name = f"features:{head.features}"

    def score(self, prompts: Sequence[str], completions: Sequence[str], **_: Any) -> Tensor:
        phi = compute_features(self.head.features, prompts, completions)
        with torch.no_grad():
            return self.head(torch.zeros(len(phi)), phi).float().cpu()

    __call__ = score
