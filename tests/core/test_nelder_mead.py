"""The ask/tell Nelder-Mead driver: the closed loop's points, its minimum, and a replayed resume."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from goodhartlab.core.nelder_mead import NelderMeadAskTell, initial_simplex

# A convex quadratic in 3 dimensions, minimum 0.5 at x* (off the simplex's axes).
X_STAR = np.array([1.0, -2.0, 0.5])
A = np.diag([1.0, 3.0, 0.5]) + 0.2


def quadratic(x: np.ndarray) -> float:
    d = np.asarray(x) - X_STAR
    return float(d @ A @ d) + 0.5


def closed_loop(simplex, **options):
    """scipy's own loop, recording every point it evaluates."""
    points = []

    def f(x):
        points.append(np.array(x))
        return quadratic(x)

    res = minimize(f, simplex[0], method="Nelder-Mead",
                   options={"initial_simplex": simplex, **options})  # fmt: skip
    return points, res


def drive(search: NelderMeadAskTell, n: int) -> list[np.ndarray]:
    points = []
    for _ in range(n):
        x = search.ask()
        if search.done:
            break
        points.append(x)
        search.tell(quadratic(x))
    return points


def test_initial_simplex_is_x0_and_one_step_along_each_axis():
    s = initial_simplex(np.array([1.0, 2.0]), 0.5)
    np.testing.assert_array_equal(s, [[1.0, 2.0], [1.5, 2.0], [1.0, 2.5]])


@pytest.mark.parametrize("adaptive", [False, True])
def test_ask_tell_asks_the_closed_loops_points_and_ends_at_its_minimum(adaptive):
    simplex = initial_simplex(np.zeros(3), 1.0)
    points, res = closed_loop(simplex, maxfev=300, adaptive=adaptive)
    search = NelderMeadAskTell(simplex, maxfev=300, adaptive=adaptive)
    asked = drive(search, 1000)
    assert len(asked) == len(points) == res.nfev
    np.testing.assert_array_equal(np.array(asked), np.array(points))
    assert search.done
    np.testing.assert_array_equal(search.ask(), res.x)  # done: the best point, for good
    np.testing.assert_allclose(search.ask(), X_STAR, atol=1e-3)
    search.tell(123.0)  # ignored once done
    assert len(search.history) == res.nfev


def test_ask_is_the_same_point_until_told():
    search = NelderMeadAskTell(initial_simplex(np.zeros(2), 1.0))
    np.testing.assert_array_equal(search.ask(), search.ask())
    np.testing.assert_array_equal(search.ask(), [0.0, 0.0])  # the first vertex first
    search.tell(1.0)
    np.testing.assert_array_equal(search.ask(), [1.0, 0.0])
    search.close()


def test_a_replayed_search_continues_as_the_uninterrupted_one():
    simplex = initial_simplex(np.array([0.5, 0.5, 0.5]), 0.25)
    straight = drive(NelderMeadAskTell(simplex), 40)
    first = NelderMeadAskTell(simplex)
    drive(first, 17)
    resumed = NelderMeadAskTell(simplex)
    resumed.load_state_dict(first.state_dict())
    first.close()
    rest = drive(resumed, 40 - 17)
    np.testing.assert_array_equal(np.array(rest), np.array(straight[17:]))


def test_replaying_into_a_different_simplex_is_refused():
    first = NelderMeadAskTell(initial_simplex(np.zeros(3), 1.0))
    drive(first, 5)
    other = NelderMeadAskTell(initial_simplex(np.zeros(3), 2.0))
    with pytest.raises(ValueError, match="simplex or options differ"):
        other.load_state_dict(first.state_dict())


def test_a_non_finite_value_is_refused():
    search = NelderMeadAskTell(initial_simplex(np.zeros(2), 1.0))
    with pytest.raises(ValueError, match="finite"):
        search.tell(float("nan"))
