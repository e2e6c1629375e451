"""core.feature_reward: r = s + wᵀ (φ − μ) / σ + b on small tensors, by hand."""

from __future__ import annotations

import pytest
import torch

from goodhartlab.core.feature_reward import feature_reward, feature_statistics, standardize


def test_statistics_and_constant_feature():
    phi = torch.tensor([[1.0, 5.0, 2.0], [3.0, 5.0, 2.0], [5.0, 5.0, 8.0]])
    mean, std = feature_statistics(phi)
    torch.testing.assert_close(mean, torch.tensor([3.0, 5.0, 4.0]))
    # population std: sqrt(8/3) for column 0, 0 -> 1 for the constant column, sqrt(8) col 2
    torch.testing.assert_close(std, torch.tensor([(8 / 3) ** 0.5, 1.0, 8**0.5]))
    z = standardize(phi, mean, std)
    torch.testing.assert_close(z[:, 1], torch.zeros(3))
    with pytest.raises(ValueError, match="phi"):
        feature_statistics(torch.zeros(3))


def test_feature_reward_by_hand():
    s = torch.tensor([0.5, -1.0])
    phi = torch.tensor([[2.0, 0.0], [4.0, 3.0]])
    mean, std = torch.tensor([3.0, 1.0]), torch.tensor([1.0, 2.0])
    w, b = torch.tensor([2.0, -1.0]), torch.tensor(0.25)
    # row 0: 0.5 + 2·(−1) − 1·(−0.5) + 0.25 = −0.75; row 1: −1 + 2·1 − 1·1 + 0.25 = 0.25
    r = feature_reward(s, phi, mean, std, w, b)
    torch.testing.assert_close(r, torch.tensor([-0.75, 0.25]))
    # the gradient reaches w and the backbone score
    w.requires_grad_(True)
    s.requires_grad_(True)
    feature_reward(s, phi, mean, std, w, b).sum().backward()
    torch.testing.assert_close(w.grad, torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(s.grad, torch.ones(2))
