"""Tests for goodhartlab.rewards.steps: sentences as the steps of a completion."""

import doctest

import pytest

from goodhartlab.rewards import steps
from goodhartlab.rewards.steps import sentence_ends, step_prefixes


@pytest.mark.parametrize(
    ("text", "prefixes"),
    [
        (" a b . c d .", [" a b .", " a b . c d ."]),
        (" a b . c d", [" a b .", " a b . c d"]),  # an unterminated fragment is one more step
        (" a b . ", [" a b . "]),  # trailing whitespace belongs to the last step
        ("Hi there! Is it? Yes.", ["Hi there!", "Hi there! Is it?", "Hi there! Is it? Yes."]),
        ("3.5 is a number .", ["3.5 is a number ."]),  # a '.' inside a token ends nothing
        ("", [""]),
        ("  ", ["  "]),
    ],
)
def test_step_prefixes(text, prefixes):
    assert step_prefixes(text) == prefixes
    assert sentence_ends(text)[-1] == len(text)  # the last prefix is the completion


def test_doctests():
    assert doctest.testmod(steps).failed == 0
