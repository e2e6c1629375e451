"""μ-PPO and ξ-PPO in the RL loop (Moskovitz et al. 2023): component proxies as an ensemble, held at
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


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_xi_ppo_gives_the_component_above_its_threshold_a_negative_multiplier(
    tmp_path, tiny_tokenizer, algorithm
):
    # ξ-PPO (kind "eq"): the multipliers start at tanh(0) = 0 (the whole weight K on the KL
    # reward) and take either sign; the component far above its threshold gets ξ < 0, which
    # μ-PPO's σ(λ) never gives.
    _, train, _ = _run(
        tmp_path, tiny_tokenizer, algorithm, source=TwoComponents(), steps=3,
        algorithm=algorithm, kl_coef=0.05, reward=RewardPipelineConfig(aggregator="mean"),
        constrained={**CONSTRAINED, "kind": "eq"},
    )  # fmt: skip
    assert (train[0]["mu_0"], train[0]["mu_1"]) == (0.0, 0.0)
    assert train[0]["kl_coef"] == pytest.approx(2 * 0.05)
    for r in train[1:]:
        assert r["mu_0"] > 0 > r["mu_1"]
    for r in train:
        beta_eff = (2 - r["mu_0"] - r["mu_1"]) * 0.05
        assert r["kl_coef"] == pytest.approx(beta_eff, rel=1e-5)
        assert r["r_final"] == pytest.approx(r["r_shaped"] - beta_eff * r["kl"], abs=1e-4)
    # Step 1 scores with ξ = 0: no component in the reward, r_shaped = 0.
    assert train[0]["r_shaped"] == pytest.approx(0.0, abs=1e-6)


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


# NM-PPO: a Nelder-Mead search over θ, told the evaluation's gold every search_every steps.
NM = {"thresholds": [0.5, 2.0], "search": "nelder_mead", "search_every": 3, "search_scale": 1.0}


def test_nm_ppo_moves_the_thresholds_after_each_stretch_of_search_every_steps(
    tmp_path, tiny_tokenizer
):
    result, train, moved = _run(
        tmp_path, tiny_tokenizer, "nm", TwoComponents(), 6, kl_coef=0.05,
        reward=RewardPipelineConfig(aggregator="mean"), constrained=NM,
    )  # fmt: skip
    assert moved
    # The initial simplex is θ0, θ0 + e_0, θ0 + e_1 (scale 1): steps 1-3 train at the first
    # vertex, the evaluation at step 3 tells its gold, steps 4-6 train at the second.
    thetas = [(r["theta_0"], r["theta_1"]) for r in train]
    assert thetas[:3] == [(0.5, 2.0)] * 3
    assert thetas[3:] == [(1.5, 2.0)] * 3
    lines = {m["step"]: m for m in result.metrics}
    assert "theta_0" in lines[0] and lines[0]["search_evals"] == 0  # step 0 tells nothing
    assert (lines[3]["theta_0"], lines[3]["search_evals"]) == (0.5, 1)
    assert (lines[6]["theta_0"], lines[6]["search_evals"]) == (1.5, 2)


def test_a_resumed_nm_ppo_run_equals_an_uninterrupted_one(tmp_path, tiny_tokenizer):
    settings = dict(
        kl_coef=0.05, checkpoint_every=3, reward=RewardPipelineConfig(aggregator="mean"),
        constrained=ConstrainedConfig(**NM),
    )  # fmt: skip
    straight, train, _ = _run(tmp_path, tiny_tokenizer, "straight", TwoComponents(), 9, **settings)
    _run(tmp_path, tiny_tokenizer, "resumed", TwoComponents(), 6, **settings)
    resumed = run_rl(
        tmp_path / "resumed",
        policy=build_causal_lm("small", tiny_tokenizer, seed=0),
        tokenizer=tiny_tokenizer,
        reward=TwoComponents(),
        gold=WORDS,
        train_prompts=PROMPTS,
        eval_prompts=EVAL_PROMPTS,
        config=RLConfig(**{**TINY, **settings, "steps": 9}),
        resume=True,
    )
    assert resumed.metrics == straight.metrics
    # Steps 7-9 train at the third vertex θ0 + e_1, reached only through the replayed search.
    assert [(r["theta_0"], r["theta_1"]) for r in train[6:]] == [(0.5, 3.0)] * 3
    untimed = [
        [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]
        for rows in (read_jsonl(tmp_path / "resumed" / "train.jsonl"), train)
    ]
    assert untimed[0] == untimed[1]


def test_a_search_every_off_the_evaluation_grid_is_refused():
    with pytest.raises(ValueError, match=r"constrained\.search_every.*eval_every \(3\)"):
        RLConfig(**TINY, constrained={**NM, "search_every": 4})
