"""Reward sources: ``score(prompts, completions) -> Tensor[B]`` (ensembles also (M, B))."""

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
    "Ensemble",
    "ProgrammaticReward",
    "RewardModel",
    "collate_rm_inputs",
    "reward_at_last_token",
    "rm_batch_input_ids",
    "rm_input_ids",
]
