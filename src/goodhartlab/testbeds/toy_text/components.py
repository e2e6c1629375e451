"""toy_text's gold as a sum of five components, for component reward models (constrained RLHF).

Moskovitz et al. 2023 ("Confronting Reward Model Overoptimization with Constrained RLHF",
arXiv 2310.04373) optimize a composite of component reward models. toy_text's gold
(``gold.gold_from_features``) is already a sum of terms; ``COMPONENTS_VERSION`` groups them
into five components whose sum is the gold exactly, in the gold's own units (so the gold's
weights on the components are all 1):

    coverage   = 2.5 (1 - exp(-U / 2))
    sentiment  = 2.0 tanh(S / 2) - 0.5 max(0, |S| - 2)^2          (the gushing penalty too)
    constraint = constraint(c)                                     (as parsed)
    defects    = -(0.4 misfit + 0.8 contra + 1.5 rep + 1.2 stuff + 1.0 stack + 1.2 off
                   + 1.2 broken)
    length     = -(0.8 max(0, sentences - 4) + 0.1 max(0, words - 32))
                 and -2 for an empty completion (the gold's whole value there)

``coverage + sentiment + constraint + defects + length == gold`` for every completion
(tests/testbeds/test_toy_text_components.py). Bump ``COMPONENTS_VERSION`` on any change of
the grouping (and with ``GOLD_VERSION``: it is part of the version string).
"""

from __future__ import annotations

import math

import torch

from goodhartlab.testbeds.toy_text.gold import (
    GOLD_VERSION,
    WEIGHTS,
    GoldFeatures,
    gold_features,
)

COMPONENTS_VERSION = f"{GOLD_VERSION}-components-v1"

#: The components, in the order of every (K, B) tensor of component rewards.
COMPONENTS: tuple[str, ...] = ("coverage", "sentiment", "constraint", "defects", "length")


def component_values(f: GoldFeatures, weights: dict[str, float] = WEIGHTS) -> dict[str, float]:
    """The five components of the gold on parsed features (their sum is ``f.gold``)."""
    w = weights
    if f.words == 0:
        return {"coverage": 0.0, "sentiment": 0.0, "constraint": 0.0, "defects": 0.0,
                "length": -2.0}  # fmt: skip
    defects = (
        w["misfit"] * f.misfit
        + w["contra"] * f.contra
        + w["rep"] * f.rep
        + w["stuff"] * f.stuff
        + w["stack"] * f.stack
        + w["off"] * f.off
        + w["broken"] * f.broken
    )
    length = w["long"] * max(0, f.sentences - w["max_sentences"]) + w["wordy"] * max(
        0, f.words - w["max_words"]
    )
    return {
        "coverage": w["coverage"] * (1 - math.exp(-f.coverage / w["coverage_scale"])),
        "sentiment": w["sentiment"] * math.tanh(f.sentiment / w["sentiment_scale"])
        - w["gush"] * max(0.0, abs(f.sentiment) - w["gush_threshold"]) ** 2,
        "constraint": float(f.constraint),
        "defects": -defects,
        "length": -length,
    }


class ToyTextGoldComponent:
    """One component of the gold as a reward source: ``score(prompts, completions) -> (B,)``
    (what labels the component reward models' pairs)."""

    version = COMPONENTS_VERSION

    def __init__(self, component: str):
        if component not in COMPONENTS:
            raise ValueError(f"component: expected one of {list(COMPONENTS)}, got {component!r}")
        self.component = component
        self.name = f"toy_text_gold_{component}"

    def score(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        if len(prompts) != len(completions):
            raise ValueError(
                f"completions: expected one per prompt ({len(prompts)}), got {len(completions)}"
            )
        return torch.tensor(
            [
                component_values(gold_features(p, c))[self.component]
                for p, c in zip(prompts, completions, strict=True)
            ],
            dtype=torch.float32,
        )

    __call__ = score


def component_matrix(prompts: list[str], completions: list[str]) -> torch.Tensor:
    """Every component of every completion. Shape: (K, B), rows in ``COMPONENTS`` order."""
    rows = [
        component_values(gold_features(p, c)) for p, c in zip(prompts, completions, strict=True)
    ]
    return torch.tensor([[r[k] for r in rows] for k in COMPONENTS], dtype=torch.float32)
