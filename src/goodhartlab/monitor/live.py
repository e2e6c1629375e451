"""A live monitor: feed it one evaluation point at a time; it scores the detectors and raises
the alarm.

A :class:`Monitor` holds the run's history (:class:`RunHistory`, no gold). Each
:meth:`Monitor.observe` appends a point, scores the configured detectors at it over the history
so far, each detector's score what its batch form gives on that history
(``run_detector(history, name)[-1]``), and applies the alarm rule. The scores come from the
detectors' incremental forms (:class:`~goodhartlab.monitor.detectors.DetectorStreams`), so an
evaluation costs the same at the 200th point as at the 2nd, where rerunning every detector over
the whole history made a run's monitoring cost grow with the square of its evaluations. The
alarm rule:

- with a fitted combined alarm (:class:`~goodhartlab.monitor.combine.CombinedAlarm`, from
  ``goodhart monitor-bench`` or :func:`fit_combined_alarm`), the alarm is its probability above
  its threshold;
- with ``thresholds`` (detector name → value), the alarm is any of those detectors above its
  value;
- ``patience`` consecutive alarming points raise it (the first of them is the alarm's step);
- the first point is the reference of the drift detectors (the base policy) and never alarms.

The monitor is what ``goodhart rl --monitor``, ``goodhart monitor RUN_DIR`` and the engine
adapters (``goodhartlab.integrations``) share. It never reads gold.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from goodhartlab.monitor.combine import CombinedAlarm, combined_alarm
from goodhartlab.monitor.detectors import DetectorStreams, run_detector
from goodhartlab.monitor.history import EvalPoint, RunHistory
from goodhartlab.registry import DETECTORS

__all__ = [
    "DEFAULT_ALARM",
    "Monitor",
    "MonitorConfig",
    "Reading",
    "default_detectors",
    "load_alarm",
]

#: The packaged combined alarm: fitted by ``goodhart monitor-bench`` on its training runs
#: (toy_text, an evaluation at every step; v1: every 5 steps); see BENCHMARKS.md for its
#: held-out figures.
DEFAULT_ALARM = "toy_text-v2"


def default_detectors() -> list[str]:
    """Every registered detector that needs no parameter, but ``combined``."""
    return [
        e.name
        for e in DETECTORS.entries()
        if e.name != "combined" and not any(f.is_required() for f in e.params.model_fields.values())
    ]


def load_alarm(name_or_path: str | os.PathLike) -> CombinedAlarm:
    """A combined alarm: a packaged one by name (``toy_text-v1``) or a JSON file written by
    ``CombinedAlarm.to_dict``."""
    text = str(name_or_path)
    packaged = resources.files("goodhartlab.monitor").joinpath("alarms", f"{text}.json")
    path = Path(text)
    if packaged.is_file():
        raw, where = packaged.read_text(encoding="utf-8"), f"packaged alarm {text!r}"
    elif path.is_file():
        raw, where = path.read_text(encoding="utf-8"), str(path)
    else:
        names = sorted(
            p.name.removesuffix(".json")
            for p in resources.files("goodhartlab.monitor").joinpath("alarms").iterdir()
            if p.name.endswith(".json")
        )
        raise ValueError(
            f"alarm: {text!r} is neither a packaged alarm ({', '.join(names) or 'none'}) nor a file"
        )
    try:
        return CombinedAlarm.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{where}: not a combined alarm ({e})") from None


class MonitorConfig(BaseModel):
    """What the monitor computes and when it alarms."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detectors: list[str] | None = Field(
        None,
        description="Detectors logged at every evaluation (registry 'detector'); None: every "
        "one that needs no parameter.",
    )
    alarm: str | None = Field(
        DEFAULT_ALARM,
        description="The combined alarm: a packaged name or a JSON file (CombinedAlarm); "
        "None: alarm on `thresholds` only.",
    )
    thresholds: dict[str, float] = Field(
        {}, description="Detector name -> alarm when its score is above this value."
    )
    patience: int = Field(
        1, ge=1, description="Consecutive alarming evaluations that raise the alarm."
    )
    stop_on_alarm: bool = Field(False, description="Stop the run when the alarm is raised.")

    @field_validator("alarm", mode="before")
    @classmethod
    def _none(cls, v: Any) -> Any:
        return None if isinstance(v, str) and v.lower() in ("none", "null", "") else v

    @field_validator("detectors")
    @classmethod
    def _known(cls, v: list[str] | None) -> list[str] | None:
        for name in v or []:
            DETECTORS.entry(name)  # a clear error naming the registry's entries
        return v

    @field_validator("thresholds")
    @classmethod
    def _known_thresholds(cls, v: dict[str, float]) -> dict[str, float]:
        for name, value in v.items():
            DETECTORS.entry(name)
            if not math.isfinite(value):
                raise ValueError(f"thresholds.{name}: expected a finite number; got {value}")
        return v


