"""core.judge.expected_rating: the judge's expected rating over its rating tokens."""

from __future__ import annotations

import math

import pytest
import torch

from goodhartlab.core.judge import expected_rating


def test_expected_rating_by_hand():
    # Rating tokens 2, 0, 3 (ratings 1, 2, 3) with logits 0, log 2, log 3 over a vocabulary
    # of 5: probabilities 1/6, 2/6, 3/6, so E = (1 + 4 + 9) / 6 = 7/3; token 1 and 4's
    # logits (large) are renormalized away.
    z = torch.tensor([[math.log(2.0), 9.0, 0.0, math.log(3.0), 7.0]])
    got = expected_rating(z, torch.tensor([2, 0, 3]), torch.tensor([1.0, 2.0, 3.0]))
    assert got.dtype == torch.float32 and got.shape == (1,)
    assert got.item() == pytest.approx(7 / 3, abs=1e-6)


def test_yes_no_is_a_sigmoid_and_batch_dims_are_kept():
    z = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(0))
    got = expected_rating(z, torch.tensor([4, 1]), torch.tensor([1.0, 0.0]))
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, torch.sigmoid(z[..., 4] - z[..., 1]))


def test_equal_logits_give_the_mean_rating():
    got = expected_rating(torch.zeros(4, 10), torch.arange(1, 10), torch.arange(1.0, 10.0))
    torch.testing.assert_close(got, torch.full((4,), 5.0))


@pytest.mark.parametrize(
    ("ids", "ratings", "match"),
    [
        (torch.tensor([1]), torch.tensor([1.0]), ">= 2 ids"),
        (torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]), "integer"),
        (torch.tensor([1, 2]), torch.tensor([1.0, 2.0, 3.0]), "one per rating token"),
        (torch.tensor([1, 5]), torch.tensor([1.0, 2.0]), r"ids in \[0, 5\)"),
        (torch.tensor([1, 1]), torch.tensor([1.0, 2.0]), "distinct"),
    ],
)
def test_bad_rating_tokens_raise(ids, ratings, match):
    with pytest.raises(ValueError, match=match):
        expected_rating(torch.zeros(2, 5), ids, ratings)


def test_non_finite_rating_logits_raise():
    z = torch.tensor([[0.0, float("nan"), 0.0]])
    with pytest.raises(ValueError, match="finite"):
        expected_rating(z, torch.tensor([0, 1]), torch.tensor([1.0, 2.0]))
