"""Evaluation at checkpoints: gold / proxy / KL tracking, diversity (and later detectors)."""

from goodhartlab.measure.evaluate import (
    Rollouts,
    completion_logprobs,
    distinct_n,
    evaluate_policy,
    position_ids,
    sample_rollouts,
)

__all__ = [
    "Rollouts",
    "completion_logprobs",
    "distinct_n",
    "evaluate_policy",
    "position_ids",
    "sample_rollouts",
]
