"""Tests for goodhartlab.core.rm_metrics: hand-computed cases and identities."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau, pearsonr, spearmanr

from goodhartlab.core.rm_metrics import (
    best_of_k_credit,
    brier_score,
    chosen_tied_at_top,
    expected_calibration_error,
    kendall_tau,
    length_matched,
    member_sign_agreement,
    pairwise_chosen_probability,
    pearson,
    rank_correlation_interval,
    section_scores,
    section_total,
    spearman,
)

NAN = math.nan


def test_best_of_k_credit_hand_computed():
    r_chosen = torch.tensor([1.0, 2.0, 3.0, 0.0])
    r_rejected = torch.tensor(
        [
            [0.0, NAN, NAN],  # a pair, chosen above: 1
            [2.0, 1.0, NAN],  # chosen ties one of two rejected at the top
            [3.0, 3.0, 1.0],  # chosen ties two of three at the top
            [1.0, -1.0, -2.0],  # chosen below one rejected: 0
        ]
    )
    # strict: a tie at the top is wrong.
    assert best_of_k_credit(r_chosen, r_rejected, "strict").tolist() == [1.0, 0.0, 0.0, 0.0]
    # split: m completions share the top -> 1/m: row 1 has m = 2, row 2 has m = 3.
    split = best_of_k_credit(r_chosen, r_rejected, "split")
    torch.testing.assert_close(split, torch.tensor([1.0, 1 / 2, 1 / 3, 0.0], dtype=torch.float64))
    assert chosen_tied_at_top(r_chosen, r_rejected).tolist() == [False, True, True, False]


def test_split_credit_of_a_pair_and_its_swap_sum_to_one():
    # For K = 1 under "split": c(r_c, r_r) + c(r_r, r_c) = 1 (1 + 0, or 1/2 + 1/2 on a tie),
    # so "always longer" + "always shorter" = 1 on pairs.
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 3, (50,), generator=gen).double()
    b = torch.randint(0, 3, (50,), generator=gen).double()
    total = best_of_k_credit(a, b[:, None], "split") + best_of_k_credit(b, a[:, None], "split")
    assert torch.equal(total, torch.ones(50, dtype=torch.float64))
    # strict differs from split exactly on the ties, by 1/2.
    gap = best_of_k_credit(a, b[:, None], "split") - best_of_k_credit(a, b[:, None], "strict")
    assert torch.equal(gap, 0.5 * (a == b).double())


def test_best_of_k_credit_refuses_rows_without_rejected_and_bad_ties():
    with pytest.raises(ValueError, match="at least one rejected"):
        best_of_k_credit(torch.tensor([1.0]), torch.tensor([[NAN, NAN]]))
    with pytest.raises(ValueError, match="ties"):
        best_of_k_credit(torch.tensor([1.0]), torch.tensor([[0.0]]), "half")


def test_pairwise_probability_drops_absent_comparisons():
    # σ(0 − 0) = 1/2; σ(0 − ln 3) = 1 / (1 + 3) = 1/4; σ(2 − 0) = 1/(1 + e^-2).
    p = pairwise_chosen_probability(
        torch.tensor([0.0, 2.0]), torch.tensor([[0.0, math.log(3)], [0.0, NAN]])
    )
    torch.testing.assert_close(
        p, torch.tensor([0.5, 0.25, 1 / (1 + math.exp(-2))], dtype=torch.float64)
    )


def test_ece_and_brier_hand_computed():
    # p = (0.9, 0.6, 0.3), all outcomes 1: confidences (0.9, 0.6, 0.7), correct (1, 1, 0),
    # each alone in its bin of width 0.05, so
    # ECE = (|1 − 0.9| + |1 − 0.6| + |0 − 0.7|) / 3 = 1.2 / 3 = 0.4;
    # Brier = (0.1² + 0.4² + 0.7²) / 3 = 0.66 / 3 = 0.22.
    p, y = torch.tensor([0.9, 0.6, 0.3]), torch.ones(3)
    assert expected_calibration_error(p, y, 10) == pytest.approx(0.4)
    assert brier_score(p, y) == pytest.approx(0.22)
    # One bin: |mean correct − mean conf| = |2/3 − 2.2/3| = 0.2/3.
    assert expected_calibration_error(p, y, 1) == pytest.approx(0.2 / 3)


def test_ece_is_zero_when_calibrated_and_symmetric_in_orientation():
    # p = 0.75 on four comparisons of which three are won: confidence 0.75 = accuracy 0.75.
    p = torch.full((4,), 0.75)
    y = torch.tensor([1.0, 1.0, 1.0, 0.0])
    assert expected_calibration_error(p, y) == pytest.approx(0.0, abs=1e-12)
    # Swapping the two sides of every comparison (p -> 1 − p, y -> 1 − y) changes neither.
    gen = torch.Generator().manual_seed(1)
    p = torch.rand(200, generator=gen, dtype=torch.float64)
    y = (torch.rand(200, generator=gen, dtype=torch.float64) < p).double()
    assert expected_calibration_error(1 - p, 1 - y) == pytest.approx(
        expected_calibration_error(p, y)
    )
    assert brier_score(1 - p, 1 - y) == pytest.approx(brier_score(p, y))
    # A coin flip (p = 1/2) counts as half right: conf 1/2, correct 1/2, ECE 0.
    assert expected_calibration_error(torch.full((3,), 0.5), torch.ones(3)) == 0.0


def test_ece_refuses_bad_bins():
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(torch.tensor([0.7]), torch.ones(1), 0)


def test_correlations_match_scipy_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 40).astype(float)  # many ties: average ranks
    y = x + rng.normal(size=40)
    assert pearson(x, y) == pytest.approx(pearsonr(x, y).statistic)
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert math.isnan(pearson(np.ones(5), y[:5]))  # a constant has no correlation


def test_length_matched_within_ten_percent_of_the_longer():
    # |100 − 91| = 9 <= 0.1 · 100; |100 − 89| = 11 > 10; |100 − 110| = 10 <= 0.1 · 110 = 11.
    lc = torch.tensor([100.0, 100.0, 100.0, 100.0])
    lr = torch.tensor([[91.0, NAN], [89.0, NAN], [110.0, 95.0], [110.0, 80.0]])
    assert length_matched(lc, lr, 0.1).tolist() == [True, False, True, False]
    assert length_matched(lc, lr, 0.0).tolist() == [False, False, False, False]


def test_member_sign_agreement_hand_computed():
    # Row 0: both members put chosen above (signs +, +). Row 1: +, −. Row 2: both tie (0, 0).
    rc = torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.0, 1.0]])
    rr = torch.tensor([[[0.0], [0.0], [0.0]], [[1.0], [1.0], [1.0]]])
    assert member_sign_agreement(rc, rr).tolist() == [True, False, True]


def test_section_scores_weight_by_example_counts_and_skip_absent_sections():
    counts = {"a": 100, "b": 28, "c": 10, "d": 5}
    mapping = {"S1": ["a", "b"], "S2": ["c"], "S3": ["d"]}
    # S1 = (1.0 · 100 + 0.5 · 28) / 128 = 114 / 128; S2 = 0.2; S3 absent.
    sections = section_scores({"a": 1.0, "b": 0.5, "c": 0.2}, counts, mapping)
    assert sections == pytest.approx({"S1": 114 / 128, "S2": 0.2})
    assert section_total(sections) == pytest.approx((114 / 128 + 0.2) / 2)
    with pytest.raises(ValueError, match="at least one section"):
        section_total({})


def test_kendall_tau_hand_computed_and_against_scipy_with_ties():
    # x = (1, 2, 3), y = (1, 3, 2): pairs (1,2) +, (1,3) +, (2,3) −: (2 − 1) / 3.
    assert kendall_tau([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]) == pytest.approx(1 / 3)
    rng = np.random.default_rng(1)
    for _ in range(50):
        x, y = rng.integers(0, 3, 8).astype(float), rng.integers(0, 3, 8).astype(float)
        expected = kendalltau(x, y).statistic  # tau-b
        got = kendall_tau(x, y)
        assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def test_rank_correlation_interval_of_a_monotone_relation_is_one():
    # Every resample of a strictly increasing relation is increasing (or constant: skipped).
    x = np.arange(8.0)
    for method in ("spearman", "kendall"):
        assert rank_correlation_interval(x, x**3, method, n_boot=200) == (1.0, 1.0, 1.0)
        assert rank_correlation_interval(x, -x, method, n_boot=200) == (-1.0, -1.0, -1.0)


def test_rank_correlation_interval_contains_noisy_estimates_and_is_deterministic():
    rng = np.random.default_rng(2)
    x = rng.normal(size=15)
    y = x + rng.normal(size=15)
    est, lo, hi = rank_correlation_interval(x, y, "spearman", n_boot=500, seed=3)
    assert est == pytest.approx(spearmanr(x, y).statistic)
    assert -1 <= lo < est < hi <= 1
    assert rank_correlation_interval(x, y, "spearman", n_boot=500, seed=3) == (est, lo, hi)
    with pytest.raises(ValueError, match="spearman or kendall"):
        rank_correlation_interval(x, y, "pearson")
