"""core.reform.reform_selection on a hand-computed case."""

from __future__ import annotations

import pytest
import torch

from goodhartlab.core.reform import reform_selection
from goodhartlab.registry import RM_OBJECTIVES


def test_selection_picks_the_most_over_scored_prompt_and_its_median_sample():
    # K = 4: the normal sample is the rank-2 one ((K - 1) // 2 = 1 in descending order).
    # row 0: sorted 3 (k=1), 2 (k=3), ...: adversarial 1, normal 3, score 3 - 2 = 1
    # row 1: sorted 5 (k=0), 5 (k=1) (stable): adversarial 0, normal 1, score 0
    # row 2: all equal: adversarial 0, normal 1, score 0 (ties: lower prompt first)
    proxy = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 5.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    keep, adv, normal = reform_selection(proxy, 2)
    assert keep.tolist() == [0, 1]
    assert adv.tolist() == [1, 0]
    assert normal.tolist() == [3, 1]
    keep, adv, normal = reform_selection(proxy, 3)
    assert keep.tolist() == [0, 1, 2]


def test_selection_rejects_bad_shapes():
    with pytest.raises(ValueError, match="K >= 2"):
        reform_selection(torch.zeros(3, 1), 1)
    with pytest.raises(ValueError, match="reform_pairs"):
        reform_selection(torch.zeros(3, 2), 4)


def test_reform_is_registered_with_bradley_terry_loss():
    entry = RM_OBJECTIVES.entry("reform")
    assert entry.meta["adversarial_search"]
    rc, rr = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    loss, _ = entry.obj(rc, rr, reform_rounds=1, reform_pairs=1, reform_prompts=1, reform_samples=2)
    expected = (torch.nn.functional.softplus(-torch.tensor(1.0)) + torch.log(torch.tensor(2.0))) / 2
    assert loss.item() == pytest.approx(expected.item())
