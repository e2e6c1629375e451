"""Reward-model training: it learns a learnable gold, it feeds the scorer's exact token ids,
it is deterministic for a seed, and it saves atomically."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from pydantic import ValidationError

from goodhartlab.data import CompletionPair, PreferencePair, flip_rate, label_with_gold
from goodhartlab.models.tiny import build_causal_lm, build_reward_model
from goodhartlab.rewards import Ensemble, ProgrammaticReward, RewardModel
from goodhartlab.rewards import reward_model as reward_model_module
from goodhartlab.train import (
    RMTrainConfig,
    evaluate_reward_model,
    train_ensemble,
    train_reward_model,
)
from goodhartlab.train import rm as rm_module

NOUNS = ["phone", "laptop", "camera", "book", "movie", "song", "chair", "coffee"]
#: Gold = how often " great" occurs in the completion: learnable from single tokens.
GOLD = ProgrammaticReward(lambda p, c: float(c.split().count("great")), name="great", version="1")
WORDS = ["bad", "fine", "slow", "fast", "cheap", "nice", "the", "screen", "is", "and", "very"]


def synthetic_pairs(n: int, seed: int, noise: float = 0.0) -> list[PreferencePair]:
    """Pairs whose completions differ in the number of " great" (no gold ties)."""
    rng = random.Random(seed)

    def completion(k: int) -> str:
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 7))] + ["great"] * k
        rng.shuffle(words)
        return " " + " ".join(words)

    raw = []
    for i in range(n):
        k_a, k_b = rng.sample(range(3), 2)
        prompt = f"review of a {rng.choice(NOUNS)}:"
        raw.append(
            CompletionPair(
                prompt=prompt, completion_a=completion(k_a), completion_b=completion(k_b), id=i
            )
        )
    return label_with_gold(raw, GOLD, noise=noise, seed=seed)


FAST = RMTrainConfig(batch_size=16, lr=1e-3, epochs=1, max_length=32, eval_fraction=0.0)


def test_training_learns_a_learnable_gold(tmp_path, tiny_tokenizer):
    train = synthetic_pairs(320, seed=0, noise=0.1)
    held_out = synthetic_pairs(100, seed=1)
    config = RMTrainConfig(batch_size=16, lr=1e-3, epochs=4, max_length=32, seed=0)
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    result = train_reward_model(
        train,
        tiny_tokenizer,
        backbone,
        config,
        eval_pairs=held_out,
        out_dir=tmp_path / "rm",
        progress=False,
    )
    before, after = result.history[0], result.history[-1]
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3, 4]
    assert after["eval_loss"] < before["eval_loss"] - 0.3, result.history
    # Chance is 0.5; on 100 held-out pairs 0.9 is 8 standard errors above it.
    assert after["eval_accuracy"] >= 0.9 > before["eval_accuracy"], result.history
    assert result.metrics["accuracy"] == after["eval_accuracy"]
    assert result.history[1]["train_loss"] > result.history[-1]["train_loss"]

    # Saved: safetensors weights, tokenizer, goodhart_rm.json; reloads to the same scores.
    path = result.path
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    info = json.loads((path / "goodhart_rm.json").read_text())
    assert info["config"]["lr"] == 1e-3 and info["max_length"] == 32
    assert info["metrics"]["accuracy"] == after["eval_accuracy"]
    assert info["num_parameters"] == result.num_parameters > 0
    assert info["num_train_pairs"] == 320 and info["num_eval_pairs"] == 100
    loaded = RewardModel.from_pretrained(path)
    assert loaded.max_length == 32
    prompts, completions = [p.prompt for p in held_out], [p.chosen for p in held_out]
    torch.testing.assert_close(
        loaded(prompts, completions), result.reward_model(prompts, completions)
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rm"]  # no temp dirs left

    # The caller's backbone is not modified.
    fresh = build_reward_model("small", tiny_tokenizer, seed=0)
    for a, b in zip(backbone.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)


def _unpadded(input_ids: torch.Tensor, mask: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(ids[m.bool()].tolist()) for ids, m in zip(input_ids, mask, strict=True)]


def test_trainer_feeds_exactly_the_scorers_token_ids(monkeypatch, tiny_tokenizer):
    pairs = synthetic_pairs(12, seed=3)
    # One pair with a prompt long enough to be truncated at max_length=8.
    pairs.append(pairs[0].model_copy(update={"prompt": "review of a phone: " * 4}))
    seen: dict[str, list[tuple[int, ...]]] = {"train": [], "score": []}

    def recorder(kind, fn):
        def wrapped(model, input_ids, attention_mask):
            seen[kind] += _unpadded(input_ids, attention_mask)
            return fn(model, input_ids, attention_mask)

        return wrapped

    original = reward_model_module.reward_at_last_token
    monkeypatch.setattr(rm_module, "reward_at_last_token", recorder("train", original))
    monkeypatch.setattr(reward_model_module, "reward_at_last_token", recorder("score", original))
    config = FAST.model_copy(update={"max_length": 8, "batch_size": 5})
    result = train_reward_model(
        pairs, tiny_tokenizer, build_reward_model("small", tiny_tokenizer), config, progress=False
    )
    prompts = [p.prompt for p in pairs]
    result.reward_model.score(
        prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs]
    )
    assert len(seen["train"]) == 2 * len(pairs)
    assert sorted(seen["train"]) == sorted(seen["score"])
    assert max(len(s) for s in seen["train"]) == 8


def test_same_seed_same_model_other_seed_other_model(tiny_tokenizer):
    pairs = synthetic_pairs(32, seed=4)
    backbone = build_reward_model("small", tiny_tokenizer)
    prompts, completions = [p.prompt for p in pairs], [p.chosen for p in pairs]

    def run(seed):
        cfg = FAST.model_copy(update={"seed": seed})
        return train_reward_model(pairs, tiny_tokenizer, backbone, cfg, progress=False)

    a, b, c = run(0), run(0), run(1)
    torch.testing.assert_close(
        a.reward_model(prompts, completions), b.reward_model(prompts, completions), atol=0, rtol=0
    )
    assert not torch.allclose(
        a.reward_model(prompts, completions), c.reward_model(prompts, completions)
    )


def test_backbone_from_a_causal_lm_directory(tmp_path, tiny_tokenizer):
    lm = build_causal_lm("small", tiny_tokenizer, seed=7)
    lm.save_pretrained(tmp_path / "lm")
    pairs = synthetic_pairs(16, seed=5)
    cfg = FAST.model_copy(update={"lr": 1e-12, "lr_schedule": "constant"})  # ~ no update
    r1 = train_reward_model(pairs, tiny_tokenizer, str(tmp_path / "lm"), cfg, progress=False)
    r2 = train_reward_model(pairs, tiny_tokenizer, str(tmp_path / "lm"), cfg, progress=False)
    m1 = r1.reward_model.model
    # The body is the pretrained LM's; the head is drawn from the seed, the same each time.
    torch.testing.assert_close(m1.model.embed_tokens.weight, lm.model.embed_tokens.weight)
    torch.testing.assert_close(m1.score.weight, r2.reward_model.model.score.weight, atol=0, rtol=0)
    assert m1.score.weight.std().item() == pytest.approx(lm.config.initializer_range, rel=0.3)
    assert r1.metrics == {} and r1.history == [
        {"epoch": 0},
        {"epoch": 1, "train_loss": r1.history[1]["train_loss"]},
    ]


def test_evaluate_gold_on_noisy_labels_recovers_clean_accuracy():
    pairs = synthetic_pairs(400, seed=6, noise=0.25)
    m = evaluate_reward_model(GOLD, pairs)
    # The gold agrees with every clean label and disagrees exactly with the flipped ones.
    assert m["clean_accuracy"] == 1.0
    assert m["accuracy"] == pytest.approx(1.0 - flip_rate(pairs))
    assert m["n"] == 400


def test_evaluate_calibration_of_the_forecast_against_clean_labels():
    # r(" a") − r(" b") = ln 3 on both pairs, so σ(gap) = 0.75 on both; the second pair's label
    # was flipped, so the clean outcome is 1 then 0. Brier: (0.25² + 0.75²) / 2 = 0.3125; ECE:
    # one bin, confidence 0.75, correct 1/2: |0.5 − 0.75| = 0.25.
    rewards = {" a": math.log(3.0), " b": 0.0}
    source = ProgrammaticReward(lambda p, c: rewards[c], name="table", version="1")
    pairs = [
        PreferencePair(prompt="q", chosen=" a", rejected=" b", meta={"flipped": False}),
        PreferencePair(prompt="q", chosen=" a", rejected=" b", meta={"flipped": True}),
    ]
    m = evaluate_reward_model(source, pairs)
    assert m["clean_brier"] == pytest.approx(0.3125)
    assert m["clean_ece"] == pytest.approx(0.25)
    assert m["clean_accuracy"] == 0.5


def test_evaluate_strict_accuracy_and_subsets():
    pairs = [
        PreferencePair(prompt="q", chosen=" a", rejected=" b", subset="x"),
        PreferencePair(prompt="q", chosen=" c", rejected=" d", subset="y"),
    ]
    constant = ProgrammaticReward(lambda p, c: 1.0, name="one", version="1")
    m = evaluate_reward_model(constant, pairs)
    # Ties are wrong; −log σ(0) = log 2.
    assert m["accuracy"] == 0.0 and m["loss"] == pytest.approx(math.log(2))
    assert m["accuracy_by_subset"] == {"x": 0.0, "y": 0.0}
    assert "clean_accuracy" not in m and "clean_ece" not in m


def test_train_ensemble_members_differ_and_load(tmp_path, tiny_tokenizer):
    pairs = synthetic_pairs(40, seed=8)
    cfg = FAST.model_copy(update={"eval_fraction": 0.25})
    out = train_ensemble(
        pairs,
        tiny_tokenizer,
        build_reward_model("small", tiny_tokenizer),
        [0, 1],
        cfg,
        tmp_path / "ens",
        progress=False,
    )
    assert [p.name for p in out.paths] == ["member_0", "member_1"]
    assert len(out.metrics) == 2 and all(m["n"] == 10 for m in out.metrics)  # shared split
    index = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert [m["seed"] for m in index["members"]] == [0, 1]
    ens = Ensemble.from_dirs(out.paths)
    r = ens.score_members([p.prompt for p in pairs], [p.chosen for p in pairs])
    assert r.shape == (2, 40) and not torch.allclose(r[0], r[1])
    with pytest.raises(ValueError, match="one per seed"):
        train_ensemble(pairs, tiny_tokenizer, ["a", "b", "c"], [0, 1], cfg, tmp_path / "x")


def test_margin_requires_pair_margins(tiny_tokenizer):
    pairs = synthetic_pairs(4, seed=9)
    with pytest.raises(ValueError, match="margin"):
        train_reward_model(
            pairs,
            tiny_tokenizer,
            build_reward_model("small", tiny_tokenizer),
            FAST.model_copy(update={"margin": True}),
            progress=False,
        )


def test_config_errors_name_the_field():
    with pytest.raises(ValidationError, match="label_smoothing"):
        RMTrainConfig(label_smoothing=0.7)
    with pytest.raises(ValidationError, match="batch_sizee"):
        RMTrainConfig(batch_sizee=3)


def test_save_replaces_only_reward_model_dirs_and_fails_cleanly(
    monkeypatch, tmp_path, tiny_tokenizer
):
    pairs = synthetic_pairs(8, seed=10)
    backbone = build_reward_model("small", tiny_tokenizer)
    other = tmp_path / "not_an_rm"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a reward-model directory"):
        train_reward_model(pairs, tiny_tokenizer, backbone, FAST, out_dir=other, progress=False)
    assert (other / "precious.txt").read_text() == "keep me"

    target = tmp_path / "rm"
    train_reward_model(pairs, tiny_tokenizer, backbone, FAST, out_dir=target, progress=False)
    before = (target / "model.safetensors").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tiny_tokenizer, "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        train_reward_model(
            pairs,
            tiny_tokenizer,
            backbone,
            FAST.model_copy(update={"seed": 1}),
            out_dir=target,
            progress=False,
        )
    assert (target / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_an_rm", "rm"]
