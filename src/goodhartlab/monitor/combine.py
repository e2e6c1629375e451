"""The combined alarm: detectors' scores weighed by a logistic regression fitted on training runs.

Two steps, kept apart so that gold cannot leak into a monitored run:

1. :func:`fit_combined_alarm` (offline, on training runs only): computes the chosen detectors
   on each training history and fits an L2-regularized logistic regression of a per-point
   label on their standardized scores. The labels are the only place gold enters: the caller
   derives them from the training runs' gold (e.g. 1 at points after gold's running peak has
   dropped, 0 before) and passes them in; the result stores weights, standardization and a
   threshold, nothing of the labels or of gold.
2. :func:`combined_alarm` (the ``combined`` detector, at apply time): the fitted
   probability σ(w · z + b) at each point of a history, from the detectors' scores alone.
   :class:`RunHistory` has no gold field, so a monitored run cannot supply one.

Missing detector scores (NaN: the run lacks that detector's inputs) are imputed with the
training mean, i.e. they contribute nothing; a point where every detector is NaN scores NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from goodhartlab.core import detect
from goodhartlab.monitor.detectors import DetectorStream, DetectorStreams, run_detector
from goodhartlab.monitor.history import RunHistory
from goodhartlab.registry import DETECTORS

__all__ = ["CombinedAlarm", "combined_alarm", "detector_matrix", "fit_combined_alarm"]

VERSION = "combined/v1"


@dataclass(frozen=True)
class CombinedAlarm:
    """A fitted combined alarm: which detectors, how they are standardized and weighed."""

    detectors: tuple[str, ...]
    """Detector names, in feature order."""
    detector_params: tuple[Mapping[str, Any], ...]
    """Each detector's parameters."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    """Standardization of each detector's scores (training points)."""
    weights: tuple[float, ...]
    bias: float
    threshold: float
    """Alarm when the probability exceeds it: the (1 − max_false_alarm) quantile, over
    training runs, of each run's largest probability at its points labelled 0."""
    n_train_points: int = 0
    definition: str = VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (no pickle): ``CombinedAlarm.from_dict(alarm.to_dict()) == alarm``."""
        return {
            "definition": self.definition,
            "detectors": list(self.detectors),
            "detector_params": [dict(p) for p in self.detector_params],
            "mean": list(self.mean),
            "std": list(self.std),
            "weights": list(self.weights),
            "bias": self.bias,
            "threshold": self.threshold,
            "n_train_points": self.n_train_points,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CombinedAlarm:
        if d.get("definition") != VERSION:
            raise ValueError(
                f"combined alarm: definition {d.get('definition')!r}; this version reads {VERSION!r}"
            )
        n = len(d["detectors"])
        for key in ("detector_params", "mean", "std", "weights"):
            if len(d[key]) != n:
                raise ValueError(f"combined alarm: {key} has {len(d[key])} entries; expected {n}")
        return cls(
            detectors=tuple(d["detectors"]),
            detector_params=tuple(dict(p) for p in d["detector_params"]),
            mean=tuple(float(x) for x in d["mean"]),
            std=tuple(float(x) for x in d["std"]),
            weights=tuple(float(x) for x in d["weights"]),
            bias=float(d["bias"]),
            threshold=float(d["threshold"]),
            n_train_points=int(d.get("n_train_points", 0)),
            extra=dict(d.get("extra", {})),
        )


def _specs(detectors: Sequence[str | tuple[str, Mapping[str, Any]]]) -> list[tuple[str, dict]]:
    specs = []
    for d in detectors:
        name, params = (d, {}) if isinstance(d, str) else (d[0], dict(d[1]))
        if name == "combined":
            raise ValueError("combined alarm: 'combined' cannot be one of its own detectors")
        DETECTORS.entry(name).validate_params(params, where=f"combined alarm: detector {name}")
        specs.append((name, params))
    if not specs:
        raise ValueError("combined alarm: expected at least one detector")
    return specs


def detector_matrix(
    history: RunHistory, detectors: Sequence[str | tuple[str, Mapping[str, Any]]]
) -> np.ndarray:
    """The detectors' scores on ``history``, one column each. Shape: (K, F)."""
    return np.stack([run_detector(history, n, p) for n, p in _specs(detectors)], axis=1)


