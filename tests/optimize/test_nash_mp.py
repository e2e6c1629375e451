"""Nash-MP in the RL loop (optimize/nash_mp.py, registry 'rl_algorithm' nash_mp)."""

from __future__ import annotations

import math

import pytest
import torch
from test_rl import E_COUNT, EVAL_PROMPTS, PROMPTS, TINY, WORDS

from goodhartlab.models.tiny import build_causal_lm
from goodhartlab.optimize import nash_mp
from goodhartlab.optimize.rl import RLConfig, run_rl
from goodhartlab.optimize.rundir import read_jsonl
from goodhartlab.rewards.pipeline import RewardPipelineConfig


def _run(tmp_path, tokenizer, name, reward=E_COUNT, **overrides):
    policy = build_causal_lm("small", tokenizer, seed=0)
    before = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    config = RLConfig(**{**TINY, "algorithm": "nash_mp", "steps": 2, "eval_every": 2, **overrides})
    result = run_rl(
        tmp_path / name,
        policy=policy,
        tokenizer=tokenizer,
        reward=reward,
        gold=WORDS,
        train_prompts=PROMPTS,
        eval_prompts=EVAL_PROMPTS,
        config=config,
    )
    moved = any(not torch.equal(before[k], v) for k, v in result.policy.state_dict().items())
    return result, read_jsonl(tmp_path / name / "train.jsonl"), moved


@pytest.mark.parametrize(
    "overrides",
    [dict(kl_coef=0.05, kl_in="loss"), dict(kl_coef=0.05, epochs=2, minibatch_size=16)],
    ids=["kl-loss", "kl-reward-minibatches"],
)
def test_two_nash_mp_steps_train_and_measure_gold(tmp_path, tiny_tokenizer, overrides):
    result, train, moved = _run(tmp_path, tiny_tokenizer, "run", **overrides)
    assert len(train) == 2 and moved
    assert all(math.isfinite(r["loss"]) and r["kl"] > -1.0 for r in train)
    assert [m["step"] for m in result.metrics] == [0, 2]
    assert all(math.isfinite(m["gold"]) for m in result.metrics)
    if overrides.get("epochs", 1) > 1:  # the anchor KL acts after the first minibatch
        assert any(r["prox_kl"] > 0 for r in train)


def test_opponents_come_from_the_extrapolated_policy_and_the_update_from_the_anchor(
    tmp_path, tiny_tokenizer, monkeypatch
):
    # One step, one update per proximal step: the extrapolation's loss is evaluated at θ_k,
    # the opponents are sampled at θ_{k+1/2} ≠ θ_k, the update's loss at θ_k again (θ and
    # AdamW's state put back), and the proxy scores B·G' = 4 × 3 opponents.
    seen, opp_rows = [], []
    real_loss, real_opponents = nash_mp.nash_mp_loss, nash_mp._opponents

    def recording_loss(logp, *args, **kwargs):
        seen.append(("loss", _flat_params()))
        return real_loss(logp, *args, **kwargs)

    def recording_opponents(run, prompts, step):
        seen.append(("opponents", _flat_params()))
        r = real_opponents(run, prompts, step)
        opp_rows.append(r.shape[0])
        return r

    policy_ref = {}

    def _flat_params():
        return torch.cat([p.detach().flatten().clone() for p in policy_ref["p"].parameters()])

    monkeypatch.setattr(nash_mp, "nash_mp_loss", recording_loss)
    monkeypatch.setattr(nash_mp, "_opponents", recording_opponents)
    policy = build_causal_lm("small", tiny_tokenizer, seed=0)
    policy_ref["p"] = policy
    theta_0 = torch.cat([p.detach().flatten().clone() for p in policy.parameters()])
    run_rl(
        tmp_path / "run", policy=policy, tokenizer=tiny_tokenizer, reward=E_COUNT, gold=WORDS,
        train_prompts=PROMPTS, eval_prompts=EVAL_PROMPTS,
        config=RLConfig(**{**TINY, "algorithm": "nash_mp", "steps": 1, "eval_every": 1,
                           "nash_opponents": 3}),
    )  # fmt: skip
    assert [kind for kind, _ in seen] == ["loss", "opponents", "loss"]
    (_, at_extrapolation), (_, at_opponents), (_, at_update) = seen
    assert torch.equal(at_extrapolation, theta_0) and torch.equal(at_update, theta_0)
    assert not torch.equal(at_opponents, theta_0)
    assert opp_rows == [TINY["prompts_per_step"] * 3]
    final = torch.cat([p.detach().flatten() for p in policy.parameters()])
    assert not torch.equal(final, theta_0)


