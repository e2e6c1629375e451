"""Ensembles of reward models: per-member rewards (M, B) and their aggregate (B,).

Members differ by fine-tuning seed (head init + data order, Coste et al. 2023,
arXiv 2310.02743) or by pretraining seed / backbone (Eisenstein et al. 2023,
arXiv 2312.09244); either way they must read the same token ids, so they must share a
tokenizer vocabulary.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from goodhartlab.core.aggregate import get_aggregator
from goodhartlab.rewards.reward_model import RewardModel


class Ensemble:
    """Several reward models scored together.

    ``score_members`` returns every member's rewards, Shape: (M, B); ``score`` aggregates
    them with an aggregator from :mod:`goodhartlab.core.aggregate` (mean, wco, uwo, median,
    mean_minus_std), Shape: (B,).

    Raises:
        ValueError: no members, or members whose tokenizers have different vocabularies.
    """

    def __init__(self, members: Sequence[RewardModel]):
        members = list(members)
        if not members:
            raise ValueError("members: expected at least one reward model")
        vocab0 = members[0].tokenizer.get_vocab()
        for i, m in enumerate(members[1:], start=1):
            vocab = m.tokenizer.get_vocab()
            if vocab != vocab0:
                diff = sorted(set(vocab0.items()) ^ set(vocab.items()))[:3]
                raise ValueError(
                    f"members: member {i}'s tokenizer vocabulary differs from member 0's "
                    f"({len(vocab)} vs {len(vocab0)} tokens; e.g. {diff}); ensemble members "
                    "must share a tokenizer"
                )
        self.members = members

    @classmethod
    def from_dirs(
        cls,
        dirs: Sequence[str | os.PathLike],
        *,
        device: str | torch.device = "cpu",
        trust_remote_code: bool = False,
    ) -> Ensemble:
        """Load one :class:`RewardModel` per directory (or hub name)."""
        return cls(
            [
                RewardModel.from_pretrained(d, device=device, trust_remote_code=trust_remote_code)
                for d in dirs
            ]
        )

    def __len__(self) -> int:
        return len(self.members)

    def score_members(
        self, prompts: Sequence[str], completions: Sequence[str], *, batch_size: int = 64
    ) -> Tensor:
        """Every member's rewards. Shape: (M, B)."""
        return torch.stack(
            [m.score(prompts, completions, batch_size=batch_size) for m in self.members]
        )

    def score(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        aggregator: str = "mean",
        *,
        batch_size: int = 64,
        **params: float,
    ) -> Tensor:
        """Aggregated rewards. Shape: (B,).

        Args:
            aggregator: a name in ``goodhartlab.core.aggregate.AGGREGATORS``.
            **params: its parameters, e.g. ``lam=0.5`` for ``"uwo"``.
        """
        aggregate = get_aggregator(aggregator, **params)
        return aggregate(self.score_members(prompts, completions, batch_size=batch_size))

    __call__ = score

    def __repr__(self) -> str:
        return f"Ensemble({len(self)} members: {[m.name for m in self.members]})"


def ensemble_member_dirs(path: str | os.PathLike) -> list[Path]:
    """Member directories of an ensemble written by ``train_ensemble`` (``ensemble.json``).

    A directory without ``ensemble.json`` is returned as a single member.
    """
    path = Path(path)
    index = path / "ensemble.json"
    if not index.is_file():
        return [path]
    try:
        members = json.loads(index.read_text())["members"]
        return [path / m["path"] for m in members]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{index}: expected {{'members': [{{'path': ...}}, ...]}} ({e})") from None
