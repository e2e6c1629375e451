"""Tests for goodhartlab.core.bon."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from goodhartlab.core.bon import BonCurve, bon_weights, expected_best_of_n


def brute_force_best_of_n(proxy: list[float], gold: list[float], n: int) -> float:
    """Mean over all n-subsets of the gold of the proxy's pick, tied maxima picked uniformly."""
    total, count = 0.0, 0
    for subset in itertools.combinations(range(len(proxy)), n):
        top = max(proxy[j] for j in subset)
        tied = [gold[j] for j in subset if proxy[j] == top]
        total += sum(tied) / len(tied)
        count += 1
    return total / count


# --- tier 1: hand-computed ---------------------------------------------------------------


def test_hand_computed_pool_of_three():
    # Pool (proxy, gold): (1, 10), (3, 30), (2, 0). Sorted by proxy: gold_(1..3) = 10, 0, 30.
    # n = 1: weights C(i-1, 0)/C(3, 1) = 1/3 each -> (10 + 0 + 30)/3 = 40/3.
    # n = 2: weights C(i-1, 1)/C(3, 2) = 0, 1/3, 2/3 -> 0/3 + 60/3 = 20.
    #        (subsets {a,b}->30, {a,c}->0, {b,c}->30: mean 20.)
    # n = 3: weight 1 on i = 3 -> 30.
    # Proxy: n=1 (1+2+3)/3 = 2; n=2 (2 + 2*3)/3 = 8/3; n=3: 3.
    curve = expected_best_of_n([[1.0, 3.0, 2.0]], [[10.0, 30.0, 0.0]], [1, 2, 3])
    torch.testing.assert_close(curve.gold, torch.tensor([40 / 3, 20.0, 30.0], dtype=torch.float64))
    torch.testing.assert_close(curve.proxy, torch.tensor([2.0, 8 / 3, 3.0], dtype=torch.float64))
    assert curve.n.tolist() == [1, 2, 3]


def test_hand_computed_tie():
    # Pool (proxy, gold): (1, 0), (1, 6), (0, 3). n = 2 subsets:
    #   {a, b}: tied max, gold (0 + 6)/2 = 3;  {a, c}: 0;  {b, c}: 6.  Mean (3 + 0 + 6)/3 = 3.
    # Estimator: sorted gold 3 | 0, 6 -> tie block replaced by 3, 3; weights 0, 1/3, 2/3 -> 3.
    curve = expected_best_of_n([[1.0, 1.0, 0.0]], [[0.0, 6.0, 3.0]], 2)
    assert curve.gold.item() == pytest.approx(3.0, abs=1e-12)


def test_weights_hand_computed():
    # N = 4, n = 2: C(i-1, 1)/C(4, 2) for i = 1..4 = 0, 1/6, 2/6, 3/6.
    w = bon_weights(torch.tensor([2]), 4)
    torch.testing.assert_close(w, torch.tensor([[0.0, 1 / 6, 2 / 6, 3 / 6]], dtype=torch.float64))


def test_per_prompt_shapes_and_mean():
    gen = torch.Generator().manual_seed(0)
    proxy, gold = torch.randn(5, 8, generator=gen), torch.randn(5, 8, generator=gen)
    curve = expected_best_of_n(proxy, gold, [1, 2, 8])
    assert isinstance(curve, BonCurve)
    assert curve.gold_per_prompt.shape == (5, 3)
    assert curve.proxy_per_prompt.shape == (5, 3)
    torch.testing.assert_close(curve.gold, curve.gold_per_prompt.mean(dim=0))
    # Each prompt on its own gives the same row as in the batch.
    for p in range(5):
        alone = expected_best_of_n(proxy[p : p + 1], gold[p : p + 1], [1, 2, 8])
        torch.testing.assert_close(alone.gold_per_prompt[0], curve.gold_per_prompt[p])


