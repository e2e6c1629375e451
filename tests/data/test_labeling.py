"""Gold labelling: argmax / Bradley-Terry rules, label noise at the stated rate, audit trail."""

from __future__ import annotations

import math

import pytest
import torch

from goodhartlab.data import (
    CompletionPair,
    PreferencePair,
    flip_rate,
    label_with_gold,
    sample_pairs,
)
from goodhartlab.rewards import ProgrammaticReward

# Gold = the number written in the completion, so every pair's gold is known exactly.
GOLD = ProgrammaticReward(lambda p, c: float(c.split()[0]), name="number", version="3")


def numbered_pairs(n: int, gap: float = 1.0) -> list[CompletionPair]:
    # a's gold alternates above / below b's so position carries no information.
    return [
        CompletionPair(
            prompt=f"q{i}:",
            completion_a=f" {i + (gap if i % 2 else -gap)}",
            completion_b=f" {i}",
            id=i,
            meta={"origin": "test"},
        )
        for i in range(n)
    ]


def binomial_bound(n: int, p: float, z: float = 4.0) -> float:
    """Half-width of a z-sigma interval for a Binomial(n, p) fraction (fails w.p. ≈ 6e-5)."""
    return z * math.sqrt(p * (1 - p) / n)


def test_argmax_without_noise_picks_higher_gold():
    labelled = label_with_gold(numbered_pairs(50), GOLD, rule="argmax", noise=0.0, seed=1)
    assert all(p.gold_chosen > p.gold_rejected for p in labelled)
    assert all(float(p.chosen) == p.gold_chosen for p in labelled)
    assert [p.id for p in labelled] == list(range(50))
    meta = labelled[0].meta
    assert meta["origin"] == "test" and meta["rule"] == "argmax"
    assert (meta["gold_name"], meta["gold_version"]) == ("number", "3")
    assert flip_rate(labelled) == 0.0


def test_noise_rate_within_binomial_bound_and_audit_trail_consistent():
    n, noise = 4000, 0.25
    labelled = label_with_gold(numbered_pairs(n), GOLD, noise=noise, seed=0)
    rate = flip_rate(labelled)
    # Flips are Bernoulli(0.25) per pair. A wrong rate (e.g. 0.125 from re-drawing a quarter
    # of labels at random, or 0.5) lies > 10 bounds away.
    assert abs(rate - noise) < binomial_bound(n, noise), rate
    # Audit: with argmax and no ties, a pair is flipped iff its chosen has the lower gold.
    for p in labelled:
        assert p.flipped == (p.gold_chosen < p.gold_rejected)
    # Flipping back recovers the clean argmax labels.
    assert all(p.clean().gold_chosen > p.clean().gold_rejected for p in labelled)


def test_noise_extremes():
    pairs = numbered_pairs(20)
    assert flip_rate(label_with_gold(pairs, GOLD, noise=1.0)) == 1.0
    assert flip_rate(label_with_gold(pairs, GOLD, noise=0.0)) == 0.0


def test_deterministic_for_a_seed():
    pairs = numbered_pairs(200)
    a = label_with_gold(pairs, GOLD, noise=0.25, seed=7)
    b = label_with_gold(pairs, GOLD, noise=0.25, seed=7)
    c = label_with_gold(pairs, GOLD, noise=0.25, seed=8)
    assert a == b
    assert [p.flipped for p in a] != [p.flipped for p in c]


def test_ties_broken_by_coin_and_recorded():
    n = 2000
    pairs = [CompletionPair(prompt="q", completion_a=" 1 a", completion_b=" 1 b") for _ in range(n)]
    labelled = label_with_gold(pairs, GOLD, seed=3)
    assert all(p.meta["tie"] for p in labelled)
    frac_a = sum(p.chosen == " 1 a" for p in labelled) / n
    assert abs(frac_a - 0.5) < binomial_bound(n, 0.5)


def test_bradley_terry_rule_samples_with_sigmoid_of_gap():
    n = 4000
    labelled = label_with_gold(numbered_pairs(n, gap=1.0), GOLD, rule="bradley_terry", seed=0)
    # P(higher-gold answer chosen) = σ(1) = 0.7311; argmax would give 1.0.
    frac = sum(p.gold_chosen > p.gold_rejected for p in labelled) / n
    p = 1 / (1 + math.exp(-1.0))
    assert abs(frac - p) < binomial_bound(n, p)
    assert flip_rate(labelled) == 0.0


def test_preference_pairs_are_relabelled():
    pair = PreferencePair(prompt="q", chosen=" 1", rejected=" 5", subset="s")
    (out,) = label_with_gold([pair], GOLD)
    assert (out.chosen, out.rejected, out.subset) == (" 5", " 1", "s")


def test_bad_gold_outputs_and_arguments():
    pairs = numbered_pairs(3)
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        label_with_gold(pairs, lambda p, c: torch.zeros(5))
    with pytest.raises(ValueError, match="finite"):
        label_with_gold(pairs, lambda p, c: torch.full((len(p),), math.nan))
    with pytest.raises(ValueError, match="rule"):
        label_with_gold(pairs, GOLD, rule="max")
    with pytest.raises(ValueError, match="noise"):
        label_with_gold(pairs, GOLD, noise=1.5)


def test_sample_pairs_two_completions_per_prompt(tiny_tokenizer):
    from goodhartlab.models.tiny import build_causal_lm

    policy = build_causal_lm("small", tiny_tokenizer, seed=0)
    prompts = ["review of a phone:", "review of a book:", "review of a song:"]
    kwargs = dict(max_new_tokens=6, temperature=1.0, seed=5)
    pairs = sample_pairs(policy, tiny_tokenizer, prompts, **kwargs)
    assert [p.prompt for p in pairs] == prompts
    assert [p.id for p in pairs] == [0, 1, 2]
    assert pairs[0].meta["sampling"]["seed"] == 5
    # Untrained policy over ~360 tokens: the two samples of a prompt differ.
    assert all(p.completion_a != p.completion_b for p in pairs)
    assert sample_pairs(policy, tiny_tokenizer, prompts, **kwargs) == pairs