def test_opponents_are_seeded_so_a_rerun_is_identical(tmp_path, tiny_tokenizer):
    a, _, _ = _run(tmp_path, tiny_tokenizer, "a")
    b, _, _ = _run(tmp_path, tiny_tokenizer, "b")
    assert a.metrics == b.metrics


def test_shaping_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"reward\.shaping"):
        RLConfig(algorithm="nash_mp", reward=RewardPipelineConfig(shaping="par"))
    with pytest.raises(ValueError, match="group_size"):
        RLConfig(algorithm="nash_mp", group_size=1)


def test_nash_mp_raises_the_proxy(tmp_path, tiny_tokenizer):
    # The Bradley-Terry payoff is monotone in the proxy within a group, so beating the
    # extrapolated policy's samples means more "e"s (as GRPO's test in test_rl.py).
    result, train, _ = _run(tmp_path, tiny_tokenizer, "run", steps=12, eval_every=4)
    first = sum(r["r_proxy"] for r in train[:3]) / 3
    last = sum(r["r_proxy"] for r in train[-3:]) / 3
    assert last > first + 0.3, (first, last)
    assert result.metrics[-1]["proxy"] > result.metrics[0]["proxy"]


def test_a_resumed_nash_mp_run_equals_an_uninterrupted_one(tmp_path, tiny_tokenizer):
    settings = dict(kl_coef=0.05, steps=4, checkpoint_every=2)
    straight, _, _ = _run(tmp_path, tiny_tokenizer, "straight", **settings)
    _run(tmp_path, tiny_tokenizer, "resumed", **{**settings, "steps": 2})
    resumed = run_rl(
        tmp_path / "resumed",
        policy=build_causal_lm("small", tiny_tokenizer, seed=0),
        tokenizer=tiny_tokenizer,
        reward=E_COUNT,
        gold=WORDS,
        train_prompts=PROMPTS,
        eval_prompts=EVAL_PROMPTS,
        config=RLConfig(**{**TINY, "algorithm": "nash_mp", "eval_every": 2, **settings}),
        resume=True,
    )
    assert resumed.metrics == straight.metrics


def test_without_extrapolation_no_opponents_are_sampled(tmp_path, tiny_tokenizer, monkeypatch):
    def no_opponents(*args):
        raise AssertionError("nash_extrapolate=False samples no opponents")

    monkeypatch.setattr(nash_mp, "_opponents", no_opponents)
    _, train, moved = _run(tmp_path, tiny_tokenizer, "md", nash_extrapolate=False)
    assert len(train) == 2 and moved


# -- against a pairwise preference model (rewards.pairwise) -------------------------------


@pytest.fixture
def pairwise_model(tiny_tokenizer):
    """An untrained pairwise preference model, its head scaled up so that its preferences are
    far from 1/2."""
    from goodhartlab.models.tiny import build_reward_model
    from goodhartlab.rewards import PairwisePreferenceModel

    model = build_reward_model("small", tiny_tokenizer, seed=1)
    with torch.no_grad():
        model.score.weight.mul_(100.0)
    return PairwisePreferenceModel(model, tiny_tokenizer, max_length=32)


