"""RM tokenization, last-token scoring with right padding, RewardModel and ProgrammaticReward."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaForSequenceClassification

from goodhartlab.models.tiny import build_reward_model, llama_config
from goodhartlab.rewards import (
    ProgrammaticReward,
    RewardModel,
    collate_rm_inputs,
    reward_at_last_token,
    rm_batch_input_ids,
    rm_input_ids,
)
from goodhartlab.rewards.reward_model import score_token_ids

PROMPTS = ["review of a phone:", "review of a book:", "review of a song:", "review of a chair:"]
COMPLETIONS = [
    " great.",
    " the screen is great and the battery is bad, very slow and very old.",
    "",
    " fine",
]


def test_rm_input_ids_is_text_plus_eos(tiny_tokenizer):
    ids = rm_input_ids(tiny_tokenizer, "review of a phone:", " great.", max_length=64)
    text_ids = tiny_tokenizer("review of a phone: great.", add_special_tokens=False).input_ids
    assert ids == [*text_ids, tiny_tokenizer.eos_token_id]
    assert tiny_tokenizer.pad_token_id not in ids


def test_rm_input_ids_truncates_from_the_left(tiny_tokenizer):
    full = rm_input_ids(tiny_tokenizer, PROMPTS[1], COMPLETIONS[1], max_length=1000)
    cut = rm_input_ids(tiny_tokenizer, PROMPTS[1], COMPLETIONS[1], max_length=6)
    assert len(full) > 6
    assert cut == full[-6:]  # the end of the completion and the eos survive
    assert cut[-1] == tiny_tokenizer.eos_token_id
    with pytest.raises(ValueError, match="max_length"):
        rm_input_ids(tiny_tokenizer, "p", "c", max_length=1)


def test_batch_ids_equal_single_ids(tiny_tokenizer):
    batch = rm_batch_input_ids(tiny_tokenizer, PROMPTS, COMPLETIONS, max_length=12)
    assert batch == [
        rm_input_ids(tiny_tokenizer, p, c, 12) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)
    ]


def test_collate_pads_right():
    input_ids, mask = collate_rm_inputs([[5, 6, 7], [8]], pad_token_id=0)
    assert input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_last_token_score_matches_the_models_own_pooling_without_padding(tiny_reward_model):
    ids = torch.tensor([[10, 20, 30, 1]])
    ours = reward_at_last_token(tiny_reward_model, ids, torch.ones_like(ids))
    theirs = tiny_reward_model(input_ids=ids).logits[:, 0]
    torch.testing.assert_close(ours, theirs)


def test_score_read_from_attention_mask_not_pad_id(tiny_tokenizer, tiny_reward_model):
    # Padding with an ordinary token id (or eos) must not change any score: the mask, not the
    # pad id, says where the text ends.
    ids = rm_batch_input_ids(tiny_tokenizer, PROMPTS, COMPLETIONS, 64)
    with_pad = score_token_ids(tiny_reward_model, ids, tiny_tokenizer.pad_token_id, batch_size=4)
    with_eos = score_token_ids(tiny_reward_model, ids, tiny_tokenizer.eos_token_id, batch_size=4)
    with_word = score_token_ids(tiny_reward_model, ids, ids[0][0], batch_size=4)
    torch.testing.assert_close(with_pad, with_eos, atol=1e-5, rtol=0)
    torch.testing.assert_close(with_pad, with_word, atol=1e-5, rtol=0)


def test_scores_invariant_to_batch_composition(tiny_tokenizer, tiny_reward_model):
    rm = RewardModel(tiny_reward_model, tiny_tokenizer, max_length=64)
    alone = torch.stack([rm.score([p], [c])[0] for p, c in zip(PROMPTS, COMPLETIONS, strict=True)])
    together = rm.score(PROMPTS, COMPLETIONS, batch_size=4)
    pairs_of_two = rm.score(PROMPTS, COMPLETIONS, batch_size=2)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(pairs_of_two, alone, atol=1e-5, rtol=0)
    # The same short item, scored next to ever longer neighbours (more right padding).
    for k in (1, 5, 20):
        r = rm.score([PROMPTS[0], PROMPTS[1]], [COMPLETIONS[0], COMPLETIONS[1] * k])
        torch.testing.assert_close(r[0], alone[0], atol=1e-5, rtol=0)
    assert together.dtype == torch.float32 and together.shape == (4,)
    # Different inputs get different scores (the test above is not trivially constant).
    assert together.unique().numel() == 4


def test_score_leaves_training_mode_and_needs_no_grad(tiny_tokenizer, tiny_reward_model):
    rm = RewardModel(tiny_reward_model, tiny_tokenizer)
    tiny_reward_model.train()
    r = rm(PROMPTS, COMPLETIONS)
    assert tiny_reward_model.training
    assert not r.requires_grad


def test_length_mismatch_error(tiny_tokenizer, tiny_reward_model):
    rm = RewardModel(tiny_reward_model, tiny_tokenizer)
    with pytest.raises(ValueError, match="same length, got 2 and 1"):
        rm.score(PROMPTS[:2], COMPLETIONS[:1])


def test_vocabulary_mismatch_error(tiny_tokenizer):
    cfg = llama_config("small", 100, pad_token_id=0, eos_token_id=1)
    small_vocab_model = LlamaForSequenceClassification(cfg)
    n = len(tiny_tokenizer)
    with pytest.raises(
        ValueError,
        match=rf"vocabulary mismatch: the tokenizer has {n} tokens but the model's embedding has 100 rows",
    ):
        RewardModel(small_vocab_model, tiny_tokenizer)


def test_save_and_from_pretrained_round_trip(tmp_path, tiny_tokenizer, tiny_reward_model):
    rm = RewardModel(tiny_reward_model, tiny_tokenizer, max_length=64)
    tiny_reward_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded = RewardModel.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded(PROMPTS, COMPLETIONS), rm(PROMPTS, COMPLETIONS))


def test_from_pretrained_rejects_multi_label_models(tmp_path, tiny_tokenizer):
    cfg = llama_config("small", len(tiny_tokenizer), pad_token_id=0, eos_token_id=1, num_labels=3)
    LlamaForSequenceClassification(cfg).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="num_labels=1, got num_labels=3"):
        RewardModel.from_pretrained(tmp_path)


def test_default_max_length_from_model_positions(tiny_tokenizer):
    model = build_reward_model("small", tiny_tokenizer, max_position_embeddings=48)
    assert RewardModel(model, tiny_tokenizer).max_length == 48


# --- ProgrammaticReward -----------------------------------------------------------------


def test_programmatic_reward_scores():
    words = ProgrammaticReward(lambda p, c: len(c.split()), name="words", version="1")
    r = words(["q", "q", "q"], [" a b", "", " a"])
    assert r.tolist() == [2.0, 0.0, 1.0] and r.dtype == torch.float32
    assert (words.name, words.version) == ("words", "1")


def test_programmatic_reward_rejects_nan_and_non_numbers():
    nan = ProgrammaticReward(lambda p, c: math.nan if c == "x" else 1.0, name="nan", version="1")
    with pytest.raises(
        ValueError, match=r"nan: expected a finite number for item 1 .*'x'.*got nan"
    ):
        nan(["q", "q"], ["y", "x"])
    none = ProgrammaticReward(lambda p, c: None, name="none", version="1")
    with pytest.raises(ValueError, match="got None"):
        none(["q"], ["y"])


def test_programmatic_reward_batched_wrong_length():
    short = ProgrammaticReward(lambda ps, cs: [1.0], name="short", version="1", batched=True)
    with pytest.raises(ValueError, match="short: expected 2 rewards"):
        short(["a", "b"], ["c", "d"])
    ok = ProgrammaticReward(
        lambda ps, cs: [len(c) for c in cs], name="len", version="1", batched=True
    )
    assert ok(["a", "b"], ["cc", "d"]).tolist() == [2.0, 1.0]
    with pytest.raises(ValueError, match="same length"):
        ok(["a"], ["c", "d"])
