"""MonitorFeed: rows grouped into points, bad rows skipped and counted, never "no alarm" on
rows it could not read."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

import goodhartlab.integrations.feed as feed_module
from goodhartlab.integrations.feed import COULD_NOT_TELL, HACKING, NO_ALARM, MonitorFeed
from goodhartlab.monitor.live import MonitorConfig


def length_feed(**kw) -> MonitorFeed:
    # length_drift: |mean words - mean words at the first point| / max(sd at the first, 1).
    config = MonitorConfig(detectors=["length_drift"], alarm=None, thresholds={"length_drift": 1.0})
    return MonitorFeed(config, **kw)


def test_doctests():
    assert doctest.testmod(feed_module).failed == 0


def test_points_close_when_a_later_step_arrives():
    feed = length_feed()
    assert feed.add(["p", "p"], ["a b", "a b c d"], r_proxy=[1.0, 2.0], step=0) == []
    # Same step: the same point (4 rows).
    assert feed.add(["p", "p"], ["a b c", "a b c"], r_proxy=[1.0, 2.0], step=0) == []
    closed = feed.add(["p"], ["a " * 9], r_proxy=[3.0], step=3)
    assert [(r.step, r.rows, r.verdict) for r in closed] == [(0, 4, NO_ALARM)]
    # Base lengths 2, 4, 3, 3: mean 3, sd sqrt(0.5) -> floored at 1; step 3: 9 words -> 6.
    last = feed.close()
    assert (last.step, last.rows, last.verdict, last.alarm_step) == (3, 1, HACKING, 3)
    assert last.scores["length_drift"] == pytest.approx(6.0)
    assert feed.close() is None  # nothing open


def test_samples_per_point_numbers_points_itself():
    feed = length_feed(samples_per_point=2)
    out = []
    for text in ["a b", "a b", "a b", "a b c d e f g h"]:
        out += feed.add(["p"], [text], r_proxy=[0.0])
    assert [(r.step, r.rows) for r in out] == [(0, 2), (1, 2)]
    # Second point: lengths 2 and 8, mean 5 vs 2 -> drift 3 > 1.
    assert [r.verdict for r in out] == [NO_ALARM, HACKING]


@pytest.mark.parametrize(
    "kwargs, reason, n",
    [
        ({"r_proxy": [math.nan, 1.0, 2.0]}, "nan:r_proxy", 1),
        ({"r_proxy": [None, 1.0, 2.0]}, "none:r_proxy", 1),
        ({"r_proxy": [float("inf"), 1.0, 2.0]}, "nan:r_proxy", 1),
        ({"r_heldout": [0.0, math.nan, 1.0]}, "nan:r_heldout", 1),
        ({"r_members": [[0.0, 1.0, math.nan], [0.0, 1.0, 2.0]]}, "nan:r_members", 1),
        ({"completion_ids": [[1, 2], [1.5], [3]]}, "bad_ids:completion_ids", 1),
        ({"logp": [[-0.1], [0.5], [-1.0]]}, "bad_logp:logp", 1),
        ({"logp": [[-0.1], [math.nan], [-1.0]]}, "bad_logp:logp", 1),
        (
            {"completion_ids": [[1], [2], [3]], "logp": [[-1.0, -1.0], [-1.0], [-1.0]]},
            "bad_logp:token_counts",
            1,
        ),
    ],
)
def test_a_bad_row_is_skipped_and_counted(kwargs, reason, n):
    feed = length_feed()
    feed.add(["p"] * 3, ["a b", "a b c", "a"], step=0, **kwargs)
    reading = feed.close()
    assert dict(feed.bad_rows) == {reason: n}
    assert reading.bad_rows == {reason: n}
    assert reading.rows == 3 - n


@pytest.mark.parametrize(
    "kwargs, reason, n",
    [
        ({"r_proxy": [1.0, 2.0]}, "length_mismatch:r_proxy", 3),
        ({"prompts": ["p"]}, "length_mismatch:prompts", 3),
        ({"r_members": [[1.0, 2.0], [1.0, 2.0]]}, "length_mismatch:r_members", 3),
        ({"completion_ids": [[1]]}, "length_mismatch:completion_ids", 3),
        ({"r_members": [1.0, 2.0, 3.0]}, "bad:r_members", 3),
    ],
)
def test_mismatched_lengths_drop_the_call(kwargs, reason, n):
    feed = length_feed()
    call = {"prompts": ["p"] * 3, "completions": ["a", "b", "c"], **kwargs}
    assert feed.add(call.pop("prompts"), call.pop("completions"), step=0, **call) == []
    reading = feed.close()
    assert dict(feed.bad_rows) == {reason: n}
    assert (reading.rows, reading.verdict, reading.reading) == (0, COULD_NOT_TELL, None)


def test_calls_with_missing_or_empty_fields_never_raise():
    feed = length_feed()
    feed.add(None, None, r_proxy=[1.0, 2.0], step=0)  # no completions
    feed.add(["p"], [], step=0)  # empty batch
    feed.add(["p"], "not a list", step=0)
    feed.add(["p"], [42], step=0)  # not text
    feed.add(["p"], ["a"], step=-1)  # a step that is not a step
    assert dict(feed.bad_rows) == {
        "missing:completions": 3,
        "empty_batch": 1,
        "not_text:completions": 1,
        "bad:step": 1,
    }
    reading = feed.close()
    assert reading.verdict == COULD_NOT_TELL and reading.rows == 0
    assert reading.metrics()["goodhart/could_tell"] == 0.0
    assert math.isnan(reading.metrics().get("goodhart/length_drift", math.nan))


def test_a_point_of_unreadable_rows_is_could_not_tell_even_after_good_points():
    feed = length_feed()
    feed.add(["p"] * 2, ["a b", "a b"], r_proxy=[0.0, 1.0], step=0)
    feed.add(["p"] * 2, ["a b", "a b"], r_proxy=[math.nan, math.nan], step=1)
    feed.add(["p"] * 2, ["a b c", "a b"], r_proxy=[0.0, 1.0], step=2)
    feed.close()
    assert [(r.step, r.verdict, r.rows) for r in feed.readings] == [
        (0, NO_ALARM, 2),
        (1, COULD_NOT_TELL, 0),
        (2, NO_ALARM, 2),
    ]
    # The monitor saw the readable points only.
    assert [p.step for p in feed.monitor.points] == [0, 2]


def test_no_alarm_rule_or_no_inputs_is_could_not_tell():
    # The thresholded detector needs members, which never come: NaN, so could not tell.
    config = MonitorConfig(
        detectors=["length_drift", "ensemble_disagreement"],
        alarm=None,
        thresholds={"ensemble_disagreement": 0.5},
    )
    feed = MonitorFeed(config)
    feed.add(["p"], ["a b"], r_proxy=[1.0], step=0)
    reading = feed.close()
    assert reading.rows == 1 and reading.verdict == COULD_NOT_TELL
    assert reading.scores["length_drift"] == 0.0  # logged, but not an alarm rule
    no_rule = MonitorFeed(MonitorConfig(detectors=["length_drift"], alarm=None))
    no_rule.add(["p"], ["a b"], step=0)
    assert no_rule.close().verdict == COULD_NOT_TELL


def test_late_rows_and_partial_fields():
    feed = length_feed()
    feed.add(["p"], ["a b"], r_proxy=[1.0], step=0)
    feed.add(["p"], ["a b c"], step=1)
    feed.add(["p"], ["a"], r_proxy=[2.0], step=0)  # step 0 is closed: late
    feed.add(["p"], ["a b"], r_proxy=[2.0], step=1)  # one row of step 1 lacks r_proxy
    feed.close()
    assert dict(feed.bad_rows) == {"late_rows": 1, "partial:r_proxy": 1}
    point = feed.monitor.points[1]
    assert point.r_proxy is None and point.completions == ("a b c", "a b")


def test_members_heldout_groups_and_logp_reach_the_point():
    config = MonitorConfig(
        detectors=["ensemble_disagreement", "heldout_divergence", "group_variance_collapse",
                   "entropy_collapse"],
        alarm=None,
        thresholds={"heldout_divergence": 1.0},
    )  # fmt: skip
    feed = MonitorFeed(config)
    feed.add(
        ["p1", "p1", "p2", "p2"],
        ["a", "b", "c", "d"],
        completion_ids=[[1], [2], [3], [4]],
        r_proxy=[0.0, 1.0, 2.0, 4.0],
        r_members=[[0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 5.0]],
        r_heldout=[0.0, 1.0, 2.0, 3.0],
        logp=[[-1.0], [-1.0], [-2.0], [-2.0]],
        step=0,
    )
    feed.close()
    p = feed.monitor.points[0]
    np.testing.assert_array_equal(p.r_members, [[0, 1, 2, 3], [0, 1, 2, 5]])
    np.testing.assert_array_equal(p.r_groups, [[0, 1], [2, 4]])  # grouped by prompt
    np.testing.assert_array_equal(p.r_heldout, [0, 1, 2, 3])
    assert [a.tolist() for a in p.completion_ids] == [[1], [2], [3], [4]]
    assert feed.last.verdict == NO_ALARM  # heldout_divergence is 0 at the reference


def test_metrics_keys_are_the_same_at_every_point():
    feed = length_feed()
    feed.add(["p"], ["a"], r_proxy=[math.nan], step=0)  # unreadable
    feed.add(["p"], ["a"], r_proxy=[0.0], step=1)
    feed.close()
    keys = [set(r.metrics()) for r in feed.readings]
    assert keys[0] == keys[1] == set(feed.metric_names())


def test_a_monitor_failure_is_counted_not_raised(monkeypatch):
    feed = length_feed()

    def broken(point):
        raise RuntimeError("detector bug")

    monkeypatch.setattr(feed.monitor, "observe", broken)
    feed.add(["p"], ["a"], r_proxy=[0.0], step=0)
    reading = feed.close()
    assert reading.verdict == COULD_NOT_TELL
    assert feed.bad_rows["monitor_error"] == 1


INPUTS = ["entropy_collapse", "kl_acceleration", "mahalanobis_outliers", "length_drift"]


def _rows(step: int, n: int = 4):
    """n completions of 3 tokens; the policy sharpens and drifts from the reference with the
    step (log π rises towards 0, log π_0 stays), the latents move away across the direction
    the base's latents spread along."""
    logp = [[-1.0 / (1 + step)] * 3 for _ in range(n)]
    logp_ref = [[-1.0] * 3 for _ in range(n)]
    latents = np.arange(n * 2, dtype=float).reshape(n, 2) + 3.0 * step * np.array([1.0, -1.0])
    return logp, logp_ref, latents


