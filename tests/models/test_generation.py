"""Text sampling (models.generation.sample_completions) over the KV-cache sampler."""

from __future__ import annotations

import pytest
import torch

from goodhartlab.models.generation import right_pad, sample_completions
from goodhartlab.models.tiny import build_causal_lm


@pytest.fixture(scope="module")
def policy(tiny_tokenizer):
    return build_causal_lm("small", tiny_tokenizer, seed=0).eval()


def test_shapes_determinism_and_variety(policy, tiny_tokenizer):
    prompts = ["review of a phone:", "review of a book:", "review of a phone:"]
    a = sample_completions(
        policy, tiny_tokenizer, prompts, 4, max_new_tokens=8, seed=1, batch_size=5
    )
    b = sample_completions(
        policy, tiny_tokenizer, prompts, 4, max_new_tokens=8, seed=1, batch_size=5
    )
    c = sample_completions(
        policy, tiny_tokenizer, prompts, 4, max_new_tokens=8, seed=2, batch_size=5
    )
    assert [len(x) for x in a] == [4, 4, 4]
    assert a == b
    assert a != c
    assert len({s for row in a for s in row}) > 6  # an untrained model samples varied text


def test_completions_are_the_decoded_tokens_before_eos(policy, tiny_tokenizer):
    from goodhartlab.models.generation import sample_token_ids

    prompt = "review of a phone:"
    (row,) = sample_completions(policy, tiny_tokenizer, [prompt], 3, max_new_tokens=6, seed=0)
    # the same draws, straight from the token sampler with the same seeded generator
    gen = torch.Generator().manual_seed(0)
    ids = tiny_tokenizer(prompt, add_special_tokens=False).input_ids
    batch = sample_token_ids(
        policy,
        [ids],
        [0, 0, 0],
        max_new_tokens=6,
        generator=gen,
        eos_token_id=tiny_tokenizer.eos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )
    expected = [
        tiny_tokenizer.decode(
            batch.tokens[r, : int(batch.num_tokens[r])].tolist(), skip_special_tokens=True
        )
        for r in range(3)
    ]
    assert row == expected
    assert all("<eos>" not in t and "<pad>" not in t for t in row)


def test_bad_arguments_name_the_argument(policy, tiny_tokenizer):
    with pytest.raises(ValueError, match="num_samples"):
        sample_completions(policy, tiny_tokenizer, ["x"], 0)
    with pytest.raises(ValueError, match="prompts"):
        sample_completions(policy, tiny_tokenizer, [], 2)
    with pytest.raises(ValueError, match="temperature"):
        sample_completions(policy, tiny_tokenizer, ["x"], 2, temperature=0)


def test_right_pad_pads_on_the_right_with_a_mask_of_the_tokens():
    ids, mask = right_pad([[5, 6, 7], [8], []], pad_token_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long
