"""μ-PPO in the RL loop (Moskovitz et al. 2023): component proxies as an ensemble, held at
thresholds by multipliers, under GRPO and PPO; the multipliers survive a resume."""

from __future__ import annotations

import pytest
import torch
from test_rl_mitigations import (  # the tiny RL fixtures of the mitigations tests
    EVAL_PROMPTS,
    PROMPTS,
    TINY,
    WORDS,
    _run,
)

from goodhartlab.models.tiny import build_causal_lm
from goodhartlab.optimize.rl import RLConfig, run_rl
from goodhartlab.optimize.rundir import read_jsonl
from goodhartlab.rewards.constrained import ConstrainedConfig
from goodhartlab.rewards.pipeline import RewardPipelineConfig


class TwoComponents:
    """Two component proxies: the share of 'e' and the word count."""

    name = "two_components"

    def score_members(self, prompts, completions):
        return torch.tensor(
            [[c.count("e") / 4 for c in completions], [float(len(c.split())) for c in completions]]
        )


# The first far below anything reached, the second far above: one multiplier rises, one falls.
CONSTRAINED = {"thresholds": [100.0, -100.0], "multiplier_lr": 1.0}


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_mu_ppo_trains_and_moves_the_multipliers_toward_the_violated_constraint(
    tmp_path, tiny_tokenizer, algorithm
):
    _, train, moved = _run(
        tmp_path, tiny_tokenizer, algorithm, source=TwoComponents(), steps=2,
        algorithm=algorithm, kl_coef=0.05, reward=RewardPipelineConfig(aggregator="mean"),
        constrained=CONSTRAINED,
    )  # fmt: skip
    assert moved
    assert train[0]["mu_0"] == pytest.approx(0.5)  # σ(0)
    assert train[1]["mu_0"] > 0.5 > train[1]["mu_1"]
    for r in train:
        # r_final = Σ μ_k r_k − (K − Σ μ_k)·β·KL, with r_shaped = Σ μ_k r_k.
        beta_eff = (2 - r["mu_0"] - r["mu_1"]) * 0.05
        assert r["kl_coef"] == pytest.approx(beta_eff, rel=1e-5)
        assert r["r_final"] == pytest.approx(r["r_shaped"] - beta_eff * r["kl"], abs=1e-4)
        assert r["constraint_1"] > 0 > r["constraint_0"]


def test_a_single_reward_is_refused_naming_the_field(tmp_path, tiny_tokenizer):
    with pytest.raises(ValueError, match=r"constrained\.thresholds"):
        _run(tmp_path, tiny_tokenizer, "single", steps=1,
             constrained={"thresholds": [0.0, 0.0]})  # fmt: skip


def test_a_resumed_mu_ppo_run_equals_an_uninterrupted_one(tmp_path, tiny_tokenizer):
    settings = dict(
        kl_coef=0.05, checkpoint_every=3, reward=RewardPipelineConfig(aggregator="mean"),
        constrained=ConstrainedConfig(**CONSTRAINED),
    )  # fmt: skip
    straight, _, _ = _run(tmp_path, tiny_tokenizer, "straight", TwoComponents(), 6, **settings)
    _run(tmp_path, tiny_tokenizer, "resumed", TwoComponents(), 3, **settings)
    resumed = run_rl(
        tmp_path / "resumed",
        policy=build_causal_lm("small", tiny_tokenizer, seed=0),
        tokenizer=tiny_tokenizer,
        reward=TwoComponents(),
        gold=WORDS,
        train_prompts=PROMPTS,
        eval_prompts=EVAL_PROMPTS,
        config=RLConfig(**{**TINY, **settings, "steps": 6}),
        resume=True,
    )
    assert resumed.metrics == straight.metrics
    mus = [
        [r["mu_0"] for r in read_jsonl(tmp_path / n / "train.jsonl")]
        for n in ("straight", "resumed")
    ]
    assert mus[0] == mus[1]