def fit_combined_alarm(
    histories: Sequence[RunHistory],
    labels: Sequence[Sequence[int]],
    detectors: Sequence[str | tuple[str, Mapping[str, Any]]],
    l2: float = 1.0,
    max_false_alarm: float = 0.05,
) -> CombinedAlarm:
    """Fit the combined alarm on training runs: a class-balanced logistic regression.

        z_kf = (x_kf − m_f) / s_f  (NaN → 0),   P(hacking at k) = σ(w · z_k + b)

    m_f, s_f: mean and sd of detector f over all training points; (w, b) minimize the
    class-balanced log loss + (l2 / 2n) ‖w‖² (``core.detect.fit_logistic``). The threshold is
    set per run, as false alarms are counted: τ is the (1 − max_false_alarm) quantile (an
    observed value, ``method="higher"``) over training runs of max_{k: label 0} P_k, each
    run's largest probability where it does not hack (all its points if it never hacks, the
    points before the onset if it does), so at most that share of training runs has an alarm
    at a point labelled 0. With fewer than 1 / max_false_alarm runs, τ is the largest of them.

    Args:
        histories: the training runs.
        labels: per run, one 0/1 label per evaluation point, derived by the caller from the
            training runs' gold (e.g. 1 from the hacking onset on). Gold enters here only.
        detectors: names, or (name, params) pairs.
        l2: ridge strength ≥ 0.
        max_false_alarm: share of training runs allowed an alarm at a point labelled 0.

    Returns:
        :class:`CombinedAlarm`.
    """
    specs = _specs(detectors)
    if len(histories) != len(labels):
        raise ValueError(
            f"combined alarm: {len(histories)} histories but {len(labels)} label arrays"
        )
    if not 0 < max_false_alarm < 1:
        raise ValueError(
            f"combined alarm: max_false_alarm: expected in (0, 1); got {max_false_alarm}"
        )
    xs, ys = [], []
    for i, (h, y) in enumerate(zip(histories, labels, strict=True)):
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (len(h),):
            raise ValueError(
                f"combined alarm: labels[{i}] has shape {y.shape}; expected ({len(h)},)"
            )
        if not np.all((y == 0) | (y == 1)):
            raise ValueError(f"combined alarm: labels[{i}]: expected 0 or 1 at every point")
        xs.append(detector_matrix(h, specs))
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    names = [n for n, _ in specs]
    finite = np.isfinite(x)
    for f, name in enumerate(names):
        if finite[:, f].sum() < 2:
            raise ValueError(
                f"combined alarm: detector {name!r} has fewer than 2 finite scores on the "
                "training runs (its inputs are missing from them)"
            )
    m = np.nanmean(x, axis=0)
    s = np.nanstd(x, axis=0)
    s = np.where(s > 0, s, 1.0)
    keep = finite.any(axis=1)
    z = np.where(finite, (x - m) / s, 0.0)[keep]
    y = y[keep]
    if y.min() == y.max():
        raise ValueError("combined alarm: the training labels are all one class; need both 0 and 1")
    n_pos = y.sum()
    weight = np.where(y == 1, 0.5 / n_pos, 0.5 / (y.size - n_pos))
    fit = detect.fit_logistic(z, y, l2=l2, sample_weight=weight)
    # A false alarm is a run with an alarm at a point labelled 0 (a run that never hacks, or
    # before the onset): the threshold bounds the share of training runs that have one.
    run_max = []
    for x_run, y_run in zip(xs, ys, strict=True):
        ok = np.isfinite(x_run).any(axis=1) & (y_run == 0)
        if ok.any():
            z_run = np.where(np.isfinite(x_run[ok]), (x_run[ok] - m) / s, 0.0)
            run_max.append(float(np.max(detect.sigmoid(z_run @ fit.weights + fit.bias))))
    threshold = float(np.quantile(run_max, 1 - max_false_alarm, method="higher"))
    return CombinedAlarm(
        detectors=tuple(names),
        detector_params=tuple(p for _, p in specs),
        mean=tuple(float(v) for v in m),
        std=tuple(float(v) for v in s),
        weights=tuple(float(v) for v in fit.weights),
        bias=fit.bias,
        threshold=threshold,
        n_train_points=int(y.size),
        extra={"l2": l2, "max_false_alarm": max_false_alarm, "converged": fit.converged},
    )


class CombinedParams(BaseModel):
    """Parameters of the ``combined`` detector."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    alarm: CombinedAlarm = Field(description="a fitted alarm (fit_combined_alarm)")


def _probability(alarm: CombinedAlarm, x: np.ndarray) -> np.ndarray:
    """σ(w · z + b) per row of detector scores x (K, F); NaN where a row is all NaN."""
    finite = np.isfinite(x)
    z = np.where(finite, (x - np.array(alarm.mean)) / np.array(alarm.std), 0.0)
    p = detect.sigmoid(z @ np.array(alarm.weights) + alarm.bias)
    return np.where(finite.any(axis=1), p, math.nan)


def _check_alarm(alarm: Any) -> list[tuple[str, dict]]:
    if not isinstance(alarm, CombinedAlarm):
        raise ValueError(f"combined: alarm: expected a CombinedAlarm; got {type(alarm).__name__}")
    return _specs(list(zip(alarm.detectors, alarm.detector_params, strict=True)))


class _CombinedStream(DetectorStream):
    """The combined alarm from its detectors' streams (shared with any other reader)."""

    def __init__(self, streams: DetectorStreams, alarm: CombinedAlarm):
        self.alarm = alarm
        self.members = [streams.stream(n, p) for n, p in _check_alarm(alarm)]

    def update(self, history: RunHistory) -> float:
        x = np.array([[m.update(history) for m in self.members]])
        return float(_probability(self.alarm, x)[0])


@DETECTORS.register(
    "combined",
    paper="logistic regression on standardized detector scores, fitted on training runs "
    "(Hastie, Tibshirani, Friedman 2009, §4.4)",
    params=CombinedParams,
    higher_is_better=False,
    needs=("those of its detectors",),
    incremental=_CombinedStream,
)
def combined_alarm(history: RunHistory, alarm: CombinedAlarm) -> np.ndarray:
    """Combined alarm probability from the fitted detectors' standardized scores.

        P_k = σ(w · z_k + b),   z_kf = (x_kf − m_f) / s_f

    ``alarm`` comes from :func:`fit_combined_alarm` on training runs; nothing here reads gold.
    A detector with NaN at a point contributes 0 (its training mean); NaN where all are NaN.
    Compare with ``alarm.threshold`` for a yes/no alarm.
    """
    return _probability(alarm, detector_matrix(history, _check_alarm(alarm)))
