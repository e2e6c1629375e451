"""An ArmoRM proxy (backbone + ArmoHead, saved and loaded as every reward model) drives RL: the
loop scores with the gated head through the one reward-model path; and the hacking monitor reads
it as its held-out reward model and its latents."""

from __future__ import annotations

import math

import numpy as np
import torch
from test_rl import EVAL_PROMPTS, PROMPTS, TINY, WORDS  # the tiny RL world of the loop tests

from goodhartlab.models.tiny import build_causal_lm, build_reward_model
from goodhartlab.monitor.history import EvalPoint
from goodhartlab.monitor.live import MonitorConfig
from goodhartlab.optimize.rl import RLConfig, run_rl
from goodhartlab.optimize.rundir import read_jsonl
from goodhartlab.rewards import RewardModel
from goodhartlab.rewards.armo_head import ArmoHead
from goodhartlab.train.rm import save_reward_model


def _saved_armo(tmp_path, tiny_tokenizer):
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
    return model, RewardModel.from_pretrained(tmp_path / "rm")


def test_saved_armo_proxy_loads_and_drives_rl(tmp_path, tiny_tokenizer):
    model, loaded = _saved_armo(tmp_path, tiny_tokenizer)
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


def test_the_monitor_reads_a_saved_armo_model_as_its_held_out_reward(tmp_path, tiny_tokenizer):
    _, armo = _saved_armo(tmp_path, tiny_tokenizer)
    proxy = RewardModel(
        build_reward_model("small", tiny_tokenizer, seed=1), tiny_tokenizer, max_length=32
    )
    config = RLConfig(**{**TINY, "steps": 2, "eval_every": 1, "monitor": MonitorConfig(alarm=None)})
    run_rl(
        tmp_path / "run",
        policy=build_causal_lm("small", tiny_tokenizer, seed=0),
        tokenizer=tiny_tokenizer,
        reward=proxy,
        gold=WORDS,
        train_prompts=PROMPTS,
        eval_prompts=EVAL_PROMPTS,
        config=config,
        monitor_sources={"heldout": armo, "latents": armo},
    )
    records = read_jsonl(tmp_path / "run" / "monitor.jsonl")
    points = [EvalPoint.from_record(r, f"line {i}") for i, r in enumerate(records)]
    assert len(points) == 3
    for p in points:
        assert p.r_heldout is not None and np.isfinite(p.r_heldout).all()
        assert p.latents is not None and p.latents.shape[1] == armo.model.config.hidden_size
        assert len(p.completions) == p.r_heldout.shape[0]
    # The held-out scores are ArmoRM's, not the optimized proxy's.
    assert not np.allclose(points[0].r_heldout, points[0].r_proxy)
