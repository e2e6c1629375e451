"""Tests for goodhartlab.core.shaping."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from goodhartlab.core.shaping import (
    RunningMoments,
    base_quantile,
    ceil,
    centered,
    clip_to_band,
    log_sigmoid_centered,
    meanstd,
    minmax,
    par,
)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_par_hand_computed():
    # r = 1, refs 0 and 2: (σ(1) + σ(-1))/2 = 1/2 (σ(x) + σ(-x) = 1).
    # r = 0, ref 0 (M = 1 via a one-column r_ref on the second call): σ(0) = 1/2.
    # r = 3, refs 1, 2: (σ(2) + σ(1))/2.
    out = par(
        torch.tensor([1.0, 3.0], dtype=torch.float64),
        torch.tensor([[0.0, 2.0], [1.0, 2.0]], dtype=torch.float64),
    )
    torch.testing.assert_close(
        out, torch.tensor([0.5, (sigmoid(2) + sigmoid(1)) / 2], dtype=torch.float64)
    )
    assert par(torch.tensor([0.0]), torch.tensor([[0.0]])).item() == 0.5


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    st.lists(st.floats(-15, 15, allow_nan=False), min_size=1, max_size=10),
    st.floats(-15, 15, allow_nan=False),
    st.floats(0.01, 5),
)
def test_par_bounded_and_increasing(refs, r, step):
    r_ref = torch.tensor([refs, refs], dtype=torch.float64)
    out = par(torch.tensor([r, r + step], dtype=torch.float64), r_ref)
    assert bool(((out > 0) & (out < 1)).all()), out
    assert out[1].item() > out[0].item()


def test_par_depends_only_on_centered_reward():
    # Shifting r and every reference by the same constant leaves PAR unchanged.
    r = torch.tensor([0.3, -1.2], dtype=torch.float64)
    r_ref = torch.tensor([[0.0, 1.0, 2.0], [-1.0, 0.5, 0.7]], dtype=torch.float64)
    torch.testing.assert_close(par(r + 5.0, r_ref + 5.0), par(r, r_ref))


def test_centered_hand_computed():
    # 3 - mean(1, 2) = 1.5; 0 - mean(-1, 5) = -2.
    out = centered(torch.tensor([3.0, 0.0]), torch.tensor([[1.0, 2.0], [-1.0, 5.0]]))
    torch.testing.assert_close(out, torch.tensor([1.5, -2.0]))


def test_log_sigmoid_centered_hand_computed():
    # Refs 0, 2: normal fit μ = 1, σ = 1 (population). z_0.85 = 1.0364334 -> q = 2.0364334.
    # r = 2.0364334 -> log σ(0) = -log 2. quantile 0.5 -> q = μ = 1, r = 1 -> -log 2 too.
    z = 1.0364333894937898
    r_ref = torch.tensor([[0.0, 2.0]], dtype=torch.float64)
    out = log_sigmoid_centered(torch.tensor([1.0 + z], dtype=torch.float64), r_ref)
    assert out.item() == pytest.approx(-math.log(2), abs=1e-12)
    out = log_sigmoid_centered(torch.tensor([1.0], dtype=torch.float64), r_ref, quantile=0.5)
    assert out.item() == pytest.approx(-math.log(2), abs=1e-12)
    # Large r: log σ(x) ≈ -e^{-x} -> 0 from below, without overflow.
    assert (
        -1e-30
        < log_sigmoid_centered(torch.tensor([100.0], dtype=torch.float64), r_ref).item()
        <= 0.0
    )


def test_ceil_clip_minmax_hand_computed():
    r = torch.tensor([-2.0, 0.5, 3.0])
    torch.testing.assert_close(ceil(r, 1.0), torch.tensor([-2.0, 0.5, 1.0]))
    # Band [0 - 1, 0 + 1] = [-1, 1].
    torch.testing.assert_close(clip_to_band(r, 0.0, 1.0), torch.tensor([-1.0, 0.5, 1.0]))
    # (r - (-2)) / (3 - (-2)) = 0, 0.5, 1.
    torch.testing.assert_close(minmax(r, -2.0, 3.0), torch.tensor([0.0, 0.5, 1.0]))
    # Per-item parameters.
    torch.testing.assert_close(
        ceil(r, torch.tensor([-3.0, 0.0, 5.0])), torch.tensor([-3.0, 0.0, 3.0])
    )


def test_base_quantile_hand_computed():
    r_base = torch.tensor([4.0, 0.0, 2.0, 1.0, 3.0])  # sorted 0, 1, 2, 3, 4
    assert base_quantile(r_base, 0.5).item() == 2.0
    # q = 0.9: position 0.9 * (5 - 1) = 3.6 -> 3 + 0.6 * (4 - 3).
    assert base_quantile(r_base, 0.9).item() == pytest.approx(3.6)
    assert base_quantile(r_base, 1.0).item() == 4.0
    with pytest.raises(ValueError, match="r_base"):
        base_quantile(torch.zeros(0), 0.5)
    with pytest.raises(ValueError, match="q"):
        base_quantile(r_base, 0.0)


def test_ceil_above_every_reward_is_identity():
    r = torch.tensor([-2.0, 0.5, 3.0])
    torch.testing.assert_close(ceil(r, 10.0), r)
    torch.testing.assert_close(clip_to_band(r, 0.0, 10.0), r)


def test_running_moments_match_batch_statistics():
    rng = np.random.default_rng(0)
    batches = [rng.normal(2.0, 3.0, size=size) for size in (1, 5, 17, 3)]
    state = RunningMoments()
    for b in batches:
        state = state.update(b)
    everything = np.concatenate(batches)
    assert state.count == everything.size
    assert state.mean == pytest.approx(everything.mean(), rel=1e-12)
    assert state.var == pytest.approx(everything.var(), rel=1e-12)
    assert state.min == everything.min() and state.max == everything.max()


def test_running_moments_is_immutable():
    state = RunningMoments()
    new = state.update(torch.tensor([1.0, 3.0]))
    assert state.count == 0 and new.count == 2
    # Mean 2, M2 = 1 + 1 = 2, var 2/2 = 1.
    assert (new.mean, new.m2, new.var, new.std) == (2.0, 2.0, 1.0, 1.0)


def test_meanstd_hand_computed():
    # After seeing 1, 3: μ = 2, σ = 1 -> (r - 2)/1.
    state = RunningMoments().update(torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(
        meanstd(torch.tensor([1.0, 3.0, 5.0]), state), torch.tensor([-1.0, 1.0, 3.0])
    )
    # One reward seen: σ = 0 -> divide by 1.
    one = RunningMoments().update(torch.tensor([4.0]))
    torch.testing.assert_close(meanstd(torch.tensor([5.0]), one), torch.tensor([1.0]))


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: par(torch.zeros(2, 1), torch.zeros(2, 3)), "r "),
        (lambda: par(torch.zeros(2), torch.zeros(2)), "r_ref"),
        (lambda: par(torch.zeros(2), torch.zeros(3, 4)), "r_ref"),
        (lambda: par(torch.zeros(2), torch.zeros(2, 0)), "r_ref"),
        (lambda: centered(torch.zeros(2), torch.zeros(3, 1)), "r_ref"),
        (lambda: log_sigmoid_centered(torch.zeros(2), torch.zeros(2, 3), quantile=1.0), "quantile"),
        (lambda: ceil(torch.zeros(2), torch.zeros(3)), "c"),
        (lambda: clip_to_band(torch.zeros(2), 0.0, -1.0), "sigma"),
        (lambda: clip_to_band(torch.zeros(2), torch.zeros(3), 1.0), "mu"),
        (lambda: minmax(torch.zeros(2), 1.0, 1.0), "hi"),
        (lambda: minmax(torch.zeros(2), torch.zeros(2, 2), 1.0), "lo"),
        (lambda: meanstd(torch.zeros(2), RunningMoments()), "state"),
        (lambda: meanstd(torch.zeros(2, 2), RunningMoments(count=1)), "r "),
        (lambda: RunningMoments().update(torch.tensor([float("nan")])), "r "),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_running_center_hand_computed():
    from goodhartlab.core.shaping import running_center

    # Seen 1, 2, 3, then the batch 6: the mean of all four is 3, so 6 − 3 = 3.
    state = RunningMoments().update(torch.tensor([1.0, 2.0, 3.0])).update(torch.tensor([6.0]))
    torch.testing.assert_close(running_center(torch.tensor([6.0]), state), torch.tensor([3.0]))
    with pytest.raises(ValueError, match="count = 0"):
        running_center(torch.tensor([1.0]), RunningMoments())


def test_step_shapings_are_registered_with_their_step_rewards():
    from goodhartlab.core.shaping import SHAPINGS, ShapingContext
    from goodhartlab.core.step_rewards import clip_step_rewards, delta_step_rewards

    r_steps, mask = torch.tensor([[1.0, 3.0, 2.0]]), torch.ones(1, 3, dtype=torch.bool)
    context = ShapingContext(r_steps=r_steps, step_mask=mask)
    # The registered shaping is the return of its step rewards: Σ min(r − 2, 0) = −1;
    # Delta: (1 − 3) + (3 − 2) + 2 = 1 = r_1.
    assert SHAPINGS["step_clip"](r_steps[:, -1], context, eta=2.0).item() == -1.0
    assert SHAPINGS["step_delta"](r_steps[:, -1], context).item() == 1.0
    assert SHAPINGS.entry("step_clip").meta["step_rewards"] is clip_step_rewards
    assert SHAPINGS.entry("step_delta").meta["step_rewards"] is delta_step_rewards
    assert SHAPINGS.entry("step_delta").meta["needs"] == "steps"
