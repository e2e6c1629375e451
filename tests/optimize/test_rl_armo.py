"""An ArmoRM proxy (backbone + ArmoHead, saved and loaded as every reward model) drives RL: the
loop scores with the gated head through the one reward-model path."""

from __future__ import annotations

import math

import torch
from test_rl import EVAL_PROMPTS, PROMPTS, TINY, WORDS  # the tiny RL world of the loop tests

from goodhartlab.models.tiny import build_causal_lm, build_reward_model
from goodhartlab.optimize.rl import RLConfig, run_rl
from goodhartlab.optimize.rundir import read_jsonl
from goodhartlab.rewards import RewardModel
from goodhartlab.rewards.armo_head import ArmoHead
from goodhartlab.train.rm import save_reward_model


def test_saved_armo_proxy_loads_and_drives_rl(tmp_path, tiny_tokenizer):
    model = build_reward_model("small", tiny_tokenizer, seed=0)
    colon = tiny_tokenizer(":", add_special_tokens=False)["input_ids"][-1]
    torch.manual_seed(0)
    model.score = ArmoHead(
        model.config.hidden_size, ["a", "b", "c"], gate_hidden=8, gate_layers=1,
        temperature=1.0, gate_token_id=colon,
    )  # fmt: skip
    with torch.no_grad():
        model.score.verbosity_penalty.copy_(torch.tensor([0.3, -0.1, 0.0]))
    save_reward_model(
        model, tiny_tokenizer, tmp_path / "rm", {"max_length": 32, "head": model.score.spec()}
    )
    loaded = RewardModel.from_pretrained(tmp_path / "rm")
    assert isinstance(loaded.model.score, ArmoHead)
    completions = [" great phone", " slow", " the screen is nice"]
    prompts = PROMPTS[:3]
    in_memory = RewardModel(model, tiny_tokenizer, max_length=32)
    torch.testing.assert_close(loaded(prompts, completions), in_memory(prompts, completions))

    config = RLConfig(**{**TINY, "steps": 2})
    run_rl(
        tmp_path / "run",
        policy=build_causal_lm("small", tiny_tokenizer, seed=0),
        tokenizer=tiny_tokenizer,
        reward=loaded,
        gold=WORDS,
        train_prompts=PROMPTS,
        eval_prompts=EVAL_PROMPTS,
        config=config,
    )
    train = read_jsonl(tmp_path / "run" / "train.jsonl")
    assert len(train) == 2 and all(math.isfinite(r["r_proxy"]) for r in train)
