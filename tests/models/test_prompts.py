"""Prompts through the chat template (models/prompts.py), in every loop that samples."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from goodhartlab.models.prompts import (
    chat_template,
    encode_prompts,
    format_prompts,
    without_chat_template,
)
from goodhartlab.models.tiny import build_causal_lm, build_reward_model

# A chat template in the manner of ChatML, over words the tiny tokenizer knows.
TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
PROMPTS = ["review of a phone:", "review of a book: the"]


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = TEMPLATE
    return tok


def templated_ids(tok, prompt):
    return tok(f"user: {prompt}\nassistant:", add_special_tokens=False)["input_ids"]


def test_format_prompts_wraps_one_user_turn_and_opens_the_assistants(chat_tokenizer):
    assert format_prompts(chat_tokenizer, PROMPTS) == [
        "user: review of a phone:\nassistant:",
        "user: review of a book: the\nassistant:",
    ]
    assert encode_prompts(chat_tokenizer, PROMPTS) == [
        templated_ids(chat_tokenizer, p) for p in PROMPTS
    ]


def test_a_tokenizer_without_template_gets_raw_prompts(tiny_tokenizer, chat_tokenizer):
    assert chat_template(tiny_tokenizer) is None
    assert format_prompts(tiny_tokenizer, PROMPTS) == PROMPTS
    assert encode_prompts(tiny_tokenizer, PROMPTS) == [
        tiny_tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS
    ]
    raw = without_chat_template(chat_tokenizer)
    assert chat_template(raw) is None and format_prompts(raw, PROMPTS) == PROMPTS
    assert chat_template(chat_tokenizer) == TEMPLATE  # the tokenizer given is unchanged
    # An explicit template (a pool's record) wins over the tokenizer's own, None over both.
    assert format_prompts(raw, PROMPTS[:1], template=TEMPLATE) == [
        "user: review of a phone:\nassistant:"
    ]
    assert format_prompts(chat_tokenizer, PROMPTS, template=None) == PROMPTS


@pytest.fixture(scope="module")
def policy(tiny_tokenizer):
    return build_causal_lm("small", tiny_tokenizer, seed=0).eval()


def test_rollouts_condition_on_the_templated_prompt(policy, chat_tokenizer):
    from goodhartlab.measure.evaluate import sample_rollouts

    ro = sample_rollouts(policy, chat_tokenizer, PROMPTS[:1], 2, max_new_tokens=3)
    ids = templated_ids(chat_tokenizer, PROMPTS[0])
    assert ro.prompt_ids.shape[1] == len(ids)
    assert ro.prompt_ids[0].tolist() == ids


def test_sample_completions_feeds_templated_prompts(policy, chat_tokenizer, monkeypatch):
    from goodhartlab.models import generation

    seen = []
    real = generation.sample_token_ids
    monkeypatch.setattr(
        generation,
        "sample_token_ids",
        lambda policy, prompt_ids, *a, **k: (
            seen.extend(prompt_ids) or real(policy, prompt_ids, *a, **k)
        ),
    )
    generation.sample_completions(policy, chat_tokenizer, PROMPTS, 1, max_new_tokens=2)
    assert seen == [templated_ids(chat_tokenizer, p) for p in PROMPTS]


def test_dpo_batches_condition_on_the_templated_prompt(chat_tokenizer):
    from goodhartlab.measure.evaluate import completion_rollouts

    batch = completion_rollouts(chat_tokenizer, PROMPTS[:1], [" great"])
    assert batch.prompt_ids[0].tolist() == templated_ids(chat_tokenizer, PROMPTS[0])


def test_pool_records_the_template_and_samples_with_it(
    tmp_path, policy, chat_tokenizer, tiny_tokenizer
):
    from goodhartlab.optimize.pool import build_pool

    build_pool(tmp_path / "chat", policy, chat_tokenizer, PROMPTS, 2, max_new_tokens=3)
    config = json.loads((tmp_path / "chat" / "samples" / "pool.json").read_text())
    assert config["chat_template"] == TEMPLATE
    # A pool without a template records none (the identity of pools built before templates).
    build_pool(tmp_path / "raw", policy, tiny_tokenizer, PROMPTS, 2, max_new_tokens=3)
    config = json.loads((tmp_path / "raw" / "samples" / "pool.json").read_text())
    assert "chat_template" not in config


def test_goodhart_bon_policy_dir_feeds_templated_prompts(
    tmp_path, policy, chat_tokenizer, monkeypatch
):
    """Issue 16: ``goodhart bon --policy DIR`` on an instruct model fed its prompts raw."""
    from goodhartlab.cli import main
    from goodhartlab.optimize import pool as pool_module

    policy_dir = tmp_path / "policy"
    policy.save_pretrained(policy_dir)
    chat_tokenizer.save_pretrained(policy_dir)
    rms = []
    for seed in range(2):
        d = tmp_path / f"rm{seed}"
        build_reward_model("small", chat_tokenizer, seed=seed).save_pretrained(d)
        chat_tokenizer.save_pretrained(d)
        rms.append(d)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")

    seen: list[list[int]] = []
    real = pool_module.sample_token_ids

    def spy(policy, prompt_ids, *a, **k):
        seen.extend(list(x) for x in prompt_ids)
        return real(policy, prompt_ids, *a, **k)

    monkeypatch.setattr(pool_module, "sample_token_ids", spy)
    base = [
        "bon",
        "--policy",
        str(policy_dir),
        "--prompts",
        str(prompts),
        "--gold",
        str(rms[0]),
        "--proxies",
        str(rms[1]),
        "--pool-size",
        "2",
        "--max-new-tokens",
        "2",
        "--n-boot",
        "10",
    ]
    assert main([*base, "--out", str(tmp_path / "run")]) == 0
    expected = [templated_ids(chat_tokenizer, p) for p in PROMPTS]
    assert seen and all(ids in expected for ids in seen)
    assert {tuple(x) for x in seen} == {tuple(x) for x in expected}

    seen.clear()
    assert main([*base, "--no-chat-template", "--out", str(tmp_path / "raw")]) == 0
    raw = [chat_tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    assert {tuple(x) for x in seen} == {tuple(x) for x in raw}


def test_rl_rollouts_of_a_saved_instruct_policy_are_templated(tmp_path, policy, chat_tokenizer):
    """A policy directory's tokenizer carries its template into every loop (load_policy)."""
    from goodhartlab.measure.evaluate import sample_rollouts
    from goodhartlab.models.loading import load_policy

    policy.save_pretrained(tmp_path)
    chat_tokenizer.save_pretrained(tmp_path)
    model, tok, _ = load_policy(tmp_path)
    assert chat_template(tok) == TEMPLATE
    torch.manual_seed(0)
    ro = sample_rollouts(model, tok, PROMPTS[:1], 1, max_new_tokens=2)
    assert ro.prompt_ids[0].tolist() == templated_ids(chat_tokenizer, PROMPTS[0])
