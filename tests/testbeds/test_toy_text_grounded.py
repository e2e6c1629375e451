"""The grounded toy_text gold (testbeds/toy_text/grounded.py): fact sheets and faithfulness."""

from __future__ import annotations

import pytest

from goodhartlab.testbeds.toy_text.gold import gold_features
from goodhartlab.testbeds.toy_text.grounded import (
    GROUNDED_WEIGHTS,
    Statement,
    abstain_sentence,
    conflict_sentence,
    grounded_features,
    grounded_gold,
    grounded_prompt,
    parse_grounded_prompt,
    resolve_polarities,
)

MENTION = "review of a phone , mention the screen :"
PLAIN = "review of a phone :"
# screen: bright (+), dull (-) fit; battery: weak (-) and great (+) fit (language.fits).
SHEET = [Statement("screen", adjective="bright"), Statement("battery", adjective="weak")]


def test_links_resolve_to_a_fixed_point_and_conflicts_hold_both_polarities():
    sheet = [
        Statement("case", matches="charger"),
        Statement("charger", matches="screen"),
        Statement("screen", adjective="great"),
        Statement("battery", adjective="weak"),
        Statement("battery", adjective="solid"),
    ]
    assert resolve_polarities(sheet) == {
        "screen": {1}, "charger": {1}, "case": {1}, "battery": {1, -1},
    }  # fmt: skip


def test_prompts_round_trip_and_bad_sheets_are_named():
    text = grounded_prompt(SHEET, MENTION)
    assert text == f"fact one : the screen is bright . fact two : the battery is weak . {MENTION}"
    assert parse_grounded_prompt(text) == (SHEET, MENTION)
    assert parse_grounded_prompt(MENTION) is None
    # Every word is in the toy_text alphabet (letters, ',', '.', ':'): no <unk> for the
    # language's tokenizer.
    assert all(ch.isalpha() or ch in " ,.:" for ch in text)
    with pytest.raises(ValueError, match="fact two 'the battery weak'"):
        parse_grounded_prompt(
            f"fact one : the screen is bright . fact two : the battery weak . {PLAIN}"
        )
    with pytest.raises(ValueError, match=r"expected 'fact two : STATEMENT \.'"):
        parse_grounded_prompt(f"fact one : the screen is bright . fact three : {PLAIN}")


def test_a_faithful_answer_without_citations_scores_as_the_gold():
    # Identity: nothing to penalize, the mention satisfied both ways -> grounded = gold.
    prompt = grounded_prompt(SHEET, MENTION)
    text = " the screen is bright . the battery is weak ."
    g = grounded_features(prompt, text)
    assert (g.faithful, g.contradicted, g.unsupported, g.one_sided) == (2, 0, 0, 0)
    assert g.gold == pytest.approx(gold_features(MENTION, text).gold)


def test_each_grounding_term_costs_its_weight():
    prompt = grounded_prompt(SHEET, PLAIN)
    base = grounded_gold(
        prompt, " the screen is bright , fact one . the battery is weak , fact two ."
    )
    assert base == pytest.approx(
        gold_features(PLAIN, " the screen is bright . the battery is weak .").gold
    )
    # A wrong citation: exactly its weight.
    wrong = grounded_gold(
        prompt, " the screen is bright , fact two . the battery is weak , fact two ."
    )
    assert base - wrong == pytest.approx(GROUNDED_WEIGHTS["wrong_citation"])
    # A contradiction (battery great against the facts' weak): its weight, plus what the
    # toy_text gold itself makes of the changed sentiment.
    text = " the screen is bright . the battery is great ."
    g = grounded_features(prompt, text)
    assert g.contradicted == 1
    assert g.gold == pytest.approx(
        gold_features(PLAIN, text).gold - GROUNDED_WEIGHTS["contradicted"]
    )
    # An opinion on a part the facts do not cover: unsupported.
    g = grounded_features(prompt, " the screen is bright . the charger is great .")
    assert g.unsupported == 1


def test_abstain_and_conflict_sentences():
    uncovered = grounded_prompt([Statement("battery", adjective="weak")], MENTION)
    # Abstaining on the asked-for part the facts do not cover satisfies the mention (+1.2),
    # and the abstain sentence is no sentence of the review (the gold sees the rest only).
    g = grounded_features(uncovered, f" the battery is weak . {abstain_sentence('screen')}")
    assert g.constraint == 1.2 and g.over_abstain == 0
    toy = gold_features(MENTION, " the battery is weak .")
    assert g.gold == pytest.approx(toy.gold - toy.constraint + 1.2)
    # Abstaining on a covered part: over-abstaining.
    covered = grounded_prompt(SHEET, PLAIN)
    g = grounded_features(covered, f" the battery is weak . {abstain_sentence('screen')}")
    assert g.over_abstain == 1
    conflicted = grounded_prompt(
        [Statement("screen", adjective="bright"), Statement("screen", adjective="dull")], MENTION
    )
    noted = grounded_features(conflicted, f" {conflict_sentence('screen')}")
    assert noted.conflicts_noted == 1 and noted.constraint == 1.2
    sided = grounded_features(conflicted, " the screen is bright .")
    assert sided.one_sided == 1 and sided.constraint == -0.6
    assert grounded_features(covered, f" {conflict_sentence('screen')}").false_conflict == 1


def test_an_empty_completion_scores_as_the_gold_does():
    assert grounded_gold(grounded_prompt(SHEET, PLAIN), "") == -2.0
