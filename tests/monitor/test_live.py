"""monitor.live and the detectors' incremental forms: the live monitor's readings are the batch
forms' over the history so far, point by point, on runs with every input and on runs where
inputs come and go."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from goodhartlab.monitor import (
    DetectorStreams,
    RunHistory,
    combined_alarm,
    fit_combined_alarm,
    run_detector,
)
from goodhartlab.monitor.live import Monitor, MonitorConfig, default_detectors, load_alarm
from goodhartlab.registry import DETECTORS

VOCAB = {w: i for i, w in enumerate(["the", "phone", "screen", "is", "nice", "battery", "fast"])}


def _ids(text: str) -> list[int]:
    # A word of more than 5 letters is two tokens (its ids are not its words).
    return [i for w in text.split() for i in [VOCAB.get(w, len(VOCAB))] * (1 + (len(w) > 5))]


def _with_ids_and_ref(h: RunHistory, kl_from_logp: bool) -> RunHistory:
    """Token ids at every point, and log π_0 (a little above log π), the KL left to the k1
    estimate from them when ``kl_from_logp``."""
    points = []
    for p in h.points:
        ids = [_ids(t) for t in p.completions]
        logp = [np.resize(a, len(i)) for a, i in zip(p.logp, ids, strict=True)]
        ref = [np.minimum(a + 0.02 * (p.step > 0), 0.0) for a in logp]
        points.append(
            dataclasses.replace(
                p,
                completion_ids=ids,
                logp=logp,
                logp_ref=ref,
                kl=None if kl_from_logp else p.kl,
            )
        )
    return RunHistory(points)


def _gappy(h: RunHistory) -> RunHistory:
    """Inputs that come and go: members and latents missing at point 4, KL unknown at 6 (no
    kl, no logp_ref), held-out scores missing at 9, token ids only up to point 7 (the token
    detectors then re-read every point as words)."""
    points = []
    for k, p in enumerate(h.points):
        change = {}
        if k == 4:
            change.update(r_members=None, latents=None)
        if k == 6:
            change.update(kl=None, logp_ref=None)
        if k == 9:
            change.update(r_heldout=None)
        if k > 7:
            change.update(completion_ids=None)
        points.append(dataclasses.replace(p, **change))
    return RunHistory(points)


@pytest.fixture(scope="module")
def histories(make_run):
    hack, _ = make_run(5, hacks=True, n_points=16, onset=8)
    calm, _ = make_run(6, hacks=False, n_points=16)
    ids = _with_ids_and_ref(hack, kl_from_logp=True)
    return {
        "hacking": hack,
        "calm": calm,
        "ids, kl from log-probs": ids,
        "inputs come and go": _gappy(_with_ids_and_ref(calm, kl_from_logp=False)),
        "base without latents or groups": RunHistory(
            [dataclasses.replace(hack.points[0], latents=None, r_groups=None), *hack.points[1:]]
        ),
    }


def _specs() -> list[tuple[str, dict]]:
    """Every registered detector, with its default parameters and with others; CUSUM over a
    causal signal, a non-causal one and one whose tokenization changes mid-run."""
    plain = [(n, {}) for n in default_detectors()]
    assert {n for n, _ in plain} == set(DETECTORS.names()) - {"cusum", "combined"}
    return [
        *plain,
        ("mahalanobis_outliers", {"alpha": 0.2, "reg_eps": 1e-3}),
        ("repetition_drift", {"n": 1}),
        ("distinct_drop", {"n": 3}),
        ("proxy_gain_per_kl", {"k": 3}),
        ("cusum", {"signal": "ensemble_disagreement", "k": 3, "drift": 0.2}),
        ("cusum", {"signal": "length_drift"}),
        ("cusum", {"signal": "proxy_gain_per_kl", "signal_params": {"k": 3}}),
        ("cusum", {"signal": "cusum", "signal_params": {"signal": "kl_acceleration", "k": 2}}),
    ]


def _assert_same(live: list[float], batch: list[float], what: str, atol: float = 0.0) -> None:
    live, batch = np.array(live), np.array(batch)
    assert np.array_equal(np.isnan(live), np.isnan(batch)), (what, live, batch)
    ok = ~np.isnan(live)
    np.testing.assert_allclose(live[ok], batch[ok], rtol=0, atol=atol, err_msg=what)


def test_streams_give_the_batch_score_at_every_point(histories):
    # The incremental form of every detector, fed each prefix in turn, returns the batch
    # form's last score on that prefix, bit for bit.
    for label, h in histories.items():
        streams = DetectorStreams()
        live = {i: [] for i, _ in enumerate(_specs())}
        batch = {i: [] for i, _ in enumerate(_specs())}
        for k in range(1, len(h) + 1):
            prefix = h.prefix(k)
            for i, (name, params) in enumerate(_specs()):
                live[i].append(streams.score(prefix, name, params))
                batch[i].append(run_detector(prefix, name, params)[-1])
        for i, spec in enumerate(_specs()):
            _assert_same(live[i], batch[i], f"{label}: {spec}")
            # The histories exercise each detector: somewhere it has a finite score.
            if label == "ids, kl from log-probs":
                assert np.isfinite(live[i]).any(), spec


def test_the_token_detectors_are_read_as_words_once_ids_stop(histories):
    # The batch form re-reads a run as words when a point lacks ids, so the length drift at
    # point 7 (with ids) differs on the prefix up to 7 and on the whole run: the stream says
    # it is no longer causal from then on.
    h = histories["inputs come and go"]
    streams = DetectorStreams()
    for k in range(1, len(h) + 1):
        streams.score(h.prefix(k), "length_drift")
        assert streams.stream("length_drift").causal == (k <= 8)
    assert run_detector(h.prefix(8), "length_drift")[7] != run_detector(h, "length_drift")[7]


def test_combined_stream_is_the_batch_combined_alarm(make_run, histories):
    train = [make_run(s, hacks=s % 2 == 0, n_points=16, onset=8) for s in range(10, 16)]
    detectors = ["ensemble_disagreement", "length_drift", ("cusum", {"signal": "length_drift"})]
    fitted = fit_combined_alarm([h for h, _ in train], [y for _, y in train], detectors)
    for alarm in (fitted, load_alarm("toy_text-v2")):
        for label, h in histories.items():
            streams = DetectorStreams()
            live = [streams.score(h.prefix(k), "combined", {"alarm": alarm}) for k in range(1, 17)]
            batch = [combined_alarm(h.prefix(k), alarm)[-1] for k in range(1, 17)]
            # The same scores; the matrix product over one row may round differently.
            _assert_same(live, batch, label, atol=1e-12)
            assert np.isfinite(live).all()


@pytest.mark.parametrize("patience", [1, 2])
def test_monitor_readings_are_the_batch_readings(histories, patience):
    # observe (incremental) against observe rerunning every batch form over the history:
    # the same scores, alarm score, alarming points, alarm step and reasons at every point.
    config = MonitorConfig(
        thresholds={"length_drift": 1.0, "ensemble_disagreement_growth": 0.5}, patience=patience
    )
    for label, h in histories.items():
        live = Monitor(config).replay(h.points)
        batch = Monitor(config, incremental=False).replay(h.points)
        for r, b in zip(live, batch, strict=True):
            assert (r.step, r.alarming, r.alarm, r.alarm_step, r.reasons) == (
                b.step,
                b.alarming,
                b.alarm,
                b.alarm_step,
                b.reasons,
            ), label
            _assert_same(list(r.scores.values()), list(b.scores.values()), f"{label} {r.step}")
            assert list(r.scores) == list(b.scores)
            assert abs(r.alarm_score - b.alarm_score) <= 1e-12, label
        # And the batch monitor is the batch forms themselves.
        k = len(h) // 2
        assert batch[k - 1].scores["length_drift"] == run_detector(h.prefix(k), "length_drift")[-1]
        assert (
            batch[k - 1].alarm_score == combined_alarm(h.prefix(k), load_alarm("toy_text-v2"))[-1]
        )
    # The hacking run does raise the threshold alarm, the calm one does not, so the
    # comparison above covers raised alarms.
    assert Monitor(config).replay(histories["hacking"].points)[-1].alarm


def test_a_detector_that_raises_leaves_the_monitor_as_it_was(histories):
    # A plug-in detector without an incremental form (rerun over the history: same reading)
    # that raises on a point with a huge proxy score: the monitor refuses the point, and
    # then goes on as if it had never seen it.
    def fussy(history: RunHistory) -> np.ndarray:
        if any(p.r_proxy is not None and p.r_proxy.mean() > 1e3 for p in history.points):
            raise ValueError("fussy: proxy out of range")
        return np.array([float(p.step) for p in history.points])

    DETECTORS.register("fussy_test_detector", fussy, higher_is_better=False)
    try:
        config = MonitorConfig(detectors=["fussy_test_detector", *default_detectors()])
        h = histories["hacking"]
        m = Monitor(config)
        m.replay(h.points[:5])
        bad = dataclasses.replace(h.points[5], r_proxy=h.points[5].r_proxy + 1e4)
        with pytest.raises(ValueError, match="fussy"):
            m.observe(bad)
        assert len(m.points) == len(m.readings) == 5
        rest = m.replay(h.points[5:])
        fresh = Monitor(config).replay(h.points)
        for r, f in zip(rest, fresh[5:], strict=True):
            assert (r.step, r.alarm_score, r.alarming, r.alarm_step, r.reasons) == (
                f.step,
                f.alarm_score,
                f.alarming,
                f.alarm_step,
                f.reasons,
            )
            _assert_same(list(r.scores.values()), list(f.scores.values()), str(r.step))
        assert [r.scores["fussy_test_detector"] for r in rest] == [
            float(p.step) for p in h.points[5:]
        ]
    finally:
        DETECTORS.unregister("fussy_test_detector")


def test_streams_must_be_fed_every_prefix_in_turn(histories):
    h = histories["calm"]
    streams = DetectorStreams()
    streams.score(h.prefix(1), "ensemble_disagreement")
    first = streams.score(h.prefix(2), "ensemble_disagreement")
    # The same prefix again (another reader) gives the same score without feeding it twice.
    assert streams.score(h.prefix(2), "ensemble_disagreement") == first
    with pytest.raises(ValueError, match=r"'ensemble_disagreement'.*feed every prefix"):
        streams.score(h.prefix(4), "ensemble_disagreement")


def test_stream_parameters_are_checked_as_the_batch_forms(histories):
    h = histories["calm"].prefix(1)
    for name, params, match in [
        ("proxy_gain_per_kl", {"k": 1}, "k: expected >= 2"),
        ("repetition_drift", {"n": 0}, "n: expected >= 1"),
        ("cusum", {"signal": "length_drift", "k": 1}, "at least 2 points"),
        ("cusum", {"signal": "cusum"}, "needs signal_params"),
        ("mahalanobis_outliers", {"alpha": 1.5}, "alpha: expected in"),
        ("ensemble_disagreement", {"x": 1}, "does not take"),
    ]:
        with pytest.raises(ValueError, match=match):
            run_detector(h, name, params)
        with pytest.raises(ValueError, match=match):
            DetectorStreams().score(h, name, params)
    assert math.isnan(DetectorStreams().score(h, "kl_acceleration"))
