"""Evaluation at checkpoints: rollouts with log-probs, KL from samples, diversity, metrics."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from goodhartlab.measure import completion_logprobs, distinct_n, evaluate_policy, sample_rollouts
from goodhartlab.models.tiny import build_causal_lm
from goodhartlab.rewards import ProgrammaticReward

# Prompts of different token lengths, so rows are left-padded by different amounts.
PROMPTS = ["review of a phone:", "a", "review of a laptop: the battery is"]
WORDS = ProgrammaticReward(lambda p, c: float(len(c.split())), name="words", version="1")
CHARS = ProgrammaticReward(lambda p, c: len(c) / 10, name="chars", version="1")


@pytest.fixture(scope="module")
def policy(tiny_tokenizer):
    return build_causal_lm("small", tiny_tokenizer, seed=0).eval()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_logprobs_equal_a_forward_pass_under_left_padding(
    policy, tiny_tokenizer, temperature
):
    gen = torch.Generator().manual_seed(0)
    ro = sample_rollouts(
        policy,
        tiny_tokenizer,
        PROMPTS,
        4,
        max_new_tokens=10,
        temperature=temperature,
        generator=gen,
    )
    assert ro.completion_ids.shape[0] == 12 and ro.prompt_ids.shape[0] == 12
    assert bool((ro.prompt_mask.sum(1) > 0).all()) and ro.prompt_mask[:, 0].min() == 0
    with torch.no_grad():
        logp = completion_logprobs(policy, ro, temperature)
    assert torch.isfinite(logp).all()
    torch.testing.assert_close(logp, ro.logp, atol=1e-4, rtol=0)
    # The mask covers each token up to and including the first EOS.
    lengths = ro.completion_mask.sum(1).cpu()
    expected = torch.where(ro.eos, ro.num_tokens + 1, ro.num_tokens)
    assert torch.equal(lengths, expected)


def test_rows_are_prompt_major_and_reproducible(policy, tiny_tokenizer):
    a = sample_rollouts(
        policy,
        tiny_tokenizer,
        PROMPTS,
        2,
        max_new_tokens=6,
        generator=torch.Generator().manual_seed(3),
    )
    b = sample_rollouts(
        policy,
        tiny_tokenizer,
        PROMPTS,
        2,
        max_new_tokens=6,
        generator=torch.Generator().manual_seed(3),
    )
    assert a.completions == b.completions
    prompt_of_row = [
        tiny_tokenizer.decode(ids[m.bool()])
        for ids, m in zip(a.prompt_ids, a.prompt_mask, strict=True)
    ]
    assert prompt_of_row == [p for p in PROMPTS for _ in range(2)]


def test_distinct_n_hand_computed():
    # unigrams: a b a b | a c -> 6 total, {a, b, c} distinct
    assert distinct_n(["a b a b", "a c"], 1) == pytest.approx(3 / 6)
    # bigrams: ab ba ab | ac -> 4 total, {ab, ba, ac}
    assert distinct_n(["a b a b", "a c"], 2) == pytest.approx(3 / 4)
    assert distinct_n(["", "one"], 2) == 0.0


def test_evaluate_base_policy_against_itself(policy, tiny_tokenizer):
    reference = copy.deepcopy(policy)
    metrics, samples, _ = evaluate_policy(
        policy,
        reference,
        tiny_tokenizer,
        PROMPTS,
        gold=WORDS,
        proxy=CHARS,
        num_samples=4,
        max_new_tokens=8,
        seed=1,
        num_logged_samples=3,
    )
    # π = π0: every log-ratio is ~0 (float noise only).
    assert abs(metrics["kl"]) < 1e-4 and metrics["kl_k3"] < 1e-8
    assert metrics["d"] == pytest.approx(math.sqrt(max(metrics["kl"], 0.0)))
    assert metrics["n"] == 12 and len(samples) == 3
    # The logged samples carry the scores the metrics average.
    for s in samples:
        assert s["gold"] == len(s["completion"].split())
        assert s["proxy"] == pytest.approx(len(s["completion"]) / 10)
    assert 0 <= metrics["distinct_1"] <= 1 and 0 <= metrics["eos_frac"] <= 1


def test_evaluation_uses_common_random_numbers(policy, tiny_tokenizer):
    kw = dict(gold=WORDS, proxy=CHARS, num_samples=2, max_new_tokens=8, seed=5)
    a, _, _ = evaluate_policy(policy, None, tiny_tokenizer, PROMPTS, **kw)
    b, _, _ = evaluate_policy(policy, None, tiny_tokenizer, PROMPTS, **kw)
    assert a == b and "kl" not in a


def test_kl_is_positive_for_a_different_policy(policy, tiny_tokenizer):
    other = build_causal_lm("small", tiny_tokenizer, seed=1).eval()
    metrics, _, _ = evaluate_policy(
        other,
        policy,
        tiny_tokenizer,
        PROMPTS,
        gold=WORDS,
        proxy=CHARS,
        num_samples=8,
        max_new_tokens=8,
        seed=0,
    )
    assert metrics["kl_k3"] > 0.01 and metrics["d"] > 0


def test_ensemble_members_and_disagreement(policy, tiny_tokenizer):
    class TwoMembers:
        name = "two"

        def score_members(self, prompts, completions):
            words = torch.tensor([float(len(c.split())) for c in completions])
            return torch.stack([words, words + 2.0])

    metrics, _, _ = evaluate_policy(
        policy,
        None,
        tiny_tokenizer,
        PROMPTS,
        gold=WORDS,
        proxy=TwoMembers(),
        num_samples=2,
        max_new_tokens=8,
    )
    assert metrics["proxy_members"][1] == pytest.approx(metrics["proxy_members"][0] + 2.0)
    # Two members 2 apart: population std 1 on every item.
    assert metrics["disagreement"] == pytest.approx(1.0)
    assert metrics["proxy"] == pytest.approx(metrics["proxy_members"][0] + 1.0)
