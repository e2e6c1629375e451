"""Reward sources: ``score(prompts, completions) -> Tensor[B]`` (ensembles also (M, B))."""

from goodhartlab.registry import REWARD_SOURCES
from goodhartlab.rewards.ensemble import Ensemble
from goodhartlab.rewards.programmatic import ProgrammaticReward
from goodhartlab.rewards.reward_model import (
    RewardModel,
    collate_rm_inputs,
    reward_at_last_token,
    rm_batch_input_ids,
    rm_input_ids,
)

__all__ = [
    "REWARD_SOURCES",
    "Ensemble",
    "ProgrammaticReward",
    "RewardModel",
    "collate_rm_inputs",
    "reward_at_last_token",
    "rm_batch_input_ids",
    "rm_input_ids",
]


def _reward_model(path: str, device: str = "cpu") -> RewardModel:
    """A reward model directory (a scalar-head sequence classifier) loaded with safetensors."""
    return RewardModel.from_pretrained(path, device=device)


def _ensemble(paths: list[str], device: str = "cpu") -> Ensemble:
    """An ensemble from member directories, or from one ensemble directory (ensemble.json)."""
    from pathlib import Path

    from goodhartlab.rewards.ensemble import ensemble_member_dirs

    members = ensemble_member_dirs(paths[0]) if len(paths) == 1 else [Path(p) for p in paths]
    return Ensemble.from_dirs(members, device=device)


REWARD_SOURCES.register(
    "reward_model", _reward_model, params={"path": "the reward model's directory"}
)
REWARD_SOURCES.register(
    "ensemble", _ensemble, paper="Coste et al. 2023, arXiv 2310.02743",
    params={"paths": "member directories, or one ensemble directory"},
)  # fmt: skip
