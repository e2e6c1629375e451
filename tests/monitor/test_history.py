"""monitor.history: what a point holds, and bad input named by step and field."""

from __future__ import annotations

import math

import numpy as np
import pytest

from goodhartlab.monitor import EvalPoint, RunHistory


def test_point_converts_and_keeps_what_it_is_given():
    p = EvalPoint(step=3, kl=0.5, r_proxy=[1, 2], completions=["a b", ""])
    assert p.r_proxy.dtype == np.float64 and p.completions == ("a b", "")
    assert p.batch_size == 2 and p.r_members is None


def test_there_is_no_gold_field():
    with pytest.raises(TypeError):
        EvalPoint(step=0, gold=[1.0])  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"r_proxy": [1.0, float("nan")]}, r"step 7: r_proxy: 1 of 2 values are NaN"),
        ({"r_members": [[1.0, 2.0], [1.0, np.inf]]}, r"step 7: r_members: 1 of 4"),
        ({"r_members": [[1.0, 2.0]]}, r"step 7: r_members: expected M >= 2"),
        (
            {"r_proxy": [1.0, 2.0], "completions": ["a"]},
            r"step 7: completions: has 1 completions, r_proxy has 2",
        ),
        ({"completions": []}, r"step 7: completions: is empty"),
        ({"completions": ["a", None]}, r"step 7: completions\[1\]: expected a string"),
        ({"logp": [[-1.0, 0.5]]}, r"step 7: logp\[0\]: log-probabilities must be <= 0"),
        ({"logp": [[-1.0, float("nan")]]}, r"step 7: logp\[0\]: holds NaN"),
        ({"logp": [[-1.0]], "completion_ids": [[4, 5]]}, r"step 7: .*\[0\]: token counts differ"),
        ({"kl": float("nan")}, r"step 7: kl: expected a finite number"),
        ({"r_groups": [[1.0], [2.0]]}, r"step 7: r_groups: expected N >= 2"),
        ({"latents": [1.0, 2.0]}, r"step 7: latents: expected 2 dimension"),
    ],
)
def test_bad_input_names_the_step_and_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EvalPoint(step=7, **kwargs)


def test_history_checks_order_and_dimensions():
    with pytest.raises(ValueError, match="at least one evaluation point"):
        RunHistory([])
    with pytest.raises(ValueError, match=r"points\[1\] has step 0 after step 5"):
        RunHistory([EvalPoint(step=5), EvalPoint(step=0)])
    with pytest.raises(
        ValueError, match=r"step 1: r_members: has 3 members, the point at step 0 has 2"
    ):
        RunHistory(
            [
                EvalPoint(step=0, r_members=np.zeros((2, 4))),
                EvalPoint(step=1, r_members=np.zeros((3, 4))),
            ]
        )
    with pytest.raises(ValueError, match=r"step 1: latents: has 2 latent dimensions"):
        RunHistory(
            [
                EvalPoint(step=0, latents=np.zeros((2, 3))),
                EvalPoint(step=1, latents=np.zeros((2, 2))),
            ]
        )


def test_append_checks_the_new_point_as_the_constructor_does():
    # Members first given at step 1 (none at step 0): the reference for later points.
    points = [EvalPoint(step=0), EvalPoint(step=1, r_members=np.zeros((2, 4)))]
    h = RunHistory(points[:1]).append(points[1])
    assert h.points == RunHistory(points).points and len(h) == 2
    with pytest.raises(ValueError, match=r"points\[2\] has step 1 after step 1"):
        h.append(EvalPoint(step=1))
    with pytest.raises(
        ValueError, match=r"step 2: r_members: has 3 members, the point at step 1 has 2"
    ):
        h.append(EvalPoint(step=2, r_members=np.zeros((3, 4))))
    with pytest.raises(ValueError, match=r"points\[2\]: expected an EvalPoint"):
        h.append({"step": 2})
    assert len(h) == 2  # a refused point leaves the history as it was


def test_kl_falls_back_to_the_k1_estimate_from_log_probs():
    # Sample 0: Σ (−1 − (−2)) over 2 tokens = 2; sample 1: (−0.5 − (−0.5)) = 0 -> mean 1.
    p = EvalPoint(step=1, logp=[[-1.0, -1.0], [-0.5]], logp_ref=[[-2.0, -2.0], [-0.5]])
    assert p.kl_estimate() == pytest.approx(1.0)
    assert EvalPoint(step=1, kl=0.25, logp=[[-1.0]], logp_ref=[[-3.0]]).kl_estimate() == 0.25
    assert math.isnan(EvalPoint(step=1).kl_estimate())
    h = RunHistory([EvalPoint(step=0, kl=0.0), EvalPoint(step=2)])
    np.testing.assert_array_equal(h.kl(), [0.0, np.nan])
    assert h.prefix(1).steps.tolist() == [0] and h.fields_present() == {"kl"}