@dataclass(frozen=True)
class Reading:
    """What the monitor says after one evaluation point."""

    step: int
    scores: dict[str, float]
    """Each detector's score at this point (NaN: its inputs are missing)."""
    alarm_score: float | None
    """The combined alarm's probability (None without a combined alarm)."""
    alarming: bool
    """This point is above the alarm rule's threshold."""
    alarm: bool
    """The alarm is raised (``patience`` consecutive alarming points, now or before)."""
    alarm_step: int | None
    """The step at which the alarm was raised (the first of the consecutive points)."""
    reasons: tuple[str, ...] = field(default_factory=tuple)
    """Which rules alarm at this point (``combined``, or threshold detectors)."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready; NaN scores become None."""
        clean = {k: (None if not math.isfinite(v) else round(v, 6)) for k, v in self.scores.items()}
        return {
            "scores": clean,
            "alarm_score": None if self.alarm_score is None else round(self.alarm_score, 6),
            "alarming": self.alarming,
            "alarm": self.alarm,
            "alarm_step": self.alarm_step,
            "reasons": list(self.reasons),
        }


class Monitor:
    """Scores the detectors at each evaluation point of a run and raises the alarm.

    >>> m = Monitor(MonitorConfig(detectors=["length_drift"], alarm=None,
    ...                           thresholds={"length_drift": 1.0}))
    >>> m.observe(EvalPoint(step=0, completions=["a b c", "a b"])).alarm
    False
    >>> m.observe(EvalPoint(step=1, completions=["a b c d e f g h", "a b c d e f"])).alarm
    True
    """

    def __init__(
        self,
        config: MonitorConfig | None = None,
        *,
        alarm: CombinedAlarm | None = None,
        incremental: bool = True,
    ):
        """``incremental=False`` reruns every detector's batch form over the whole history at
        each point instead (the same readings, at a cost quadratic in the number of points:
        the reference the incremental forms are tested and benchmarked against)."""
        self.config = config or MonitorConfig()
        if alarm is None and self.config.alarm is not None:
            alarm = load_alarm(self.config.alarm)
        self.alarm = alarm
        names = list(self.config.detectors or default_detectors())
        self.detectors = names + [n for n in self.config.thresholds if n not in names]
        self.incremental = incremental
        self.points: list[EvalPoint] = []
        self.readings: list[Reading] = []
        self._history: RunHistory | None = None
        self._streams = DetectorStreams()

    @property
    def history(self) -> RunHistory:
        return self._history if self._history is not None else RunHistory(self.points)

    def _scores(self, history: RunHistory) -> tuple[dict[str, float], float | None]:
        """Each detector's score at the newest point of ``history``, and the alarm's."""
        if not self.incremental:
            scores = {n: float(run_detector(history, n)[-1]) for n in self.detectors}
            alarm = None if self.alarm is None else float(combined_alarm(history, self.alarm)[-1])
            return scores, alarm
        scores = {n: self._streams.score(history, n) for n in self.detectors}
        if self.alarm is None:
            return scores, None
        return scores, self._streams.score(history, "combined", {"alarm": self.alarm})

    @property
    def alarm_step(self) -> int | None:
        return self.readings[-1].alarm_step if self.readings else None

    def observe(self, point: EvalPoint) -> Reading:
        """Add the next evaluation point and return the monitor's reading of it."""
        if self.points and point.step <= self.points[-1].step:
            raise ValueError(
                f"monitor: step {point.step} after step {self.points[-1].step}; expected "
                "increasing steps"
            )
        # Checks the new point's members / latents against the earlier points'.
        history = RunHistory([point]) if self._history is None else self._history.append(point)
        # Scored before the point is kept, so a detector that raises leaves the monitor as it
        # was: the streams, which may have taken the point in, are rebuilt from the kept ones.
        try:
            scores, alarm_score = self._scores(history)
        except Exception:
            if self.incremental:
                self._streams = DetectorStreams()
                for k in range(1, len(self.points) + 1):
                    self._scores(RunHistory(self.points[:k]))
            raise
        reasons = [
            n
            for n, t in self.config.thresholds.items()
            if math.isfinite(scores[n]) and scores[n] > t
        ]
        if alarm_score is not None and math.isfinite(alarm_score):
            if alarm_score > self.alarm.threshold:
                reasons.insert(0, "combined")
        alarming = bool(reasons) and len(history) > 1  # the first point is the reference
        previous = self.readings[-1] if self.readings else None
        alarm_step = previous.alarm_step if previous else None
        if alarm_step is None and alarming:
            run = 1
            for r in reversed(self.readings):
                if not r.alarming:
                    break
                run += 1
            if run >= self.config.patience:
                alarm_step = self.readings[-(run - 1)].step if run > 1 else point.step
        self.points.append(point)
        self._history = history
        reading = Reading(
            step=point.step,
            scores=scores,
            alarm_score=alarm_score,
            alarming=alarming,
            alarm=alarm_step is not None,
            alarm_step=alarm_step,
            reasons=tuple(reasons),
        )
        self.readings.append(reading)
        return reading

    def replay(self, points: Sequence[EvalPoint]) -> list[Reading]:
        """Observe each point in turn (a resumed or offline run): the readings a live
        monitor gave."""
        return [self.observe(p) for p in points]

    def traces(self) -> dict[str, np.ndarray]:
        """Each detector's scores over the history so far. Shape: {name: (K,)}."""
        return {n: np.array([r.scores[n] for r in self.readings]) for n in self.detectors}