# --- tier 2: against brute force and Monte Carlo -----------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    pool_size = 7
    # Proxy drawn from few levels so that ties are common; gold continuous.
    proxy = rng.integers(0, 3, size=(3, pool_size)).astype(float)
    gold = rng.normal(size=(3, pool_size))
    ns = list(range(1, pool_size + 1))
    curve = expected_best_of_n(proxy, gold, ns)
    for p in range(3):
        for k, n in enumerate(ns):
            expected = brute_force_best_of_n(list(proxy[p]), list(gold[p]), n)
            assert curve.gold_per_prompt[p, k].item() == pytest.approx(expected, abs=1e-12)
            expected_proxy = brute_force_best_of_n(list(proxy[p]), list(proxy[p]), n)
            assert curve.proxy_per_prompt[p, k].item() == pytest.approx(expected_proxy, abs=1e-12)


def test_matches_brute_force_all_tied():
    # Every proxy value equal: the pick is uniform over the subset, so BoN-n gold = pool mean.
    gold = [[1.0, 2.0, 4.0, 8.0, 16.0]]
    curve = expected_best_of_n([[0.5] * 5], gold, [1, 2, 3, 4, 5])
    torch.testing.assert_close(curve.gold, torch.full((5,), 31 / 5, dtype=torch.float64))


def test_matches_monte_carlo():
    # Large pool; simulate best-of-n by drawing n of the N samples without replacement.
    # The MC mean has standard error s/sqrt(R); require agreement within 4 standard errors.
    rng = np.random.default_rng(1)
    pool_size, n_rep = 400, 20_000
    proxy = rng.normal(size=pool_size)
    gold = proxy + rng.normal(size=pool_size)  # correlated, so BoN gold rises with n
    ns = [1, 4, 32, 200]
    curve = expected_best_of_n(proxy[None, :], gold[None, :], ns)
    order = np.argsort(proxy)
    i = np.arange(1, pool_size + 1)
    for k, n in enumerate(ns):
        picks = np.array([rng.choice(pool_size, size=n, replace=False) for _ in range(n_rep)])
        chosen = picks[np.arange(n_rep), np.argmax(proxy[picks], axis=1)]
        mc = gold[chosen]
        se = mc.std(ddof=1) / math.sqrt(n_rep)
        est = curve.gold[k].item()
        assert abs(est - mc.mean()) < 4 * se, (n, est, mc.mean(), se)
        if n == 200:
            # The test has the power to notice a wrong estimator: the with-replacement
            # weights (i/N)^n - ((i-1)/N)^n, a plausible mistake, land far outside.
            w_repl = (i / pool_size) ** n - ((i - 1) / pool_size) ** n
            wrong = float(w_repl @ gold[order])
            assert abs(wrong - mc.mean()) > 4 * se, (wrong, mc.mean(), se)


def test_large_pool_weights_exact():
    # N = 100,000: rows sum to 1, best-of-1 weights are all 1/N, and best-of-N puts weight 1
    # on the top sample; the n = 2 weights are (i - 1)/C(N, 2), computed here without lgamma.
    pool_size = 100_000
    w = bon_weights(torch.tensor([1, 2, pool_size]), pool_size)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(w[0], torch.full((pool_size,), 1 / pool_size, dtype=torch.float64))
    i = torch.arange(1, pool_size + 1, dtype=torch.float64)
    torch.testing.assert_close(w[1], (i - 1) / (pool_size * (pool_size - 1) / 2), rtol=1e-9, atol=0)
    assert w[2, -1].item() == 1.0 and w[2, :-1].abs().sum().item() == 0.0


# --- tier 3: identities ------------------------------------------------------------------


def test_best_of_one_is_pool_mean():
    gen = torch.Generator().manual_seed(3)
    proxy, gold = torch.randn(4, 50, generator=gen), torch.randn(4, 50, generator=gen)
    curve = expected_best_of_n(proxy, gold, 1)
    torch.testing.assert_close(curve.gold_per_prompt[:, 0], gold.double().mean(dim=1))
    torch.testing.assert_close(curve.proxy_per_prompt[:, 0], proxy.double().mean(dim=1))


