"""Tests for goodhartlab.core.scaling."""

import math

import numpy as np
import pytest
import torch

from goodhartlab.core.scaling import (
    bon_law,
    fit_bon_law,
    fit_rl_law,
    gold_at_kl,
    overoptimization,
    peak_drop_intervals,
    rl_law,
)


def test_laws_hand_computed():
    # bon: d = 2, α = 1, β = 0.25 -> 2 (1 - 0.5) = 1.
    # rl:  d = e, α = 1, β = 0.5  -> e (1 - 0.5) = e/2;  d = 0 -> 0 (d log d -> 0).
    torch.testing.assert_close(
        bon_law([0.0, 2.0], 1.0, 0.25), torch.tensor([0.0, 1.0], dtype=torch.float64)
    )
    torch.testing.assert_close(
        rl_law([0.0, math.e], 1.0, 0.5), torch.tensor([0.0, math.e / 2], dtype=torch.float64)
    )


def test_fit_bon_law_recovers_parameters_and_peak():
    # α = 0.9, β = 0.13: peak at d* = α/(2β) = 3.4615..., R(d*) = α²/(4β) = 1.5577...
    d = np.linspace(0.0, 6.0, 25)
    fit = fit_bon_law(d, bon_law(d, 0.9, 0.13))
    assert fit.law == "bon"
    assert fit.alpha == pytest.approx(0.9, rel=1e-9)
    assert fit.beta == pytest.approx(0.13, rel=1e-9)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.d_peak == pytest.approx(0.9 / 0.26, rel=1e-9)
    assert fit.gold_peak == pytest.approx(0.81 / 0.52, rel=1e-9)


def test_fit_rl_law_recovers_parameters_and_peak_with_d_zero():
    # α = 0.8, β = 0.3: d* = exp(α/β - 1) = exp(5/3), R(d*) = β d*.
    d = np.concatenate([[0.0], np.geomspace(0.05, 20.0, 30)])
    fit = fit_rl_law(d, rl_law(d, 0.8, 0.3))
    assert fit.law == "rl"
    assert fit.alpha == pytest.approx(0.8, rel=1e-9)
    assert fit.beta == pytest.approx(0.3, rel=1e-9)
    assert fit.d_peak == pytest.approx(math.exp(0.8 / 0.3 - 1), rel=1e-9)
    assert fit.gold_peak == pytest.approx(0.3 * math.exp(0.8 / 0.3 - 1), rel=1e-9)
    # The peak is the maximum of the law.
    grid = np.linspace(0.0, 30.0, 30001)
    assert float(rl_law(grid, fit.alpha, fit.beta).max()) <= fit.gold_peak + 1e-12


def test_rl_law_peak_beyond_any_float_is_infinite_not_an_overflow():
    # α = 1, β = 1e-4: d* = exp(α/β − 1) = exp(9999), past the largest float; the fit
    # reports no finite peak (math.exp raised OverflowError here in the monitor's fits).
    d = np.linspace(0.5, 3.0, 6)
    fit = fit_rl_law(d, rl_law(d, 1.0, 1e-4))
    assert fit.beta == pytest.approx(1e-4, rel=1e-6)
    assert fit.d_peak == math.inf and fit.gold_peak == math.inf


def test_fit_noisy_curve_has_r2_below_one():
    rng = np.random.default_rng(0)
    d = np.linspace(0.1, 5.0, 40)
    gold = bon_law(d, 1.0, 0.2).numpy() + rng.normal(0, 0.05, size=40)
    fit = fit_bon_law(d, gold)
    assert 0.9 < fit.r2 < 1.0
    assert fit.alpha == pytest.approx(1.0, abs=0.05)


def test_fit_without_peak():
    # β < 0 (gold keeps accelerating): no maximum.
    d = np.linspace(0.0, 3.0, 5)
    fit = fit_bon_law(d, bon_law(d, 0.5, -0.1))
    assert fit.d_peak == math.inf and fit.gold_peak == math.inf
    # α < 0, β > 0: gold only falls; the maximum over d ≥ 0 is at d = 0.
    fit = fit_bon_law(d, bon_law(d, -0.5, 0.1))
    assert (fit.d_peak, fit.gold_peak) == (0.0, 0.0)


def test_overoptimization_hand_computed():
    # Gold 0, 2, 3, 1.5 at d 0..3 (given out of order): peak 3 at d = 2, final 1.5, initial 0.
    # drop = (3 - 1.5)/(3 - 0) = 0.5.
    res = overoptimization([3.0, 0.0, 2.0, 1.0], [1.5, 0.0, 3.0, 2.0])
    assert (res.gold_peak, res.d_peak, res.gold_final, res.gold_initial) == (3.0, 2.0, 1.5, 0.0)
    assert res.drop == pytest.approx(0.5)
    assert res.definition == "overoptimization/v1"


