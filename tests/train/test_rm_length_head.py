"""ODIN (Chen et al. 2024, arXiv 2402.07319) trained end to end: the length head takes the
length, the quality head keeps the preference without it, and the saved model is the quality
head alone."""

from __future__ import annotations

import json
import random

from goodhartlab.core.length_bias import completion_lengths, pearson
from goodhartlab.data import CompletionPair, label_with_gold
from goodhartlab.models.tiny import build_reward_model
from goodhartlab.rewards import ProgrammaticReward, RewardModel
from goodhartlab.train import RMTrainConfig, train_reward_model
from goodhartlab.train.rm_pair_inputs import pair_inputs

# Gold = the number of "great"s; each one is also a word, so the preferred side is longer on
# average and a Bradley-Terry model may read length instead of "great".
GOLD = ProgrammaticReward(lambda p, c: float(c.split().count("great")), name="great", version="1")
FILLER = ["bad", "fine", "slow", "fast", "the", "screen", "is", "and", "very"]


def pairs(n: int, seed: int):
    rng = random.Random(seed)

    def completion(k: int) -> str:
        words = [rng.choice(FILLER) for _ in range(rng.randint(1, 8))] + ["great"] * k
        rng.shuffle(words)
        return " " + " ".join(words)

    raw = []
    for i in range(n):
        k_a, k_b = rng.sample(range(4), 2)
        raw.append(
            CompletionPair(
                prompt="review:", completion_a=completion(k_a), completion_b=completion(k_b), id=i
            )
        )
    return label_with_gold(raw, GOLD, noise=0.0, seed=seed)


def test_length_pair_inputs_are_word_counts(tiny_tokenizer):
    train = pairs(3, seed=0)
    config = RMTrainConfig(objective="odin")
    inputs, _ = pair_inputs(("length",), train, tiny_tokenizer, None, config)
    assert set(inputs) == {"length_chosen", "length_rejected"}
    assert inputs["length_chosen"].tolist() == [float(len(p.chosen.split())) for p in train]


def test_odin_trains_a_length_head_and_saves_the_quality_head(tmp_path, tiny_tokenizer):
    train, held_out = pairs(320, seed=0), pairs(100, seed=1)
    config = RMTrainConfig(
        objective="odin", batch_size=16, lr=1e-3, epochs=3, max_length=32, eval_fraction=0.0
    )
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    result = train_reward_model(
        train, tiny_tokenizer, backbone, config, eval_pairs=held_out, out_dir=tmp_path / "rm"
    )
    heads = result.pair_inputs["length_heads"]
    assert heads["n"] == 200
    assert heads["rho_length"] > 0.8, heads
    assert abs(heads["rho_quality"]) < 0.3, heads
    assert result.metrics["clean_accuracy"] > 0.8  # the quality head alone ranks by "great"

    loaded = RewardModel.from_pretrained(tmp_path / "rm")
    assert loaded.model.config.num_labels == 1
    completions = [p.chosen for p in held_out] + [p.rejected for p in held_out]
    r_q = loaded(["review:"] * len(completions), completions).double()
    rho = pearson(r_q, completion_lengths(completions)).item()
    assert abs(rho - heads["rho_quality"]) < 1e-3  # the saved model is the quality head
    info = json.loads((tmp_path / "rm" / "goodhart_rm.json").read_text())
    assert info["config"]["objective"] == "odin" and info["config"]["length_coef"] == 1.0
    assert info["pair_inputs"]["length_heads"]["rho_length"] == heads["rho_length"]
    assert abs(heads["head_cosine"]) < 0.5  # |W_Q · W_L| is penalized