def test_the_payoffs_are_the_pairwise_models_preferences(
    tmp_path, tiny_tokenizer, pairwise_model, monkeypatch
):
    # One step, β = 0 (no KL term in the payoff): the extrapolation's payoff is each
    # completion's preference over the rest of its group, (1/(G − 1)) Σ_{j≠i} P(y_i ≻ y_j), the
    # update's its preference over the opponents, (1/G') Σ_j P(y_i ≻ y'_j), each P read from
    # the model one pair at a time here; no Bradley-Terry score is involved.
    payoffs, seen = [], {}
    real_advantages = nash_mp.group_normalized_advantages
    real_payoff = nash_mp._pairwise_update_payoff

    def recording_advantages(r, G, **kwargs):
        payoffs.append(r.clone())
        return real_advantages(r, G, **kwargs)

    def recording_payoff(run, prompts, completions, opponents):
        seen.update(prompts=prompts, completions=completions, opponents=opponents)
        return real_payoff(run, prompts, completions, opponents)

    monkeypatch.setattr(nash_mp, "group_normalized_advantages", recording_advantages)
    monkeypatch.setattr(nash_mp, "_pairwise_update_payoff", recording_payoff)
    G, G_opp = TINY["group_size"], 3
    _run(tmp_path, tiny_tokenizer, "pw", reward=pairwise_model, steps=1, eval_every=1,
         nash_opponents=G_opp)  # fmt: skip
    extrapolation, update = payoffs
    prompts, mine, theirs = seen["prompts"], seen["completions"], seen["opponents"]
    assert len(mine) == len(prompts) * G and len(theirs) == len(prompts) * G_opp

    def p(x, a, b):
        return float(pairwise_model.preference([x], [a], [b]))

    for b, x in enumerate(prompts):
        group = mine[b * G : (b + 1) * G]
        for i, y in enumerate(group):
            own = sum(p(x, y, z) for j, z in enumerate(group) if j != i) / (G - 1)
            vs = sum(p(x, y, z) for z in theirs[b * G_opp : (b + 1) * G_opp]) / G_opp
            assert extrapolation[b * G + i].item() == pytest.approx(own, abs=1e-5)
            assert update[b * G + i].item() == pytest.approx(vs, abs=1e-5)
    assert float(update.std()) > 0.01  # the preferences differ between completions


def test_a_nash_mp_run_on_a_pairwise_model_trains_and_reports_its_win_rate(
    tmp_path, tiny_tokenizer, pairwise_model
):
    result, train, moved = _run(tmp_path, tiny_tokenizer, "pw", reward=pairwise_model,
                                kl_coef=0.05)  # fmt: skip
    assert moved and len(train) == 2
    # Training's r_proxy is the self-play payoff, whose mean over a group is exactly 1/2.
    assert all(r["r_proxy"] == pytest.approx(0.5, abs=1e-6) for r in train)
    # The evaluations' proxy is the win rate over base-policy samples, in (0, 1).
    assert [m["step"] for m in result.metrics] == [0, 2]
    assert all(0.0 < m["proxy"] < 1.0 and math.isfinite(m["gold"]) for m in result.metrics)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(algorithm="grpo"), "algorithm: 'grpo' needs a scalar reward"),
        (dict(algorithm="ppo"), "algorithm: 'ppo' needs a scalar reward"),
        (dict(occupancy_reg="chi2", occupancy_coef=0.1), "occupancy_reg: not supported"),
    ],
)
def test_a_pairwise_model_is_refused_where_a_scalar_reward_is_needed(
    tmp_path, tiny_tokenizer, pairwise_model, overrides, field
):
    with pytest.raises(ValueError, match=field):
        _run(tmp_path, tiny_tokenizer, "bad", reward=pairwise_model, **overrides)
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_goodhart_rl_loads_a_pairwise_proxy_directory_as_one(
    tmp_path, tiny_tokenizer, pairwise_model
):
    from goodhartlab.optimize.rl_launch import reward_source
    from goodhartlab.rewards import PairwisePreferenceModel, RewardModel
    from goodhartlab.train.rm import save_reward_model
    from goodhartlab.train.rm_pairwise import saved_pairwise_info

    info = {"format_version": 1, **saved_pairwise_info()}
    save_reward_model(pairwise_model.model, tiny_tokenizer, tmp_path / "pm", info)
    save_reward_model(pairwise_model.model, tiny_tokenizer, tmp_path / "rm", {"format_version": 1})
    loaded = reward_source({"proxy": str(tmp_path / "pm"), "ensemble": None}, "cpu")
    assert isinstance(loaded, PairwisePreferenceModel)
    plain = reward_source({"proxy": str(tmp_path / "rm"), "ensemble": None}, "cpu")
    assert isinstance(plain, RewardModel)