def test_overoptimization_edge_cases():
    # Peak last: nothing lost.
    assert overoptimization([0.0, 1.0, 2.0], [0.0, 1.0, 2.0]).drop == 0.0
    # Fell below the start: (2 - (-1))/(2 - 0) = 1.5.
    assert overoptimization([0.0, 1.0, 2.0], [0.0, 2.0, -1.0]).drop == pytest.approx(1.5)
    # Peak at the start, then a fall: no gain to lose -> NaN.
    assert math.isnan(overoptimization([0.0, 1.0, 2.0], [1.0, 0.5, 0.0]).drop)
    # Flat: 0.
    assert overoptimization([0.0, 1.0, 2.0], [1.0, 1.0, 1.0]).drop == 0.0
    # One point.
    assert overoptimization([0.0], [1.0]).drop == 0.0


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: fit_bon_law([0.0, 1.0], [0.0, 1.0]), "at least 3"),
        (lambda: fit_rl_law([0.0, 1.0], [0.0, 1.0]), "at least 3"),
        (lambda: fit_bon_law([0.0, 1.0, 2.0], [0.0, 1.0]), "gold"),
        (lambda: fit_bon_law([[0.0, 1.0, 2.0]], [0.0, 1.0, 2.0]), "d "),
        (lambda: fit_bon_law([0.0, -1.0, 2.0], [0.0, 1.0, 2.0]), "d "),
        (lambda: fit_rl_law([0.0, 1.0, float("nan")], [0.0, 1.0, 2.0]), "d "),
        (lambda: fit_rl_law([0.0, 1.0, 2.0], [0.0, float("nan"), 2.0]), "gold"),
        (lambda: fit_bon_law([0.0, 0.0, 1.0], [0.0, 0.0, 1.0]), "too few distinct"),
        (lambda: bon_law([-1.0], 1.0, 1.0), "d "),
        (lambda: overoptimization([], []), "empty"),
        (lambda: overoptimization([0.0, 1.0], [0.0]), "gold"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# ----------------------------------------------------------------- peak_drop_intervals


def test_peak_drop_intervals_collapse_when_every_prompt_is_the_same():
    # Every resample of identical rows has the means [0, 2, 1]: drop = 2 − 1 = 1 exactly.
    ci = peak_drop_intervals(np.array([[0.0, 2.0, 1.0]] * 3), n_boot=200)
    assert (ci.lo, ci.hi, ci.paired_lo, ci.paired_hi) == (1.0, 1.0, 1.0, 1.0)


def test_peak_drop_intervals_hand_computed_two_prompts():
    # Prompts g_1 = [0, 2, 0] and g_2 = [0, 0, 1]; the mean curve [0, 1, 0.5] peaks at k̂ = 1.
    # A resample of P = 2 rows is {1, 1}, {2, 2} (probability 1/4 each) or mixed (1/2):
    #   means [0, 2, 0] -> re-located drop 2 − 0 = 2; paired g_k̂ − g_K = 2
    #   means [0, 0, 1] -> the peak is the last point: drop 0; paired 0 − 1 = −1
    #   means [0, 1, .5] -> drop 0.5;                               paired 0.5
    # With 25% of resamples at each extreme, the 2.5% and 97.5% quantiles are the extremes:
    # re-located [0, 2] (never below 0), paired [−1, 2] (a drop that may be negative).
    g = np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    ci = peak_drop_intervals(g, n_boot=2000, alpha=0.05, seed=3)
    assert (ci.lo, ci.hi) == (0.0, 2.0)
    assert (ci.paired_lo, ci.paired_hi) == (-1.0, 2.0)


def test_peak_drop_intervals_contain_the_drop_and_are_deterministic():
    gen = torch.Generator().manual_seed(5)
    x = torch.linspace(0, 3, 8, dtype=torch.float64)
    g = (x - 0.3 * x**2)[None] + 0.5 * torch.randn(40, 8, generator=gen, dtype=torch.float64)
    ci = peak_drop_intervals(g, n_boot=500, seed=1)
    mean = g.mean(0)
    drop = float(mean.max() - mean[-1])
    assert ci.lo <= drop <= ci.hi and ci.paired_lo <= drop <= ci.paired_hi
    assert ci.lo >= 0
    assert peak_drop_intervals(g.numpy(), n_boot=500, seed=1) == ci


def test_gold_at_kl_interpolates_at_the_first_crossing():
    kl = [0.0, 2.0, 6.0, 3.0, 8.0]
    gold = [0.0, 1.0, 3.0, -1.0, -2.0]
    # b = 4: first crossing between KL 2 (gold 1) and 6 (gold 3): 1 + (4 − 2)/4 · 2 = 2.
    assert gold_at_kl(kl, gold, 4.0) == pytest.approx(2.0)
    # b = 7: only the last point reaches it, from KL 3 (gold −1): −1 + (7 − 3)/5 · (−1) = −1.8.
    assert gold_at_kl(kl, gold, 7.0) == pytest.approx(-1.8)
    assert gold_at_kl(kl, gold, 0.0) == 0.0  # the start
    assert math.isnan(gold_at_kl(kl, gold, 16.0))  # never reached


def test_gold_at_proxy_gain_is_the_first_crossing_of_the_proxy_gain():
    from goodhartlab.core.scaling import gold_at_proxy_gain

    # Proxy gains 0, 1, 3, 2; gold 0, 0.5, 1.5, 0.7. Level 2: first crossed between the
    # 2nd and 3rd evaluations, halfway: 0.5 + 0.5 * (1.5 - 0.5) = 1.0 (the later return
    # to gain 2 at gold 0.7 is not the first crossing).
    assert math.isclose(gold_at_proxy_gain([0, 1, 3, 2], [0, 0.5, 1.5, 0.7], 2.0), 1.0)
    assert math.isnan(gold_at_proxy_gain([0, 1, 3, 2], [0, 0.5, 1.5, 0.7], 3.5))
