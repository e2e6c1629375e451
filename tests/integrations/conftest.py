"""What the adapter tests share: a stand-in for a reward model's latents."""

from __future__ import annotations

import pytest
import torch


class FakeLatents:
    """A reward model that gives latents (``score_with_latents``, as ``RewardModel``): a
    completion's word count, distinct words and characters / 10, so long repetitive
    completions sit far from short varied ones."""

    def __init__(self) -> None:
        self.calls = 0

    def score_with_latents(self, prompts, completions):
        self.calls += 1
        h = torch.tensor(
            [[len(c.split()), len(set(c.split())), len(c) / 10] for c in completions],
            dtype=torch.float32,
        )
        return h[:, 0], h


@pytest.fixture
def fake_latents():
    return FakeLatents()
