"""Reward-model objectives of issue 14, trained end to end on a tiny learnable gold: the ordinal
model orders grades, the noise-robust one catches flipped labels far above chance, and both
save a plain one-output RewardModel."""

from __future__ import annotations

import json
import random

import pytest
import torch

from goodhartlab.data import CompletionPair, PreferencePair, label_with_gold
from goodhartlab.models.tiny import build_reward_model
from goodhartlab.rewards import ProgrammaticReward, RewardModel
from goodhartlab.train import RMTrainConfig, evaluate_reward_model, train_reward_model
from goodhartlab.train.rm_pair_inputs import pair_inputs

#: Gold = how often "great" occurs: learnable from single tokens, margins of 1 or 2.
GOLD = ProgrammaticReward(lambda p, c: float(c.split().count("great")), name="great", version="1")
WORDS = ["bad", "fine", "slow", "fast", "cheap", "nice", "the", "screen", "is", "and", "very"]


def synthetic_pairs(n: int, seed: int, noise: float = 0.0) -> list[PreferencePair]:
    rng = random.Random(seed)

    def completion(k: int) -> str:
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 7))] + ["great"] * k
        rng.shuffle(words)
        return " " + " ".join(words)

    raw = []
    for i in range(n):
        k_a, k_b = rng.sample(range(3), 2)
        raw.append(
            CompletionPair(
                prompt="review:", completion_a=completion(k_a), completion_b=completion(k_b), id=i
            )
        )
    return label_with_gold(raw, GOLD, noise=noise, seed=seed)


def _mean_gap_by_grade(rm: RewardModel, pairs: list[PreferencePair]) -> dict[int, float]:
    gaps: dict[int, list[float]] = {}
    prompts = [p.prompt for p in pairs]
    r = rm(prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs])
    for p, gap in zip(pairs, (r[: len(pairs)] - r[len(pairs) :]).tolist(), strict=True):
        gaps.setdefault(round(abs(p.gold_chosen - p.gold_rejected)), []).append(gap)
    return {g: sum(v) / len(v) for g, v in sorted(gaps.items())}


def test_ordinal_objective_learns_and_orders_the_grades(tmp_path, tiny_tokenizer):
    train = synthetic_pairs(320, seed=0, noise=0.1)
    held_out = synthetic_pairs(100, seed=1)
    # Gold margins are 1 or 2; the edge 1.5 makes them grades 1 and 2.
    config = RMTrainConfig(
        objective="ordinal",
        grade_edges=[1.5],
        batch_size=16,
        lr=1e-3,
        epochs=4,
        max_length=32,
        eval_fraction=0.0,
    )
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    result = train_reward_model(
        train, tiny_tokenizer, backbone, config, eval_pairs=held_out, out_dir=tmp_path / "rm"
    )
    assert result.history[0]["eval_accuracy"] < 0.7
    assert result.metrics["clean_accuracy"] > 0.9
    assert (
        result.pair_inputs["grades"]["counts"][0] > 0
        and result.pair_inputs["grades"]["counts"][1] > 0
    )

    loaded = RewardModel.from_pretrained(tmp_path / "rm")
    assert loaded.model.config.num_labels == 1
    gaps = _mean_gap_by_grade(loaded, held_out)
    # A pair two "great"s apart must be scored further apart than a pair one apart.
    assert gaps[2] > 1.5 * gaps[1] > 0
    info = json.loads((tmp_path / "rm" / "goodhart_rm.json").read_text())
    assert info["config"]["objective"] == "ordinal"
    assert info["objective_version"] == "1"
    assert info["pair_inputs"]["grades"]["edges"] == [1.5]


def test_noise_robust_objective_catches_flipped_labels_far_above_chance(tmp_path, tiny_tokenizer):
    train = synthetic_pairs(320, seed=0, noise=0.3)
    held_out = synthetic_pairs(100, seed=1)
    n_flipped = sum(p.flipped for p in train)
    config = RMTrainConfig(
        objective="noise_robust",
        robust_members=2,
        suspect_fraction=0.25,
        batch_size=16,
        lr=1e-3,
        epochs=4,
        max_length=32,
        eval_fraction=0.0,
    )
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    result = train_reward_model(
        train, tiny_tokenizer, backbone, config, eval_pairs=held_out, out_dir=tmp_path / "rm"
    )
    detection = result.pair_inputs["strength"]["detection"]
    assert detection["n_flipped"] == n_flipped
    assert detection["n_suspect"] == 80  # round(0.25 · 320)
    assert detection["chance_precision"] == pytest.approx(n_flipped / 320)
    # Chance is the flip rate (~0.3); out-of-fold strength finds mostly flipped labels.
    assert detection["precision"] > 0.7
    assert detection["recall"] > 0.5
    s = result.pair_inputs["strength"]
    assert s["strength_mean_flipped"] < 0 < s["strength_mean_clean"]
    assert result.metrics["clean_accuracy"] > 0.9

    loaded = RewardModel.from_pretrained(tmp_path / "rm")
    assert loaded.model.config.num_labels == 1
    assert evaluate_reward_model(loaded, held_out)["clean_accuracy"] == pytest.approx(
        result.metrics["clean_accuracy"]
    )
    info = json.loads((tmp_path / "rm" / "goodhart_rm.json").read_text())
    assert info["pair_inputs"]["strength"]["detection"]["precision"] == detection["precision"]


def test_pair_inputs_strength_is_deterministic_and_leaves_bradley_terry_alone(tiny_tokenizer):
    train = synthetic_pairs(64, seed=2, noise=0.2)
    config = RMTrainConfig(
        objective="noise_robust", robust_members=2, batch_size=16, max_length=32, epochs=1
    )
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    a, _ = pair_inputs(("strength", "suspect"), train, tiny_tokenizer, backbone, config)
    b, _ = pair_inputs(("strength", "suspect"), train, tiny_tokenizer, backbone, config)
    torch.testing.assert_close(a["strength"], b["strength"])
    assert a["suspect"].sum() == round(0.1 * 64)
    assert pair_inputs((), train, tiny_tokenizer, backbone, config) == ({}, {})


def test_a_graded_objective_without_gold_or_grades_names_the_pair(tiny_tokenizer):
    pairs = [
        PreferencePair(prompt="p", chosen=" a great", rejected=" b", id=f"x{i}") for i in range(8)
    ]
    config = RMTrainConfig(objective="ordinal", max_length=32, eval_fraction=0.0)
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    with pytest.raises(ValueError, match=r"id 'x0'.*gold_chosen"):
        train_reward_model(pairs, tiny_tokenizer, backbone, config, progress=False)
