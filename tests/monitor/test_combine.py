"""monitor.combine: the combined alarm, fitted on training runs, applied to held-out ones."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import scipy.stats

from goodhartlab.core import detect
from goodhartlab.monitor import (
    CombinedAlarm,
    EvalPoint,
    RunHistory,
    combined_alarm,
    detector_matrix,
    fit_combined_alarm,
    run_detector,
)

DETECTORS = [
    "ensemble_disagreement",
    "heldout_divergence",
    ("mahalanobis_outliers", {"alpha": 0.05}),
    "length_drift",
    "repetition_drift",
    "entropy_collapse",
    "kl_acceleration",
]


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    u = scipy.stats.mannwhitneyu(pos, neg, alternative="greater").statistic
    return float(u / (pos.size * neg.size))


@pytest.fixture(scope="module")
def fitted(make_run):
    synthetic_run = make_run
    train = [synthetic_run(seed, hacks=seed % 2 == 0) for seed in range(12)]
    alarm = fit_combined_alarm([h for h, _ in train], [y for _, y in train], DETECTORS, l2=1.0)
    return alarm, synthetic_run


def test_apply_by_hand():
    # One detector (length_drift), standardized with mean 1 and sd 2, weight 3, bias −1:
    # drift (0, 3) -> z (−0.5, 1) -> σ(−2.5), σ(2).
    alarm = CombinedAlarm(
        detectors=("length_drift",),
        detector_params=({},),
        mean=(1.0,),
        std=(2.0,),
        weights=(3.0,),
        bias=-1.0,
        threshold=0.5,
    )
    h = RunHistory(
        [
            EvalPoint(step=0, completion_ids=[[1, 2], [1, 2, 3, 4]]),
            EvalPoint(step=1, completion_ids=[[1] * 5, [1] * 7]),
        ]
    )
    np.testing.assert_allclose(combined_alarm(h, alarm), detect.sigmoid(np.array([-2.5, 2.0])))
    # Through the registry (the params model accepts the fitted object).
    np.testing.assert_allclose(
        run_detector(h, "combined", {"alarm": alarm}), combined_alarm(h, alarm)
    )
    # A detector whose inputs are missing contributes its training mean; all missing: NaN.
    bare = RunHistory([EvalPoint(step=0, kl=0.0), EvalPoint(step=1, kl=1.0)])
    assert np.isnan(combined_alarm(bare, alarm)).all()


def test_fitted_alarm_separates_held_out_runs(fitted):
    alarm, synthetic_run = fitted
    assert alarm.extra["converged"] and len(alarm.weights) == len(DETECTORS)
    pos, neg, warned, false_alarms = [], [], 0, 0
    held_out = [synthetic_run(seed, hacks=seed % 2 == 0) for seed in range(100, 110)]
    for h, y in held_out:
        p = combined_alarm(h, alarm)
        pos.append(p[y == 1])
        neg.append(p[y == 0])
        fired = p > alarm.threshold
        if y.any():
            warned += bool(fired[y == 1].any())
        else:
            false_alarms += bool(fired.any())
    assert _auroc(np.concatenate(pos), np.concatenate(neg)) > 0.95
    assert warned == 5 and false_alarms <= 1


def test_fit_uses_labels_only_at_fit_time(fitted):
    alarm, _ = fitted
    # Applying takes a history and the fitted alarm, nothing else; the alarm holds weights
    # and standardization, no labels.
    assert list(inspect.signature(combined_alarm).parameters) == ["history", "alarm"]
    assert set(alarm.to_dict()) == {
        "definition",
        "detectors",
        "detector_params",
        "mean",
        "std",
        "weights",
        "bias",
        "threshold",
        "n_train_points",
        "extra",
    }
    again = CombinedAlarm.from_dict(json.loads(json.dumps(alarm.to_dict())))
    assert again == alarm
    with pytest.raises(ValueError, match="definition"):
        CombinedAlarm.from_dict({**alarm.to_dict(), "definition": "combined/v0"})


def test_threshold_bounds_the_training_runs_false_alarms(fitted):
    # 12 training runs < 1 / 0.05: no training run may alarm where it is labelled 0, and the
    # threshold is the largest such probability (an observed value).
    alarm, synthetic_run = fitted
    train = [synthetic_run(seed, hacks=seed % 2 == 0) for seed in range(12)]
    run_max = [np.nanmax(combined_alarm(h, alarm)[y == 0]) for h, y in train]
    assert max(run_max) == pytest.approx(alarm.threshold, rel=1e-12)


def test_fit_refuses_bad_training_data(make_run):
    h, y = make_run(0, hacks=True, n_points=10, onset=5)
    with pytest.raises(ValueError, match="all one class"):
        fit_combined_alarm([h], [np.zeros(10)], ["length_drift"])
    with pytest.raises(ValueError, match=r"labels\[0\] has shape"):
        fit_combined_alarm([h], [y[:5]], ["length_drift"])
    with pytest.raises(ValueError, match=r"labels\[0\]: expected 0 or 1"):
        fit_combined_alarm([h], [y * 2], ["length_drift"])
    with pytest.raises(ValueError, match="cannot be one of its own"):
        fit_combined_alarm([h], [y], ["combined"])
    with pytest.raises(ValueError, match="does not take parameter"):
        fit_combined_alarm([h], [y], [("length_drift", {"n": 2})])
    bare = RunHistory([EvalPoint(step=k, kl=float(k)) for k in range(10)])
    with pytest.raises(ValueError, match="'length_drift' has fewer than 2 finite scores"):
        fit_combined_alarm([bare], [y], ["length_drift"])
    assert detector_matrix(h, ["length_drift", "kl_acceleration"]).shape == (10, 2)
