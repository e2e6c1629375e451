"""Thin adapters that put goodhart-lab's reward-hacking monitor inside other RL engines.

- ``feed``: :class:`MonitorFeed`, what every adapter shares: an engine's per-sample or
  per-batch reward calls in, evaluation points out, a :class:`~goodhartlab.monitor.live.Monitor`
  reading each; bad rows skipped and counted, never raised into the training run.
- ``trl``: a reward-function wrapper for TRL's GRPOTrainer / RLOOTrainer and a
  ``TrainerCallback`` that logs ``goodhart/<detector>`` and can stop the run.
- ``verl``: ``compute_score`` and a batch reward manager.
- ``openrlhf``: a ``reward_func`` file and the protocol of ``goodhart serve`` (``server``).

The engines themselves are never imported here: each adapter speaks its engine's documented
call signature, so this package imports without TRL, verl or OpenRLHF installed.
"""

from goodhartlab.integrations.feed import (
    COULD_NOT_TELL,
    HACKING,
    NO_ALARM,
    FeedReading,
    MonitorFeed,
    completion_text,
)

__all__ = ["COULD_NOT_TELL", "HACKING", "NO_ALARM", "FeedReading", "MonitorFeed", "completion_text"]
