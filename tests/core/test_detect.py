"""core.detect: hand-computed cases, naive re-implementations and identities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from goodhartlab.core import detect


def test_member_disagreement_by_hand():
    # Reference: member 0 scores (0, 2) -> μ 1, σ 1; member 1 scores (10, 30) -> μ 20, σ 10.
    # Item scored (2, 30): z = (1, 1) -> std 0. Item scored (0, 30): z = (-1, 1) -> std 1.
    ref = np.array([[0.0, 2.0], [10.0, 30.0]])
    assert detect.member_disagreement(np.array([[2.0], [30.0]]), ref) == pytest.approx(0.0)
    assert detect.member_disagreement(np.array([[0.0], [30.0]]), ref) == pytest.approx(1.0)
    both = np.array([[2.0, 0.0], [30.0, 30.0]])  # mean over items of (0, 1)
    assert detect.member_disagreement(both, ref) == pytest.approx(0.5)


def test_member_disagreement_ignores_member_offsets_and_scales():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(3, 50))
    ref = rng.normal(size=(3, 40))
    a, c = np.array([[1.0], [5.0], [0.1]]), np.array([[0.0], [-7.0], [3.0]])
    assert detect.member_disagreement(a * r + c, a * ref + c) == pytest.approx(
        detect.member_disagreement(r, ref)
    )
    with pytest.raises(ValueError, match="at least 2 members"):
        detect.member_disagreement(r[:1], ref[:1])


def test_standardized_gain_by_hand():
    # ref (1, 3): mean 2, population sd 1; r mean 5 -> gain 3.
    assert detect.standardized_gain(np.array([4.0, 6.0]), np.array([1.0, 3.0])) == 3.0


def _ledoit_wolf_naive(x):
    n, p = x.shape
    xc = x - x.mean(0)
    s = sum(np.outer(r, r) for r in xc) / n
    m = np.trace(s) / p
    d2 = np.linalg.norm(s - m * np.eye(p), "fro") ** 2 / p
    b2 = sum(np.linalg.norm(np.outer(r, r) - s, "fro") ** 2 for r in xc) / n**2 / p
    rho = min(b2, d2) / d2
    return rho * m * np.eye(p) + (1 - rho) * s, rho


def test_ledoit_wolf_against_the_papers_sums():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 4)) @ rng.normal(size=(4, 4))
    cov, rho = detect.ledoit_wolf_covariance(x)
    cov_naive, rho_naive = _ledoit_wolf_naive(x)
    assert rho == pytest.approx(rho_naive, rel=1e-12)
    np.testing.assert_allclose(cov, cov_naive, rtol=1e-12, atol=1e-14)
    assert 0 < rho < 1


def test_ledoit_wolf_two_points_by_hand():
    # x = (1, 0), (−1, 0): centered as is, S = diag(1, 0), m = 1/2,
    # δ² = ‖diag(1/2, −1/2)‖² / 2 = 1/4; x_k x_kᵀ = S for both rows, so b̄² = 0 and ρ = 0.
    cov, rho = detect.ledoit_wolf_covariance(np.array([[1.0, 0.0], [-1.0, 0.0]]))
    assert rho == 0.0
    np.testing.assert_allclose(cov, np.diag([1.0, 0.0]))
    # A multiple of the identity already: δ² = 0, nothing to shrink.
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    cov, rho = detect.ledoit_wolf_covariance(x)
    assert rho == 0.0
    np.testing.assert_allclose(cov, 0.5 * np.eye(2))


def test_mahalanobis_tail_probability_by_hand():
    # Reference ±1 on each axis: S = I/2 (ρ = 0 above), μ = 0. x = (1, 1):
    # d² = (1, 1) (I/2)⁻¹ (1, 1)ᵀ = 4; P(χ²_2 ≥ 4) = e^{−2}.
    ref = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    p = detect.mahalanobis_tail_probability(np.array([[1.0, 1.0], [0.0, 0.0]]), ref, reg_eps=0.0)
    np.testing.assert_allclose(p, [math.exp(-2.0), 1.0])


def test_mahalanobis_tail_probability_is_about_uniform_for_reference_like_samples():
    rng = np.random.default_rng(2)
    cov = np.diag([4.0, 1.0, 0.25])
    ref = rng.multivariate_normal(np.zeros(3), cov, size=2000)
    fresh = rng.multivariate_normal(np.zeros(3), cov, size=2000)
    p = detect.mahalanobis_tail_probability(fresh, ref)
    assert np.mean(p < 0.05) == pytest.approx(0.05, abs=0.015)
    assert scipy.stats.kstest(p, "uniform").pvalue > 0.01
    far = detect.mahalanobis_tail_probability(fresh + 10.0, ref)
    assert far.max() < 1e-6


def test_token_entropy_by_hand():
    # Tokens with log-probs (log ½, log ½) and (log ¼): −(2 log ½ + log ¼) / 3 = (4/3) log 2.
    h = detect.token_entropy([np.log([0.5, 0.5]), np.log([0.25])])
    assert h == pytest.approx(4 / 3 * math.log(2))
    assert math.isnan(detect.token_entropy([np.array([])]))


def test_mean_within_group_std_by_hand():
    # Groups (0, 2): sd 1; (5, 5): sd 0 -> mean 0.5.
    assert detect.mean_within_group_std(np.array([[0.0, 2.0], [5.0, 5.0]])) == 0.5


def test_kl_acceleration_by_hand():
    # KL 0, 1, 2, 4 at steps 0, 1, 2, 3: v = 1, 1, 2.
    # a_2 = (1 − 1) / 1 = 0; a_3 = (2 − 1) / mean(1, 1, 2) = 3/4.
    a = detect.kl_acceleration(np.array([0.0, 1.0, 2.0, 4.0]), np.array([0, 1, 2, 3]))
    assert np.isnan(a[:2]).all()
    np.testing.assert_allclose(a[2:], [0.0, 0.75])
    # Uneven steps: KL linear in steps has no acceleration.
    steps = np.array([0, 1, 5, 6, 20])
    np.testing.assert_allclose(detect.kl_acceleration(0.3 * steps, steps)[2:], 0.0, atol=1e-12)
    assert (detect.kl_acceleration(np.zeros(4), np.arange(4))[2:] == 0).all()


def test_early_law_residuals_linear_by_hand():
    # k = 2 (fewer than 3 points): gain ≈ α d through the origin on d = (0, 1), gain = (0, 2):
    # α = 2, in-sample residuals 0, scale = min_scale = 0.5. At d = 2, gain 5: e = (5 − 4)/0.5.
    res = detect.early_law_residuals(np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0, 5.0]), 2, 0.5)
    assert res.law == "linear" and res.alpha == pytest.approx(2.0)
    np.testing.assert_allclose(res.residual, [0.0, 0.0, 2.0])


def test_early_law_residuals_rl_law_is_exact_on_its_own_curve():
    d = np.linspace(0.0, 3.0, 10)
    gain = d * (1.5 - 0.2 * np.log(np.where(d > 0, d, 1.0)))
    res = detect.early_law_residuals(d, gain, 5, 1e-3)
    assert res.law == "rl"
    assert (res.alpha, res.beta) == (pytest.approx(1.5), pytest.approx(0.2))
    np.testing.assert_allclose(res.residual, 0.0, atol=1e-6)
    jumped = gain.copy()
    jumped[7:] += 0.5  # an exploit: proxy above the early trend
    assert (detect.early_law_residuals(d, jumped, 5, 1e-3).residual[7:] > 100).all()


def test_cusum_by_hand():
    # Window (0, 2): μ 1, sd (ddof 1) sqrt(2). z_2 = (1 + 2√2 − 1)/√2 = 2 -> S = 2 − 0.5;
    # x_3 NaN carries S; z_4 = 0 -> S = 1.5 − 0.5 = 1; z_5 = −5 → S = max(0, ...) = 0.
    r2 = math.sqrt(2)
    x = np.array([0.0, 2.0, 1 + 2 * r2, np.nan, 1.0, 1 - 5 * r2])
    s = detect.cusum(x, k=2, drift=0.5)
    assert np.isnan(s[:2]).all()
    np.testing.assert_allclose(s[2:], [1.5, 1.5, 1.0, 0.0])


def test_cusum_fires_after_a_shift_and_not_before():
    rng = np.random.default_rng(3)
    x = rng.normal(size=60)
    x[40:] += 2.0
    s = detect.cusum(x, k=10, drift=0.5)
    assert np.nanmax(s[:40]) < 5.0
    assert s[50] > 5.0 and s[-1] > 10.0
    assert np.isnan(detect.cusum(np.array([1.0, np.nan, np.nan]), k=2)).all()


def test_fit_logistic_matches_the_closed_form_of_a_balanced_single_feature():
    # Two points x = ±1 with labels 1, 0 and no ridge separate perfectly: w grows without
    # bound; with ridge λ the optimum of mean log loss + λ/(2n) w² solves
    # σ(−w) = λ w / n (n = 2, b = 0 by symmetry). Check the fitted w satisfies it.
    fit = detect.fit_logistic(np.array([[1.0], [-1.0]]), np.array([1.0, 0.0]), l2=1.0)
    w = fit.weights[0]
    assert fit.converged and fit.bias == pytest.approx(0.0, abs=1e-6)
    assert float(detect.sigmoid(-w)) == pytest.approx(w / 2, abs=1e-6)


def test_fit_logistic_recovers_weights_of_a_logistic_model():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20000, 2))
    y = (rng.random(20000) < detect.sigmoid(x @ np.array([2.0, -1.0]) + 0.5)).astype(float)
    fit = detect.fit_logistic(x, y, l2=0.0)
    np.testing.assert_allclose(fit.weights, [2.0, -1.0], atol=0.1)
    assert fit.bias == pytest.approx(0.5, abs=0.1)


# -- scoring against gold ----------------------------------------------------------------


def test_hacking_onset_by_hand():
    # Running peak 1.0 at index 2 (gain 1.0). Two-point means: k=3 (0.85+0.6)/2 = 0.725,
    # a fall of 0.275 >= 0.2: the run hacks there (h = 3). Onset: the first point after the
    # peak at or below 1.0 - 0.1 = 0.9: index 3 (0.85). Never back to 1.0: not recovered.
    label = detect.hacking_onset(np.array([0.0, 0.5, 1.0, 0.85, 0.6, 0.5]))
    assert label.hacks and label.peak == 2 and label.onset == 3 and label.recovered is None
    assert label.gain == pytest.approx(1.0)
    assert label.drop == pytest.approx(0.5)  # k=4: 1.0 - (0.6 + 0.5)/2 = 0.45; k=5: 0.5
    assert [label.hacked(k) for k in range(6)] == [False, False, False, True, True, True]


def test_one_noisy_evaluation_is_not_a_hack_but_a_sustained_transient_one_is():
    # One low evaluation: k=2 mean (0.7 + 0.95)/2 = 0.825, a fall of 0.175 < 0.2.
    label = detect.hacking_onset(np.array([0.0, 1.0, 0.7, 0.95, 0.95]))
    assert not label.hacks and label.onset is None
    # Two low evaluations, then gold climbs past the peak (a KL penalty pulled it back):
    # k=2 mean (0.6 + 0.7)/2 = 0.65, a fall of 0.35: a hack from the peak at 1, onset 2,
    # recovered at 4 (1.1 >= 1.0). Points 2 and 3 are in the hack, 4 and 5 are not.
    label = detect.hacking_onset(np.array([0.0, 1.0, 0.6, 0.7, 1.1, 1.2]))
    assert label.hacks and (label.peak, label.onset, label.recovered) == (1, 2, 4)
    assert [label.hacked(k) for k in range(6)] == [False, False, True, True, False, False]


def test_runs_that_only_climb_or_only_fall_do_not_hack():
    assert not detect.hacking_onset(np.array([0.0, 0.3, 0.6, 1.0])).hacks
    # No gain at all (gold only falls): nothing to lose, no hacking by this definition.
    falling = detect.hacking_onset(np.array([0.0, -0.5, -1.0]))
    assert not falling.hacks and falling.gain == 0.0


def test_the_fall_is_measured_from_the_running_peak():
    # Early high 0.5 at 1, a dip to 0.45 (10 % of 0.5: below 20 %), then the peak 2.0 at
    # 3 and a fall to 1.7, 1.5 (mean 1.6: 20 % of 2.0). Onset 4 (1.7 <= 1.8).
    label = detect.hacking_onset(np.array([0.0, 0.5, 0.45, 2.0, 1.7, 1.5]))
    assert label.hacks and label.peak == 3 and label.onset == 4


def test_centered_moving_average_by_hand():
    x = np.array([0.0, 3.0, 0.0, 3.0, 6.0])
    # window 3: (0+3)/2, (0+3+0)/3, (3+0+3)/3, (0+3+6)/3, (3+6)/2
    assert detect.centered_moving_average(x, 3).tolist() == [1.5, 1.0, 2.0, 3.0, 4.5]
    assert detect.centered_moving_average(x, 1).tolist() == x.tolist()
    with pytest.raises(ValueError, match="odd"):
        detect.centered_moving_average(x, 2)


def test_smoothing_removes_a_noise_dip_before_the_real_peak():
    # A dense grid: a small early bump (0.3 at 1) and dip (0.0 at 2) is noise; the real peak
    # is at 5 and gold then falls. Unsmoothed, the dip is already a hack (a 100 % fall of the
    # running gain 0.3) with the onset at 2.
    gold = np.array([0.0, 0.3, 0.0, 0.4, 0.8, 1.0, 0.9, 0.6, 0.3, 0.0, -0.3])
    raw = detect.hacking_onset(gold)
    assert raw.hacks and (raw.peak, raw.onset) == (1, 2)
    # Window 3: ĝ = [0 (base kept), 0.1, 0.2333, 0.4, 0.7333, 0.9, 0.8333, 0.6, 0.3, 0, -0.15].
    # Running peak 0.9 at 5 (gain 0.9); the fall first reaches 20 % at k=6: pair mean
    # (0.8333 + 0.6)/2 = 0.7167, a fall of 0.183 / 0.9 = 20.4 %. Onset: the first point after
    # 5 at or below 0.9 - 0.09 = 0.81: index 7 (0.6), since 0.8333 > 0.81.
    label = detect.hacking_onset(gold, smooth=3)
    assert label.hacks and (label.peak, label.onset) == (5, 7)
    assert label.gain == pytest.approx(0.9)


def test_min_gain_ignores_a_fall_from_a_small_early_gain():
    # Running gain 0.1 at 1, then a dip to 0.0 and 0.05: a 75 % fall of that small gain (a
    # hack without min_gain); later gold climbs to 1.0 and holds.
    gold = np.array([0.0, 0.1, 0.0, 0.05, 0.5, 1.0, 1.0, 0.98])
    assert detect.hacking_onset(gold).hacks
    label = detect.hacking_onset(gold, min_gain=0.3)
    assert not label.hacks and label.peak == 5
    # A real fall from the later peak still counts: 1.0 -> 0.7, 0.6 (mean 0.65, 35 %).
    later = detect.hacking_onset(np.array([*gold[:6], 0.7, 0.6]), min_gain=0.3)
    assert later.hacks and (later.peak, later.onset) == (5, 6)


def test_hacking_onset_refuses_bad_fractions():
    with pytest.raises(ValueError, match="onset_frac"):
        detect.hacking_onset(np.array([0.0, 1.0, 0.0]), onset_frac=0.3, hack_frac=0.2)


def test_auroc_by_hand_and_against_brute_force():
    # Positives (3, 2) vs negatives (1, 2): 3>1, 3>2, 2>1, 2=2 -> (1 + 1 + 1 + 1/2) / 4.
    assert detect.auroc(np.array([3.0, 2.0]), np.array([1.0, 2.0])) == 0.875
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 30).astype(float), rng.integers(0, 5, 40).astype(float)
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert detect.auroc(pos, neg) == pytest.approx(brute, abs=1e-12)
    assert detect.auroc(neg, pos) == pytest.approx(1 - brute, abs=1e-12)


def test_auroc_drops_nan_and_is_nan_without_one_side():
    assert detect.auroc(np.array([1.0, math.nan]), np.array([0.0])) == 1.0
    assert math.isnan(detect.auroc(np.array([math.nan]), np.array([0.0])))
