"""Reader personas of toy_text: readers whose gold reweights the terms of the gold reward.

In the manner of Personalized RewardBench (Ma et al. 2026, arXiv 2604.07343: pairs that
differ in one user's rubric, both of about equal general quality), a prompt can name the
reader it is written for; that reader's gold is the formula of ``gold.py`` with some of its
weights changed (``gold.gold_from_features``; the constraint term is kept as the gold parses
it). The documented differences from the gold (``toy_text-gold-v4``):

- ``enthusiast``: praise pays more and gushing is tolerated: sentiment weight 3.0 (gold 2.0),
  gushing only beyond |S| = 3.5 (gold 2), a stacked intensifier costs 0.3 (gold 1.0).
- ``skeptic``: trusts criticism: sentiment weight -2.0 (a negative review earns what a
  positive one earns from the gold), gushing as the gold.
- ``minimalist``: brevity: beyond 2 sentences (gold 4) each costs 1.5 (gold 0.8), beyond 14
  words (gold 32) each costs 0.3 (gold 0.1), coverage weight 1.5 (gold 2.5).
- ``completist``: wants everything covered: coverage weight 4.0 and scale 4.0 (gold 2.5 and 2:
  coverage keeps paying), up to 7 sentences (gold 4) and 56 words (gold 32) free, each
  sentence beyond costs 0.5.
- ``stickler``: a pedant about form: broken sentences cost 3.0 (gold 1.2), misfits 1.5
  (gold 0.4), stacked intensifiers 2.0 (gold 1.0), repeated sentences 3.0 (gold 1.5).

A persona prompt is ``reader NAME , DESCRIPTION . TOY_PROMPT`` (words of the toy_text alphabet
only, so that the language's tokenizer reads all of it). Results record
``PERSONAS_VERSION``: bump it on any change of a persona or of the prompt format.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from goodhartlab.data.labeling import label_with_gold
from goodhartlab.data.schema import CompletionPair, PreferencePair
from goodhartlab.testbeds.toy_text.gold import WEIGHTS, gold_features, gold_from_features

PERSONAS_VERSION = "toy_text-personas-v1"


@dataclass(frozen=True)
class Persona:
    """A reader: a name, what the prompt tells the reward model of them, and their weights."""

    name: str
    description: str
    overrides: dict[str, float] = field(default_factory=dict)
    """Weights of ``gold.WEIGHTS`` this reader holds differently."""

    @property
    def weights(self) -> dict[str, float]:
        return {**WEIGHTS, **self.overrides}


PERSONAS: dict[str, Persona] = {
    p.name: p
    for p in (
        Persona(
            "enthusiast",
            "loves upbeat effusive reviews",
            {"sentiment": 3.0, "gush_threshold": 3.5, "stack": 0.3},
        ),
        Persona("skeptic", "trusts critical reviews", {"sentiment": -2.0}),
        Persona(
            "minimalist",
            "wants two sentences at most",
            {"max_sentences": 2, "long": 1.5, "max_words": 14, "wordy": 0.3, "coverage": 1.5},
        ),
        Persona(
            "completist",
            "wants every part covered",
            {
                "coverage": 4.0,
                "coverage_scale": 4.0,
                "max_sentences": 7,
                "long": 0.5,
                "max_words": 56,
            },
        ),
        Persona(
            "stickler",
            "hates sloppy writing",
            {"broken": 3.0, "misfit": 1.5, "stack": 2.0, "rep": 3.0},
        ),
    )
}

_PERSONA_PROMPT = re.compile(r"^reader (\w+) , ([a-z ]*) \. (.+)$")


def persona_prompt(persona: str, prompt: str) -> str:
    """The prompt ``prompt`` (a toy_text prompt) written for reader ``persona``."""
    p = PERSONAS[persona]
    return f"reader {p.name} , {p.description} . {prompt}"


def parse_persona_prompt(text: str) -> tuple[Persona, str] | None:
    """(persona, toy_text prompt) of a persona prompt; None for any other text.

    Raises:
        ValueError: a persona prompt naming a reader that is not in ``PERSONAS``.
    """
    m = _PERSONA_PROMPT.match(text.strip())
    if m is None:
        return None
    if m.group(1) not in PERSONAS:
        raise ValueError(
            f"prompt: persona {m.group(1)!r} is not one of {', '.join(PERSONAS)} "
            f"({PERSONAS_VERSION})"
        )
    return PERSONAS[m.group(1)], m.group(3)


def persona_gold(persona: str | Persona, prompt: str, completion: str) -> float:
    """The gold of reader ``persona`` for ``completion`` to the toy_text ``prompt``."""
    p = PERSONAS[persona] if isinstance(persona, str) else persona
    return gold_from_features(gold_features(prompt, completion), p.weights)


class PersonaGold:
    """Reader ``persona``'s gold as a reward function: ``score(prompts, completions) ->
    Tensor[B]`` (float64), on toy_text prompts or persona prompts alike (a persona prompt's
    reader is ignored: this reader's gold is computed)."""

    def __init__(self, persona: str):
        self.persona = PERSONAS[persona]
        self.name = f"toy_text-persona-{persona}"
        self.version = PERSONAS_VERSION

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        out = []
        for prompt, completion in zip(prompts, completions, strict=True):
            parsed = parse_persona_prompt(prompt)
            out.append(persona_gold(self.persona, parsed[1] if parsed else prompt, completion))
        return torch.tensor(out, dtype=torch.float64)


def label_pairs_by_persona(
    pairs: Sequence[CompletionPair | PreferencePair],
    personas: Sequence[str],
    *,
    noise: float,
    seed: int = 0,
) -> list[PreferencePair]:
    """``pairs[i]`` labelled by reader ``personas[i]``'s gold (``data.labeling.label_with_gold``,
    argmax with each label flipped with probability ``noise``), ``meta["persona"]`` its reader.

    The prompts are left as they are (a reward model that is not told the persona cannot
    read it from them); the flips of persona k's pairs are drawn from ``seed + k`` (k its
    index in ``PERSONAS``), so that a persona's labels do not depend on the others' pairs.
    """
    pairs, personas = list(pairs), list(personas)
    if len(pairs) != len(personas):
        raise ValueError(
            f"personas: expected one persona per pair ({len(pairs)}), got {len(personas)}"
        )
    unknown = sorted(set(personas) - set(PERSONAS))
    if unknown:
        raise ValueError(f"personas: {unknown} not in {', '.join(PERSONAS)} ({PERSONAS_VERSION})")
    out: list[PreferencePair | None] = [None] * len(pairs)
    for k, name in enumerate(PERSONAS):
        idx = [i for i, u in enumerate(personas) if u == name]
        if not idx:
            continue
        labelled = label_with_gold(
            [pairs[i] for i in idx], PersonaGold(name), noise=noise, seed=seed + k
        )
        for i, p in zip(idx, labelled, strict=True):
            p.meta["persona"] = name
            out[i] = p
    return [p for p in out if p is not None]
