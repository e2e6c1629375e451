"""Reader personas of toy_text (testbeds/toy_text/personas.py) and gold_from_features."""

from __future__ import annotations

import math

import pytest

from goodhartlab.testbeds.toy_text.build import generate_corpus
from goodhartlab.testbeds.toy_text.gold import WEIGHTS, gold_features, gold_from_features
from goodhartlab.testbeds.toy_text.language import fits
from goodhartlab.testbeds.toy_text.personas import (
    PERSONAS,
    PERSONAS_VERSION,
    Persona,
    parse_persona_prompt,
    persona_gold,
    persona_prompt,
)

PHONE = "review of a phone :"


def test_gold_from_features_reproduces_the_gold_exactly():
    # The identity the personas rest on: the formula on parsed features under the gold's own
    # weights is the gold, bit for bit, on the corpus and on an empty completion.
    for prompt, completion in [*generate_corpus(2000, seed=5), (PHONE, "")]:
        f = gold_features(prompt, completion)
        assert gold_from_features(f, WEIGHTS) == f.gold


def test_a_persona_without_overrides_is_the_gold():
    plain = Persona("plain", "no opinion", {})
    for prompt, completion in generate_corpus(300, seed=6):
        assert persona_gold(plain, prompt, completion) == gold_features(prompt, completion).gold


def test_skeptic_and_minimalist_by_hand():
    assert fits("screen", "bright") and fits("battery", "weak") and fits("screen", "dull")
    # U = 1, S = +1: gold = 2.5 (1 - e^-0.5) + 2 tanh(0.5); the skeptic's sentiment weight is
    # -2, so it reads 2.5 (1 - e^-0.5) - 2 tanh(0.5).
    cov, sent = 2.5 * (1 - math.exp(-0.5)), 2.0 * math.tanh(0.5)
    assert gold_features(PHONE, " the screen is bright .").gold == pytest.approx(cov + sent)
    assert persona_gold("skeptic", PHONE, " the screen is bright .") == pytest.approx(cov - sent)
    assert persona_gold("skeptic", PHONE, " the screen is dull .") == pytest.approx(cov + sent)
    # Three sentences, 16 words: U = 2 (screen, battery), S = 1 - 1 = 0; the minimalist pays
    # 1.5 x (3 - 2) for the third sentence and 0.3 x (16 - 14) for the words, and weighs
    # coverage 1.5 instead of 2.5; the gold pays nothing for length below five sentences.
    text = " the screen is bright . the battery is weak . i bought it last week ."
    f = gold_features(PHONE, text)
    assert (f.coverage, f.sentiment, f.sentences, f.words) == (2, 0.0, 3, 16)
    assert f.gold == pytest.approx(2.5 * (1 - math.exp(-1.0)))
    assert persona_gold("minimalist", PHONE, text) == pytest.approx(
        1.5 * (1 - math.exp(-1.0)) - 1.5 - 0.3 * 2
    )


def test_each_persona_differs_from_the_gold_somewhere():
    corpus = generate_corpus(400, seed=7)
    for name in PERSONAS:
        assert any(persona_gold(name, p, c) != gold_features(p, c).gold for p, c in corpus), name


def test_persona_prompts_round_trip_and_unknown_readers_are_named():
    text = persona_prompt("stickler", PHONE)
    assert text == f"reader stickler , hates sloppy writing . {PHONE}"
    assert all(ch.isalpha() or ch in " ,.:" for ch in text)  # the toy_text alphabet
    persona, prompt = parse_persona_prompt(text)
    assert persona is PERSONAS["stickler"] and prompt == PHONE
    assert parse_persona_prompt(PHONE) is None
    with pytest.raises(ValueError, match=f"'pirate' is not one of .*{PERSONAS_VERSION}"):
        parse_persona_prompt(f"reader pirate , says arr . {PHONE}")