def test_log_probs_and_latents_reach_the_monitor_and_its_detectors_read_them():
    feed = MonitorFeed(MonitorConfig(detectors=INPUTS, alarm=None))
    for step in range(4):
        logp, logp_ref, latents = _rows(step)
        feed.add(["p"] * 4, ["a b c"] * 4, completion_ids=[[1, 2, 3]] * 4, r_proxy=[0.0] * 4,
                 logp=logp, logp_ref=logp_ref, latents=latents, step=step)  # fmt: skip
    feed.close()
    points = feed.monitor.points
    assert [p.latents.shape for p in points] == [(4, 2)] * 4
    # k1 KL: Σ_t (log π − log π_0) = 3 (1 − 1 / (1 + step)).
    assert [p.kl_estimate() for p in points] == pytest.approx([0.0, 1.5, 2.0, 2.25])
    last = feed.readings[-1].scores
    assert all(math.isfinite(last[n]) for n in INPUTS), last
    assert last["entropy_collapse"] == pytest.approx(1 - 0.25)  # entropy 1/4 of the base's
    assert last["mahalanobis_outliers"] == 1.0  # moved 9 across the base's spread: all outliers
    assert not feed.bad_rows


def test_without_log_probs_or_latents_those_detectors_cannot_tell_and_the_rest_read():
    feed = MonitorFeed(MonitorConfig(detectors=INPUTS, alarm=None))
    for step in range(4):
        feed.add(["p"] * 4, ["a b c"] * 4, r_proxy=[0.0] * 4, step=step)
    feed.close()
    last = feed.readings[-1].scores
    assert [math.isnan(last[n]) for n in INPUTS] == [True, True, True, False]
    assert feed.monitor.points[0].latents is None and not feed.bad_rows


def test_bad_latents_are_skipped_and_counted():
    feed = MonitorFeed(MonitorConfig(detectors=["mahalanobis_outliers"], alarm=None))
    latents = [[0.0, 1.0], [1.0, 0.0], [math.nan, 0.0], "x"]
    feed.add(["p"] * 4, ["a", "b", "c", "d"], latents=latents, step=0)
    # A point whose rows disagree on the dimension keeps its rows, not their latents.
    feed.add(["p"] * 2, ["a", "b"], latents=[[0.0, 1.0], [1.0, 0.0, 2.0]], step=1)
    # A point of another dimension than the run's first: the same.
    feed.add(["p"] * 2, ["a", "b"], latents=[[0.0, 1.0, 2.0]] * 2, step=2)
    feed.close()
    assert dict(feed.bad_rows) == {"nan:latents": 1, "bad:latents": 1, "partial:latents": 4}
    assert [p.latents is None for p in feed.monitor.points] == [False, True, True]
    assert [r.rows for r in feed.readings] == [2, 2, 2]
