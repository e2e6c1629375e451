"""Tests for goodhartlab.core.aggregate."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from goodhartlab.core.aggregate import (
    AGGREGATORS,
    get_aggregator,
    mean,
    mean_minus_std,
    median,
    standardize_members,
    uwo,
    wco,
)

NAN = float("nan")

# Three members, two items. Item 0: 1, 2, 6. Item 1: 4, 4, 4.
R = torch.tensor([[1.0, 4.0], [2.0, 4.0], [6.0, 4.0]], dtype=torch.float64)


def test_hand_computed():
    # Item 0: mean 3; population var ((1-3)^2 + (2-3)^2 + (6-3)^2)/3 = 14/3; std sqrt(14/3).
    # Item 1: mean 4, var 0.
    torch.testing.assert_close(mean(R), torch.tensor([3.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(wco(R), torch.tensor([1.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(median(R), torch.tensor([2.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(uwo(R), torch.tensor([3.0 - 0.5 * 14 / 3, 4.0], dtype=torch.float64))
    torch.testing.assert_close(
        uwo(R, lam=0.1), torch.tensor([3.0 - 0.1 * 14 / 3, 4.0], dtype=torch.float64)
    )
    torch.testing.assert_close(
        mean_minus_std(R, k=2.0),
        torch.tensor([3.0 - 2 * math.sqrt(14 / 3), 4.0], dtype=torch.float64),
    )


def test_median_even_count_averages_middle_values():
    # Members 1, 2, 6, 10: middle values 2 and 6 -> 4 (torch.median would give 2).
    r = torch.tensor([[10.0], [1.0], [6.0], [2.0]])
    assert median(r).item() == 4.0


def test_nan_members_are_ignored():
    # Item 0: members 1, NaN, 6 -> valid {1, 6}: mean 3.5, min 1, median 3.5,
    #   var ((1-3.5)^2 + (6-3.5)^2)/2 = 6.25, std 2.5.
    # Item 1: all NaN -> NaN everywhere.  Item 2: only member 3 is valid (7) -> 7.
    r = torch.tensor([[1.0, NAN, NAN], [NAN, NAN, NAN], [6.0, NAN, 7.0]], dtype=torch.float64)
    expected = {
        "mean": [3.5, NAN, 7.0],
        "wco": [1.0, NAN, 7.0],
        "median": [3.5, NAN, 7.0],
        "uwo": [3.5 - 0.5 * 6.25, NAN, 7.0],
        "mean_minus_std": [3.5 - 2.5, NAN, 7.0],
        # The first member alone has no fallback: where it is NaN, so is the reward.
        "first": [1.0, NAN, NAN],
    }
    for name, fn in AGGREGATORS.items():
        torch.testing.assert_close(
            fn(r), torch.tensor(expected[name], dtype=torch.float64), equal_nan=True
        )


def test_uwo_with_zero_lambda_is_mean():
    gen = torch.Generator().manual_seed(0)
    r = torch.randn(5, 7, generator=gen)
    torch.testing.assert_close(uwo(r, lam=0.0), mean(r))
    torch.testing.assert_close(mean_minus_std(r, k=0.0), mean(r))


def test_against_numpy():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(5, 9))
    r[1, 2] = r[3, 4] = np.nan
    torch.testing.assert_close(median(r), torch.as_tensor(np.nanmedian(r, axis=0)))
    torch.testing.assert_close(wco(r), torch.as_tensor(np.nanmin(r, axis=0)))
    torch.testing.assert_close(
        mean_minus_std(r), torch.as_tensor(np.nanmean(r, axis=0) - np.nanstd(r, axis=0))
    )


@settings(max_examples=50, deadline=None, derandomize=True, database=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=8))
def test_single_member_is_identity(values):
    r = torch.tensor([values], dtype=torch.float64)
    for fn in AGGREGATORS.values():
        torch.testing.assert_close(fn(r), r[0])


@settings(max_examples=50, deadline=None, derandomize=True, database=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=6))
def test_ordering_wco_le_median_and_uwo_le_mean(values):
    r = torch.tensor(values, dtype=torch.float64).unsqueeze(1)
    assert wco(r).item() <= median(r).item() + 1e-9
    assert uwo(r).item() <= mean(r).item() + 1e-9
    assert mean_minus_std(r).item() <= mean(r).item() + 1e-9


def test_get_aggregator_binds_parameters():
    torch.testing.assert_close(get_aggregator("uwo", lam=0.1)(R), uwo(R, lam=0.1))
    torch.testing.assert_close(get_aggregator("mean_minus_std", k=2.0)(R), mean_minus_std(R, k=2.0))
    assert get_aggregator("wco") is wco
    assert set(AGGREGATORS) == {"mean", "wco", "uwo", "median", "mean_minus_std", "first"}


def test_get_aggregator_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="mean_minus_std") as info:
        get_aggregator("max")
    assert "'max'" in str(info.value)


def test_get_aggregator_unknown_parameter():
    with pytest.raises(ValueError, match="lam"):
        get_aggregator("mean", lam=0.5)


@pytest.mark.parametrize("fn", list(AGGREGATORS.values()))
@pytest.mark.parametrize("bad", [torch.zeros(3), torch.zeros(2, 3, 4), torch.zeros(0, 3)])
def test_bad_input_names_the_argument(fn, bad):
    with pytest.raises(ValueError, match="r_members"):
        fn(bad)


# --- standardize_members ----------------------------------------------------------------------


def test_standardize_members_removes_each_members_offset_and_scale():
    base = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    members = torch.cat([base, 10.0 + 3.0 * base])  # same ranking, other offset and scale
    z = standardize_members(members)
    torch.testing.assert_close(z[0], z[1])
    sd = math.sqrt(1.25)  # population std of 0, 1, 2, 3
    torch.testing.assert_close(z[0], (base[0] - 1.5) / sd)


def test_standardize_members_uses_the_reference_items_statistics():
    ref = torch.tensor([[0.0, 2.0], [10.0, 14.0]])  # means 1 and 12, stds 1 and 2
    r = torch.tensor([[3.0], [16.0]])
    torch.testing.assert_close(standardize_members(r, ref), torch.tensor([[2.0], [2.0]]))


def test_standardize_members_makes_wco_offset_invariant():
    # a and b rank the items differently; b's scores are permutations of a's.
    a = torch.tensor([0.0, 1.0, 5.0, 2.0], dtype=torch.float64)
    b = torch.tensor([1.0, 0.0, 2.0, 5.0], dtype=torch.float64)
    raw = wco(torch.stack([a - 100.0, b]))
    torch.testing.assert_close(raw, a - 100.0)  # the low-offset member is the minimum everywhere
    z = wco(standardize_members(torch.stack([a - 100.0, b])))
    torch.testing.assert_close(z, wco(standardize_members(torch.stack([a, b]))))
    torch.testing.assert_close(z[2], z[3])  # item 2 no longer wins on a alone


def test_standardize_members_rejects_a_reference_with_other_members():
    with pytest.raises(ValueError, match="r_ref has 3 members"):
        standardize_members(torch.zeros(2, 4), torch.zeros(3, 4))


def test_first_is_member_zero_whatever_the_others_say():
    # R = R_1: the others (here wildly different) do not move it; one member is the identity.
    r = torch.tensor([[0.5, -1.0, 2.0], [100.0, -100.0, 0.0], [3.0, 3.0, 3.0]])
    assert torch.equal(AGGREGATORS["first"](r), r[0])
    assert torch.equal(AGGREGATORS["first"](r[:1]), r[0])
