"""Tests for goodhartlab.core.stats."""

import numpy as np
import pytest
import torch

from goodhartlab.core.stats import bootstrap_ci, t_interval


def test_constant_column_has_zero_width():
    # Every resample of a constant column has mean 3, so low = high = 3.
    x = torch.full((10, 1), 3.0)
    low, high = bootstrap_ci(x)
    assert low.item() == pytest.approx(3.0) and high.item() == pytest.approx(3.0)


def test_two_values_hand_computed_bounds():
    # Rows 0 and 1 with P = 2: a resample mean is 0, 0.5 or 1 with probs 1/4, 1/2, 1/4,
    # so with alpha = 0.5 the 25% and 75% quantiles lie in [0, 0.5] and [0.5, 1].
    low, high = bootstrap_ci(torch.tensor([[0.0], [1.0]]), n_boot=4000, alpha=0.5)
    assert 0.0 <= low.item() <= 0.5 <= high.item() <= 1.0


def test_matches_normal_theory_and_is_deterministic():
    # Mean of P = 400 standard normals: the 95% interval half-width ≈ 1.96/sqrt(400) = 0.098.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    low, high = bootstrap_ci(x, n_boot=2000, seed=1)
    half = (high - low) / 2
    torch.testing.assert_close(half, torch.as_tensor(1.96 * x.std(axis=0) / 20), rtol=0.1, atol=0)
    assert bool(((low < torch.as_tensor(x.mean(0))) & (torch.as_tensor(x.mean(0)) < high)).all())
    low2, high2 = bootstrap_ci(x, n_boot=2000, seed=1)
    assert torch.equal(low, low2) and torch.equal(high, high2)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"per_prompt": torch.zeros(5)}, "per_prompt"),
        ({"per_prompt": torch.zeros(1, 3)}, "per_prompt"),
        ({"per_prompt": torch.tensor([[0.0], [float("nan")]])}, "per_prompt"),
        ({"per_prompt": torch.zeros(5, 2), "n_boot": 0}, "n_boot"),
        ({"per_prompt": torch.zeros(5, 2), "alpha": 1.0}, "alpha"),
    ],
)
def test_bad_input_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        bootstrap_ci(**kwargs)


def test_t_interval_hand_computed():
    # 1, 2, 3: mean 2, s = 1, t_{0.975, 2} = 4.302653: 2 ± 4.302653 / sqrt(3) = 2 ± 2.484138.
    lo, hi = t_interval(np.array([1.0, 2.0, 3.0]))
    assert lo == pytest.approx(2 - 2.484138, abs=1e-5)
    assert hi == pytest.approx(2 + 2.484138, abs=1e-5)
    # NaN runs are dropped; one value left has no interval.
    assert t_interval(np.array([1.0, 2.0, 3.0, np.nan])) == (lo, hi)
    assert all(np.isnan(t_interval(np.array([1.0, np.nan]))))
