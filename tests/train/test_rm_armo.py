"""ArmoRM trained end to end on toy_text pairs: the attribute heads learn the gold's components,
the decorrelated attributes are uncorrelated with verbosity, and the saved model (backbone +
ArmoHead, safetensors, sealed) loads and scores exactly as the trained one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from goodhartlab.data import CompletionPair, label_with_gold
from goodhartlab.models.tiny import build_reward_model
from goodhartlab.rewards import RewardModel
from goodhartlab.rewards.armo_head import ArmoHead
from goodhartlab.testbeds.toy_text.gold import ToyTextGold
from goodhartlab.testbeds.toy_text.language import all_prompts, generate_review
from goodhartlab.train import RMTrainConfig, train_reward_model
from goodhartlab.train.rm_armo import attribute_targets


def toy_text_pairs(n: int, seed: int, noise: float = 0.1):
    rng = np.random.default_rng(seed)
    prompts = all_prompts()
    raw = []
    for i in range(n):
        p = prompts[int(rng.integers(len(prompts)))]
        raw.append(
            CompletionPair(
                prompt=p.text,
                completion_a=" " + generate_review(p, rng),
                completion_b=" " + generate_review(p, rng),
                id=i,
            )
        )
    return label_with_gold(raw, ToyTextGold(), noise=noise, seed=seed)


def test_attribute_targets_are_the_components_plus_noise():
    pairs = toy_text_pairs(40, seed=0)
    names, clean, noisy = attribute_targets(pairs, noise=0.5, seed=0)
    assert names[-1] == "words" and len(names) == 6
    gold = torch.tensor([p.gold_chosen for p in pairs] + [p.gold_rejected for p in pairs])
    # The five components sum to the gold; the noise has std 0.5 x each attribute's std.
    torch.testing.assert_close(clean[:5].sum(0), gold.double(), atol=1e-4, rtol=0)
    ratio = (noisy - clean).std(dim=1) / clean.std(dim=1)
    assert bool(((ratio > 0.35) & (ratio < 0.65)).all()), ratio
    _, _, noiseless = attribute_targets(pairs, noise=0.0, seed=0)
    torch.testing.assert_close(noiseless, clean)


@pytest.mark.slow
def test_armo_trains_saves_and_scores(tmp_path, tiny_tokenizer):
    torch.set_num_threads(1)
    train = toy_text_pairs(300, seed=0)
    held_out = toy_text_pairs(100, seed=1, noise=0.0)
    config = RMTrainConfig(
        objective="armo",
        batch_size=16,
        lr=1e-3,
        epochs=3,
        max_length=64,
        armo_gate_epochs=10,
        eval_fraction=0.0,
    )
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    result = train_reward_model(
        train, tiny_tokenizer, backbone, config, eval_pairs=held_out, out_dir=tmp_path / "rm"
    )
    report = result.pair_inputs["armo"]
    # Stage 1 learned the attributes: verbosity (word count) almost exactly, the gold's
    # largest components well above chance.
    assert report["head_rho_clean"]["words"] > 0.9
    assert report["head_rho_clean"]["coverage"] > 0.5
    # Decorrelation: each r'_k has zero Pearson correlation with r_v on the reference set.
    for rho in report["decorrelated_rho_verbosity"].values():
        assert abs(rho) < 1e-3
    # Stage 2 lowered the Bradley-Terry loss of the gated score on the training pairs.
    assert report["gate_final_loss"] < report["gate_initial_loss"] - 0.01
    assert report["logit_scale"] != 1.0

    info = json.loads((tmp_path / "rm" / "goodhart_rm.json").read_text())
    assert info["head"]["kind"] == "armo"
    loaded = RewardModel.from_pretrained(tmp_path / "rm")
    assert isinstance(loaded.model.score, ArmoHead)
    prompts = [p.prompt for p in held_out[:20]]
    completions = [p.chosen for p in held_out[:20]]
    torch.testing.assert_close(
        loaded(prompts, completions), result.reward_model(prompts, completions)
    )
    # The gating is on the prompt: the same completion scored under two prompts may differ,
    # and a completion's score is one scalar.
    assert loaded(prompts, completions).shape == (20,)


def test_without_decorrelation_the_penalties_are_zero(tiny_tokenizer):
    torch.set_num_threads(1)
    config = RMTrainConfig(
        objective="armo", armo_decorrelate=False, batch_size=16, lr=1e-3, epochs=1,
        max_length=64, armo_gate_epochs=1, eval_fraction=0.0,
    )  # fmt: skip
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    result = train_reward_model(toy_text_pairs(48, seed=0), tiny_tokenizer, backbone, config)
    report = result.pair_inputs["armo"]
    assert set(report["verbosity_penalty"].values()) == {0.0}
    # r'_k = r_k, so the attributes keep their (nonzero) correlation with verbosity.
    assert max(abs(v) for v in report["decorrelated_rho_verbosity"].values()) > 0.05
