"""Training: reward models (Bradley-Terry and variants)."""

from goodhartlab.train.rm import (
    EnsembleTrainResult,
    RMTrainConfig,
    RMTrainResult,
    evaluate_reward_model,
    save_reward_model,
    train_ensemble,
    train_reward_model,
)

__all__ = [
    "EnsembleTrainResult",
    "RMTrainConfig",
    "RMTrainResult",
    "evaluate_reward_model",
    "save_reward_model",
    "train_ensemble",
    "train_reward_model",
]
