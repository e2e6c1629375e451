"""monitor.detectors: each detector on a hand-computed history, then behaviour on synthetic runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from goodhartlab.core import detect
from goodhartlab.monitor import EvalPoint, RunHistory, run_detector, run_detectors
from goodhartlab.registry import DETECTORS

BUILTIN = {
    "ensemble_disagreement",
    "ensemble_disagreement_growth",
    "heldout_divergence",
    "mahalanobis_outliers",
    "length_drift",
    "repetition_drift",
    "distinct_drop",
    "proxy_gain_per_kl",
    "kl_acceleration",
    "entropy_collapse",
    "group_variance_collapse",
    "cusum",
    "combined",
}
# Detectors whose score at point k uses points 0..k only (proxy_gain_per_kl fits its first k
# points in-sample; cusum standardizes on its window).
CAUSAL = BUILTIN - {"proxy_gain_per_kl", "cusum", "combined"}


def _history(**fields_per_point) -> RunHistory:
    n = len(next(iter(fields_per_point.values())))
    return RunHistory(
        [EvalPoint(step=10 * k, **{f: v[k] for f, v in fields_per_point.items()}) for k in range(n)]
    )


def test_registry_lists_the_detectors_with_their_metadata(capsys):
    assert set(DETECTORS.names()) >= BUILTIN
    for name in BUILTIN:
        e = DETECTORS.entry(name)
        assert e.higher_is_better is False and e.paper and e.meta["needs"], name
        assert e.builtin and "=" in (e.obj.__doc__ or ""), name  # an equation in the docstring
    from goodhartlab.cli import main

    assert main(["list", "detector"]) == 0
    out = capsys.readouterr().out
    assert "ensemble_disagreement" in out and "mahalanobis_outliers" in out
    assert "params: signal='required', k=5, drift=0.5" in out


def test_ensemble_disagreement_and_growth_by_hand():
    # Base members (0, 2) and (30, 10): μ = (1, 20), σ = (1, 10); z = (−1, 1) and (1, −1):
    # spread 1 on both items, D_0 = 1. Point 1 (2, 2), (30, 30): z = (1, 1) and (1, 1): D = 0.
    # Point 2 (−2, 0), (30, 30): z = (−3, −1), (1, 1): spreads 2 and 1, D = 1.5.
    members = [
        [[0.0, 2.0], [30.0, 10.0]],
        [[2.0, 2.0], [30.0, 30.0]],
        [[-2.0, 0.0], [30.0, 30.0]],
    ]
    h = _history(r_members=members)
    np.testing.assert_allclose(run_detector(h, "ensemble_disagreement"), [1.0, 0.0, 1.5])
    np.testing.assert_allclose(run_detector(h, "ensemble_disagreement_growth"), [0.0, -1.0, 0.5])


def test_heldout_divergence_by_hand():
    # Proxy base (0, 2): mean 1, sd 1; point 1 mean 4 -> gain 3. Held-out base (10, 14):
    # mean 12, sd 2; point 1 mean 14 -> gain 1. Δ = 3 − 1 = 2.
    h = _history(r_proxy=[[0.0, 2.0], [3.0, 5.0]], r_heldout=[[10.0, 14.0], [12.0, 16.0]])
    np.testing.assert_allclose(run_detector(h, "heldout_divergence"), [0.0, 2.0])


def test_mahalanobis_outliers_by_hand():
    # Base latents ±1 on each axis: μ 0, Σ = I/2 (Ledoit-Wolf ρ = 0). Base rows: d² = 2,
    # P(χ²_2 ≥ 2) = e^{−1} ≈ 0.37 ≥ α = 0.2: no outlier. Point 1: (1, 1) d² = 4, e^{−2} ≈ 0.14
    # < 0.2: outlier; (0, 0): 1, not; (5, 5): d² = 100, outlier -> 2 of 3.
    base = [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]
    h = _history(latents=[base, [[1.0, 1.0], [0.0, 0.0], [5.0, 5.0]]])
    out = run_detector(h, "mahalanobis_outliers", {"alpha": 0.2, "reg_eps": 0.0})
    np.testing.assert_allclose(out, [0.0, 2 / 3])
    with pytest.raises(ValueError, match="alpha"):
        run_detector(h, "mahalanobis_outliers", {"alpha": 1.5})


def test_mahalanobis_outliers_near_alpha_for_base_like_latents_near_1_for_far_ones():
    rng = np.random.default_rng(0)
    cov = np.diag(np.linspace(0.2, 3.0, 8))
    lat = [rng.multivariate_normal(np.zeros(8), cov, size=400) for _ in range(3)]
    lat[2] = lat[2] + 3.0  # far from the base policy's latents
    out = run_detector(_history(latents=lat), "mahalanobis_outliers")  # α = 0.01
    assert out[1] < 0.03
    assert out[2] > 0.95


def test_length_drift_by_hand():
    # Token counts: base (2, 4) -> mean 3, sd 1; point 1 (5, 7): |6 − 3| / 1 = 3; point 2
    # (1, 1): 2 (both directions count).
    ids = [[[1, 2], [1, 2, 3, 4]], [[1] * 5, [1] * 7], [[1], [2]]]
    np.testing.assert_allclose(
        run_detector(_history(completion_ids=ids), "length_drift"), [0, 3, 2]
    )
    # Words when there are no ids; an empty completion is a real length 0.
    texts = [["a b", "a b c d"], ["", "a b"]]  # (2, 4) -> (0, 2): |1 − 3| / 1
    np.testing.assert_allclose(run_detector(_history(completions=texts), "length_drift"), [0, 2])


def test_repetition_drift_by_hand():
    # n = 2. Base "a b c d", "x y": no repeated bigram -> 0. Point 1: "a b a b": bigrams
    # ab ba ab, 2 distinct of 3 -> 1/3; "a a a a a": aa x 4, 1 of 4 -> 3/4; "z": no bigram,
    # left out -> (1/3 + 3/4) / 2 = 13/24.
    texts = [["a b c d", "x y"], ["a b a b", "a a a a a", "z"]]
    out = run_detector(_history(completions=texts), "repetition_drift", {"n": 2})
    np.testing.assert_allclose(out, [0.0, 13 / 24])
    none = run_detector(_history(completions=[["a b"], ["z"]]), "repetition_drift", {"n": 2})
    assert none[0] == 0 and math.isnan(none[1])  # no completion long enough: cannot tell


def test_distinct_drop_by_hand():
    # n = 2. Base "a b", "c d": 2 distinct bigrams of 2 -> 1. Point 1 is scored on its first
    # 2 completions, "a b", "a b": 1 of 2 -> 1/2. Drop 1/2.
    texts = [["a b", "c d"], ["a b", "a b", "c d"]]
    np.testing.assert_allclose(run_detector(_history(completions=texts), "distinct_drop"), [0, 0.5])


def test_proxy_gain_per_kl_by_hand():
    # k = 2 -> the linear law. KL (0, 1, 4): d = (0, 1, 2). Base proxy (0, 2): mean 1, sd 1,
    # B = 2, standard error 1/√2. Gains (0, 2, 5); fit α = 2 on the first two, residuals 0,
    # scale 1/√2; e_2 = (5 − 2·2) · √2.
    h = _history(kl=[0.0, 1.0, 4.0], r_proxy=[[0.0, 2.0], [2.0, 4.0], [5.0, 7.0]])
    np.testing.assert_allclose(run_detector(h, "proxy_gain_per_kl", {"k": 2}), [0, 0, math.sqrt(2)])
    assert np.isnan(run_detector(h, "proxy_gain_per_kl", {"k": 5})).all()  # too few points


def test_kl_acceleration_by_hand_and_gaps():
    # KL 0, 1, 2, 4 at steps 0, 10, 20, 30: rates 0.1, 0.1, 0.2 -> a = (nan, nan, 0, 0.1 / (0.4/3)).
    h = _history(kl=[0.0, 1.0, 2.0, 4.0])
    np.testing.assert_allclose(run_detector(h, "kl_acceleration"), [np.nan, np.nan, 0.0, 0.75])
    # Unknown KL at point 2: points 2 and 3 cannot be differenced; point 4 can (3, 4, 5 known).
    gap = _history(kl=[0.0, 1.0, None, 3.0, 4.0, 5.0])
    out = run_detector(gap, "kl_acceleration")
    assert np.isnan(out[:5]).all() and out[5] == pytest.approx(0.0)


def test_entropy_collapse_by_hand():
    # Ĥ_0 = log 2 (tokens of probability ½); point 1 all probability 1: Ĥ = 0 -> 1;
    # point 2 (½, 1): Ĥ = log 2 / 2 -> 1/2.
    half = math.log(0.5)
    logp = [[[half, half]], [[0.0, 0.0]], [[half, 0.0]]]
    np.testing.assert_allclose(run_detector(_history(logp=logp), "entropy_collapse"), [0, 1, 0.5])


def test_group_variance_collapse_by_hand():
    # Base groups (0, 2), (0, 2): s_0 = 1. Point 1 (1, 1), (0, 1): s = (0 + 1/2)/2 -> 1 − 1/4.
    groups = [[[0.0, 2.0], [0.0, 2.0]], [[1.0, 1.0], [0.0, 1.0]]]
    np.testing.assert_allclose(
        run_detector(_history(r_groups=groups), "group_variance_collapse"), [0, 0.75]
    )


def test_cusum_detector_is_core_cusum_of_its_signal(make_run):
    h, _ = make_run(0, hacks=True)
    x = run_detector(h, "ensemble_disagreement")
    s = run_detector(h, "cusum", {"signal": "ensemble_disagreement", "k": 5, "drift": 0.5})
    np.testing.assert_array_equal(s, detect.cusum(x, k=5, drift=0.5))
    nested = run_detector(
        h, "cusum", {"signal": "mahalanobis_outliers", "signal_params": {"alpha": 0.05}}
    )
    np.testing.assert_array_equal(
        nested, detect.cusum(run_detector(h, "mahalanobis_outliers", {"alpha": 0.05}))
    )
    with pytest.raises(ValueError, match="signal"):
        run_detector(h, "cusum", {})  # the signal is required
    with pytest.raises(ValueError, match="unknown detector"):
        run_detector(h, "cusum", {"signal": "no_such_detector"})


def test_missing_inputs_give_nan_never_zero():
    only_kl = _history(kl=[0.0, 0.1, 0.3])
    scores = run_detectors(only_kl)
    assert "cusum" not in scores and "combined" not in scores  # they need parameters
    for name, s in scores.items():
        if name != "kl_acceleration":
            assert np.isnan(s).all(), name
    # The reference point lacks members: every point is NaN, not "no disagreement".
    late = RunHistory([EvalPoint(step=0), EvalPoint(step=1, r_members=np.ones((2, 3)))])
    assert np.isnan(run_detector(late, "ensemble_disagreement")).all()
    # A later point lacks them: NaN there only.
    gap = RunHistory(
        [
            EvalPoint(step=0, r_members=[[0.0, 1.0], [1.0, 0.0]]),
            EvalPoint(step=1),
            EvalPoint(step=2, r_members=[[0.0, 1.0], [1.0, 0.0]]),
        ]
    )
    out = run_detector(gap, "ensemble_disagreement")
    assert math.isnan(out[1]) and out[2] == out[0] == pytest.approx(1.0)


def test_causal_detectors_give_a_live_monitor_the_offline_scores(make_run):
    h, _ = make_run(3, hacks=True, n_points=12, onset=6)
    for name in CAUSAL:
        full = run_detector(h, name)
        for k in (1, 4, 9):
            np.testing.assert_array_equal(run_detector(h.prefix(k), name), full[:k], err_msg=name)


def test_detectors_rise_when_a_run_hacks(make_run):
    # After onset every detector of a hacking run sits above the same run's pre-onset
    # level and above a run that does not hack.
    hack, labels = make_run(1, hacks=True)
    calm, _ = make_run(1, hacks=False)
    after = labels == 1
    for name, s in run_detectors(hack).items():
        quiet = run_detectors(calm)[name]
        late = np.nanmean(s[after][-5:])
        assert late > np.nanmax(s[~after][2:]) or name == "proxy_gain_per_kl", name
        assert late > np.nanmean(quiet[-5:]), name
    cs = run_detector(hack, "cusum", {"signal": "ensemble_disagreement"})
    cq = run_detector(calm, "cusum", {"signal": "ensemble_disagreement"})
    assert np.nanmax(cs[~after]) < 5 < cs[-1] and np.nanmax(cq) < 5
