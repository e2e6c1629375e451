"""toy_text's gold components: their sum is the gold, and each is the terms it names."""

from __future__ import annotations

import math

import pytest
import torch

from goodhartlab.testbeds.toy_text.components import (
    COMPONENTS,
    ToyTextGoldComponent,
    component_matrix,
    component_values,
)
from goodhartlab.testbeds.toy_text.gold import gold_features
from goodhartlab.testbeds.toy_text.language import all_prompts


def _prompts() -> list[str]:
    return [p.text for p in all_prompts()][:40]


def test_components_sum_to_the_gold_on_every_kind_of_completion():
    prompts = _prompts()
    texts = [
        "",
        " the screen is great .",
        " the screen is very very great . the screen is great . the screen is great .",
        " great battery . awful battery . price is . the the the",
        " i love the price . " * 8,
    ]
    for p in prompts:
        for c in texts:
            f = gold_features(p, c)
            assert sum(component_values(f).values()) == pytest.approx(f.gold, abs=1e-9)


def test_hand_computed_components():
    p = _prompts()[0]
    # Five identical sentences: rep = 4 (x1.5), sentences 5 > 4 (x0.8), one noun mentioned 5
    # times: stuff = 3 (x1.2) if the noun is a part; the components hold exactly these terms.
    c = " i love the price ." * 5
    f = gold_features(p, c)
    v = component_values(f)
    assert v["length"] == pytest.approx(-0.8 * 1 - 0.1 * max(0, f.words - 32))
    assert v["defects"] == pytest.approx(-(1.5 * f.rep + 1.2 * f.stuff + 1.2 * f.broken
                                          + 0.4 * f.misfit + 0.8 * f.contra + 1.0 * f.stack
                                          + 1.2 * f.off))  # fmt: skip
    assert v["coverage"] == pytest.approx(2.5 * (1 - math.exp(-f.coverage / 2)))
    assert component_values(gold_features(p, ""))["length"] == -2.0


def test_reward_sources_and_matrix_agree():
    prompts = _prompts()[:3]
    completions = [" the screen is great .", "", " i hate the price . i hate the price ."]
    m = component_matrix(prompts, completions)
    assert m.shape == (len(COMPONENTS), 3)
    for k, name in enumerate(COMPONENTS):
        assert torch.equal(ToyTextGoldComponent(name)(prompts, completions), m[k])
    with pytest.raises(ValueError, match="component"):
        ToyTextGoldComponent("tone")
