"""Reward-hacking detectors over a run's history, without gold.

Each detector is an entry of ``goodhartlab.registry.DETECTORS``: a pure function over a run's
history (:class:`RunHistory` of :class:`EvalPoint`: completions, proxy and member scores,
log-probs, reward-model latents; no gold) returning an alarm score per evaluation point, with
its formula and source in its docstring and ``higher_is_better=False`` (a higher score is a
stronger alarm). The statistics themselves live in ``goodhartlab.core.detect``.

- ``history``: the input types.
- ``detectors``: the built-in detectors (ensemble disagreement and its growth, held-out
  divergence, Mahalanobis outliers, length / repetition / distinct-n drift, proxy gain per
  KL, KL acceleration, entropy and group-variance collapse, CUSUM over any of them).
- ``combine``: the combined alarm, fitted on training runs (gold labels at fit time only).
- ``DetectorStreams``: the detectors' incremental forms, which a live monitor feeds one point
  at a time (``live``).
"""

from goodhartlab.monitor.combine import (
    CombinedAlarm,
    combined_alarm,
    detector_matrix,
    fit_combined_alarm,
)
from goodhartlab.monitor.detectors import (
    DetectorStream,
    DetectorStreams,
    run_detector,
    run_detectors,
)
from goodhartlab.monitor.history import EvalPoint, RunHistory
from goodhartlab.registry import DETECTORS

__all__ = [
    "DETECTORS",
    "CombinedAlarm",
    "DetectorStream",
    "DetectorStreams",
    "EvalPoint",
    "RunHistory",
    "combined_alarm",
    "detector_matrix",
    "fit_combined_alarm",
    "run_detector",
    "run_detectors",
]
