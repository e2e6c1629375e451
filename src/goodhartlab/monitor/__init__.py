"""Reward-hacking detectors over a run's history, without gold.

Each detector is an entry of ``goodhartlab.registry.DETECTORS``: a pure function over a run's
history (completions, proxy and member scores, log-probs, reward-model latents) returning an
alarm score per evaluation point, with its formula and source in its docstring and
``higher_is_better=False`` (a higher score is a stronger alarm). None is built in yet (the
monitor issue adds them); a plugin can register one now.
"""

from goodhartlab.registry import DETECTORS

__all__ = ["DETECTORS"]
