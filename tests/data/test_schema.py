"""PreferencePair validation."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from goodhartlab.data import CompletionPair, PreferencePair, pair_from_row

ROW = {"prompt": "review of a phone:", "chosen": " great.", "rejected": " bad."}


def test_rewardbench_row_validates():
    pair = PreferencePair(**ROW, id=3, subset="chat")
    assert pair.id == 3 and pair.subset == "chat" and pair.meta == {}
    assert pair.flipped is None


def test_extra_fields_forbidden():
    with pytest.raises(ValidationError, match="chosen_model"):
        PreferencePair(**ROW, chosen_model="gpt")


@pytest.mark.parametrize(
    "update, field",
    [
        ({"chosen": 5}, "chosen"),
        ({"margin": math.nan}, "margin"),
        ({"gold_chosen": math.inf}, "gold_chosen"),
        ({"id": True}, "id"),
        ({"meta": {"x": object()}}, "meta"),
        ({"meta": {"x": math.nan}}, "meta"),
    ],
)
def test_bad_values_name_the_field(update, field):
    with pytest.raises(ValueError, match=rf"row 7: field '{field}'"):
        pair_from_row({**ROW, **update}, where="row 7")


def test_missing_field_named():
    with pytest.raises(ValueError, match="field 'rejected': missing"):
        pair_from_row({"prompt": "p", "chosen": "c"})


def test_extra_modes():
    row = {**ROW, "chosen_model": "a", "meta": {"k": 1}}
    with pytest.raises(ValueError, match=r"unexpected field 'chosen_model'.*extra='meta'"):
        pair_from_row(row)
    assert pair_from_row(row, extra="meta").meta == {"chosen_model": "a", "k": 1}
    assert pair_from_row(row, extra="drop").meta == {"k": 1}


def test_swapped_and_clean():
    pair = PreferencePair(**ROW, gold_chosen=0.0, gold_rejected=1.0, meta={"flipped": True})
    clean = pair.clean()
    assert (clean.chosen, clean.rejected) == (ROW["rejected"], ROW["chosen"])
    assert (clean.gold_chosen, clean.gold_rejected) == (1.0, 0.0)
    assert clean.flipped is False
    unflipped = PreferencePair(**ROW, meta={"flipped": False})
    assert unflipped.clean() is unflipped


def test_completion_pair_forbids_extra():
    with pytest.raises(ValidationError):
        CompletionPair(prompt="p", completion_a="a", completion_b="b", chosen="a")