def test_best_of_pool_is_gold_of_proxy_argmax():
    gen = torch.Generator().manual_seed(4)
    proxy, gold = torch.randn(4, 50, generator=gen), torch.randn(4, 50, generator=gen)
    curve = expected_best_of_n(proxy, gold, 50)
    expected = gold.double().gather(1, proxy.argmax(dim=1, keepdim=True)).squeeze(1)
    torch.testing.assert_close(curve.gold_per_prompt[:, 0], expected)
    torch.testing.assert_close(curve.proxy_per_prompt[:, 0], proxy.double().amax(dim=1))


def test_ensemble_defect_regression():
    # The reference code re-sorted an ensemble's proxy but not its gold. Here: permuting the
    # pool jointly must leave the estimate unchanged; permuting gold alone must change it.
    gen = torch.Generator().manual_seed(5)
    proxy = torch.randn(3, 20, generator=gen, dtype=torch.float64)
    gold = proxy + 0.5 * torch.randn(3, 20, generator=gen, dtype=torch.float64)
    ns = [1, 2, 5, 20]
    base = expected_best_of_n(proxy, gold, ns)
    perm = torch.randperm(20, generator=gen)
    joint = expected_best_of_n(proxy[:, perm], gold[:, perm], ns)
    torch.testing.assert_close(joint.gold_per_prompt, base.gold_per_prompt)
    gold_only = expected_best_of_n(proxy, gold[:, perm], ns)
    # Best-of-1 is the pool mean either way; larger n must see the broken pairing.
    assert (gold_only.gold[1:] - base.gold[1:]).abs().min().item() > 1e-3


# --- properties --------------------------------------------------------------------------

pools = st.integers(min_value=1, max_value=12).flatmap(
    lambda size: st.tuples(
        st.lists(
            st.floats(-10, 10, allow_nan=False).map(lambda x: round(x, 1)),  # rounding: ties
            min_size=size,
            max_size=size,
        ),
        st.lists(st.floats(-10, 10, allow_nan=False), min_size=size, max_size=size),
        st.permutations(list(range(size))),
    )
)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(pools)
def test_proxy_curve_non_decreasing_in_n(pool):
    proxy, gold, _ = pool
    size = len(proxy)
    curve = expected_best_of_n([proxy], [gold], list(range(1, size + 1)))
    assert bool((curve.proxy.diff() >= -1e-9).all()), curve.proxy


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(pools)
def test_invariant_to_joint_permutation(pool):
    proxy, gold, perm = pool
    size = len(proxy)
    ns = list(range(1, size + 1))
    base = expected_best_of_n([proxy], [gold], ns)
    permuted = expected_best_of_n([[proxy[j] for j in perm]], [[gold[j] for j in perm]], ns)
    torch.testing.assert_close(permuted.gold, base.gold, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(permuted.proxy, base.proxy, rtol=1e-12, atol=1e-9)


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proxy", "gold", "ns", "names"),
    [
        ([1.0, 2.0], [[1.0, 2.0]], 1, "r_proxy"),  # not rank 2
        ([[1.0, 2.0]], [1.0, 2.0], 1, "r_gold"),  # not rank 2
        ([[1.0, 2.0]], [[1.0, 2.0, 3.0]], 1, "r_gold"),  # shapes differ
        (torch.zeros(0, 3), torch.zeros(0, 3), 1, "r_proxy"),  # empty
        ([[1.0, float("nan")]], [[1.0, 2.0]], 1, "r_proxy"),
        ([[1.0, 2.0]], [[float("nan"), 2.0]], 1, "r_gold"),
        ([[1.0, 2.0]], [[float("inf"), 2.0]], 1, "r_gold"),
        ([[1.0, 2.0]], [[1.0, 2.0]], 3, "ns"),  # n > N
        ([[1.0, 2.0]], [[1.0, 2.0]], 0, "ns"),  # n < 1
        ([[1.0, 2.0]], [[1.0, 2.0]], [], "ns"),  # empty
        ([[1.0, 2.0]], [[1.0, 2.0]], [1.5], "ns"),  # not an integer
    ],
)
def test_bad_input_names_the_argument(proxy, gold, ns, names):
    with pytest.raises(ValueError, match=names):
        expected_best_of_n(proxy, gold, ns)
