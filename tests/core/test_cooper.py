"""Cooper's pair selection (core.cooper) against hand-computed cases, and toy_text's rule."""

from __future__ import annotations

import math

import pytest
import torch

from goodhartlab.core.cooper import negative_index, reference_index
from goodhartlab.core.losses import bradley_terry_loss
from goodhartlab.testbeds.toy_text.checks import toy_text_surface_check


def test_reference_is_the_best_passing_sample_and_none_when_none_passes():
    scores = torch.tensor([3.0, 1.0, 2.0, 0.5])
    # The best sample (3.0) fails the check: the best of those that pass is index 2.
    assert reference_index(scores, torch.tensor([False, True, True, False])) == 2
    assert reference_index(scores, torch.tensor([False, False, False, False])) == -1


def test_negative_is_the_top_rejected_sample_with_the_fallback_for_clean_groups():
    scores = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.8], [0.4, 0.6, 0.0]])
    rejected = torch.tensor([[True, False, True], [False, False, False], [False, True, False]])
    # Row 0: rejected {0, 2}, top of them 2 (0.5), not the unrejected 1 (0.9).
    # Row 1: none rejected: top = 2 (0.8), or no pair.  Row 2: only 1 rejected.
    assert negative_index(scores, rejected, "top").tolist() == [2, 2, 1]
    assert negative_index(scores, rejected, "none").tolist() == [2, -1, 1]


def test_the_pair_loss_is_minus_log_sigmoid_of_the_margin():
    # Pairs with margins 1 and −2: L = (log(1 + e^−1) + log(1 + e^2)) / 2.
    loss, _ = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 2.0]))
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(2.0))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_toy_text_surface_check_rejects_the_degenerate_and_passes_a_plain_review():
    from goodhartlab.testbeds.toy_text.language import all_prompts

    prompt = next(p.text for p in all_prompts() if p.product == "phone" and not p.constraint)
    assert toy_text_surface_check(prompt, "the screen is great . the price is fine .")
    for bad in (
        "",
        "the screen is great",  # unterminated
        "the screen is great . the screen is great .",  # a repeated sentence
        "the screen is very very great .",  # stacked intensifiers
        "the screen is great . great screen . bright screen .",  # a noun 3 times
        "the price is fine . nice design . good quality . fast delivery . kind support .",  # 5
    ):
        assert not toy_text_surface_check(prompt, bad), bad


def test_the_check_does_not_import_the_gold():
    import ast
    import inspect

    import goodhartlab.rewards.cooper as cooper
    import goodhartlab.testbeds.toy_text.checks as checks

    for module in (checks, cooper):
        tree = ast.parse(inspect.getsource(module))
        names = [
            n.module if isinstance(n, ast.ImportFrom) else a.name
            for n in ast.walk(tree)
            if isinstance(n, ast.Import | ast.ImportFrom)
            for a in (n.names if isinstance(n, ast.Import) else [n])
        ]
        assert not any(x and "gold" in x for x in names), (module.__name__, names)
