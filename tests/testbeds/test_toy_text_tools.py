"""Themis's tool on toy_text (testbeds.toy_text.tools): the counter's answer on hand-made
completions, and a tool-augmented reward model that trains, scores and reloads on the same
input (prompt + completion + answer)."""

from __future__ import annotations

import json

import pytest
import torch

from goodhartlab.data import PreferencePair
from goodhartlab.models.tiny import build_reward_model
from goodhartlab.registry import RM_TOOLS
from goodhartlab.rewards import RewardModel
from goodhartlab.rewards.reward_model import rm_batch_input_ids
from goodhartlab.testbeds.toy_text.gold import gold_features
from goodhartlab.testbeds.toy_text.tools import (
    toy_text_counter,
    toy_text_counts,
    toy_text_lookup,
)
from goodhartlab.train import RMTrainConfig, train_reward_model

PROMPT = "review of a phone :"
# Five sentences (the last an unterminated fragment), one repeated; screen x3, battery x1
# (this phone's parts), lens x1 (a camera's).
COMPLETION = (
    " the screen is very bright . the screen is very bright . the lens is dull ."
    " i love the screen . the battery"
)


def test_counter_answer_on_a_hand_made_completion():
    assert RM_TOOLS["toy_text_counter"] is toy_text_counter
    assert toy_text_counts(PROMPT, COMPLETION) == {
        "sentences": 5,
        "repeated": 1,
        "parts": ["screen", "battery"],  # catalogue order, once each
        "off": ["lens"],
        "top_mentions": 3,
    }
    assert toy_text_counter(PROMPT, COMPLETION) == (
        " : , , , , , : , : screen battery : lens : , , ,"
    )
    assert toy_text_counter(PROMPT, "") == " : : : : :"
    assert toy_text_lookup(PROMPT, COMPLETION) == " : screen battery : lens"
    # Caps: 20 copies of one sentence -> 8 sentences, 4 repeats, 6 top mentions.
    stuffed = " the screen is great ." * 20
    assert toy_text_counter(PROMPT, stuffed) == (
        " :" + " ," * 8 + " :" + " ," * 4 + " : screen :" + " :" + " ," * 6
    )


def test_counter_is_not_the_gold():
    """The answer ignores what the gold hides (the plausibility table, polarity): two
    completions with the same counts but different gold get the same answer."""
    a = " the screen is great . the battery is solid ."
    b = " the screen is cheap . the battery is weak ."
    assert gold_features(PROMPT, a).gold != pytest.approx(gold_features(PROMPT, b).gold)
    assert toy_text_counter(PROMPT, a) == toy_text_counter(PROMPT, b)


def test_reward_model_reads_completion_then_answer(tiny_tokenizer, tiny_reward_model):
    tok = tiny_tokenizer
    answer = toy_text_counter(PROMPT, COMPLETION)
    expected = tok(PROMPT + COMPLETION + answer, add_special_tokens=False)["input_ids"]
    rm = RewardModel(tiny_reward_model, tok, max_length=512, tool="toy_text_counter")
    assert rm.input_ids([PROMPT], [COMPLETION]) == [[*expected, tok.eos_token_id]]
    plain = RewardModel(tiny_reward_model, tok, max_length=512)
    assert plain.input_ids([PROMPT], [COMPLETION]) == rm_batch_input_ids(
        tok, [PROMPT], [COMPLETION], 512
    )
    assert plain.input_ids([PROMPT], [COMPLETION]) != rm.input_ids([PROMPT], [COMPLETION])
    with pytest.raises(ValueError, match="unknown reward-model tool"):
        RewardModel(tiny_reward_model, tok, tool="calculator")


def _pairs() -> list[PreferencePair]:
    chosen = [" the screen is great .", " i love the battery . the case is solid ."]
    rejected = [" the screen is great . the screen is great .", " the lens is dull ."]
    prompts = [PROMPT, "review of a phone , keep it short :"]
    return [
        PreferencePair(prompt=p, chosen=c, rejected=r, id=i)
        for i, (p, c, r) in enumerate(zip(prompts * 4, chosen * 4, rejected * 4, strict=True))
    ]


def test_training_and_scoring_inputs_agree_and_reload_keeps_the_tool(
    tmp_path, tiny_tokenizer, monkeypatch
):
    import goodhartlab.train.rm as rm_module

    seen: list[list[int]] = []
    collate = rm_module.collate_rm_inputs

    def recording(batch_ids, pad_token_id):
        seen.extend(list(ids) for ids in batch_ids)
        return collate(batch_ids, pad_token_id)

    monkeypatch.setattr(rm_module, "collate_rm_inputs", recording)
    pairs = _pairs()
    config = RMTrainConfig(
        tool="toy_text_counter", batch_size=4, epochs=1, lr=1e-3, max_length=128,
        eval_fraction=0.0,
    )  # fmt: skip
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    result = train_reward_model(
        pairs, tiny_tokenizer, backbone, config, eval_pairs=[], out_dir=tmp_path / "rm",
        progress=False,
    )  # fmt: skip
    prompts = [p.prompt for p in pairs] * 2
    completions = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    scoring_ids = result.reward_model.input_ids(prompts, completions)
    # Every sequence the training step read is one the scorer reads, answers included.
    assert seen and all(ids in scoring_ids for ids in seen)
    assert sorted(map(tuple, seen)) == sorted(map(tuple, scoring_ids))
    answer = toy_text_counter(pairs[0].prompt, pairs[0].chosen)
    assert tiny_tokenizer.decode(seen[0]).count(":") >= answer.count(":")

    info = json.loads((tmp_path / "rm" / "goodhart_rm.json").read_text())
    assert info["tool"] == "toy_text_counter" and info["tool_version"]
    loaded = RewardModel.from_pretrained(tmp_path / "rm")
    assert loaded.tool == "toy_text_counter"
    assert loaded.input_ids(prompts, completions) == scoring_ids
    torch.testing.assert_close(
        loaded.score(prompts, completions), result.reward_model.score(prompts, completions)
    )
    # The answer matters: the same weights without the tool score differently.
    untooled = RewardModel(loaded.model, loaded.tokenizer, max_length=128)
    assert not torch.allclose(
        untooled.score(prompts, completions), loaded.score(prompts, completions)
    )
