"""The RL loop (optimize/rl.py): learning, logging, resumption, bad input, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from goodhartlab.models.tiny import build_causal_lm, build_reward_model
from goodhartlab.optimize.rl import RLConfig, run_rl
from goodhartlab.optimize.rundir import read_jsonl
from goodhartlab.rewards import ProgrammaticReward
from goodhartlab.rewards.pipeline import RewardPipelineConfig

PROMPTS = [f"review of a {n}:" for n in ("phone", "laptop", "camera", "book", "movie", "song")]
EVAL_PROMPTS = ["review of a chair:", "review of a coffee:"]
# Trivially learnable: the policy only has to prefer tokens containing "e".
E_COUNT = ProgrammaticReward(lambda p, c: c.count("e") / 4, name="e_count", version="1")
WORDS = ProgrammaticReward(lambda p, c: float(len(c.split())), name="words", version="1")

TINY = dict(
    prompts_per_step=4,
    group_size=8,
    max_new_tokens=8,
    lr=1e-2,
    eval_every=2,
    eval_prompts=2,
    eval_samples=2,
    checkpoint_every=3,
)


def _run(tmp_path, tokenizer, name="run", reward=E_COUNT, seed=0, resume=False, **overrides):
    config = RLConfig(**{**TINY, "steps": 6, **overrides})
    policy = build_causal_lm("small", tokenizer, seed=seed)
    return run_rl(
        tmp_path / name,
        policy=policy,
        tokenizer=tokenizer,
        reward=reward,
        gold=WORDS,
        train_prompts=PROMPTS,
        eval_prompts=EVAL_PROMPTS,
        config=config,
        resume=resume,
    )


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- configuration errors -------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_group_size_one_is_an_error_for_group_baselines(algorithm):
    with pytest.raises(ValueError, match=r"group_size.*G >= 2"):
        RLConfig(algorithm=algorithm, group_size=1)
    RLConfig(algorithm="ppo", group_size=1)  # PPO's baseline is its value model


def test_inconsistent_settings_fail_naming_the_field():
    with pytest.raises(ValueError, match="kl_in"):
        RLConfig(algorithm="rloo", kl_in="loss", kl_coef=0.1)
    with pytest.raises(ValueError, match="kl_target"):
        RLConfig(kl_target=1.0)  # adaptive β needs an initial β > 0
    with pytest.raises(ValueError, match="minibatch_size"):
        RLConfig(prompts_per_step=2, group_size=3, minibatch_size=4)
    with pytest.raises(ValueError, match="lr"):
        RLConfig(lr=-1)


# -- learning ---------------------------------------------------------------------------------


def test_grpo_raises_the_proxy_and_changes_the_parameters(tmp_path, tiny_tokenizer):
    policy = build_causal_lm("small", tiny_tokenizer, seed=0)
    before = _params(policy)
    config = RLConfig(**{**TINY, "steps": 12, "eval_every": 4})
    result = run_rl(
        tmp_path / "run",
        policy=policy,
        tokenizer=tiny_tokenizer,
        reward=E_COUNT,
        gold=WORDS,
        train_prompts=PROMPTS,
        eval_prompts=EVAL_PROMPTS,
        config=config,
    )
    train = read_jsonl(tmp_path / "run" / "train.jsonl")
    first = sum(r["r_proxy"] for r in train[:3]) / 3
    last = sum(r["r_proxy"] for r in train[-3:]) / 3
    assert last > first + 0.3, (first, last)
    assert result.metrics[-1]["proxy"] > result.metrics[0]["proxy"]
    assert any(not torch.equal(before[k], v) for k, v in result.policy.state_dict().items())
    # The policy moved away from π0, and the evaluation saw it.
    assert result.metrics[-1]["kl"] > 0.1 and result.metrics[0]["d"] < 1e-2


def test_gold_and_kl_are_logged_at_every_evaluation(tmp_path, tiny_tokenizer):
    result = _run(tmp_path, tiny_tokenizer, steps=5)
    lines = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in lines] == [0, 2, 4, 5]  # step 0 = base policy, and the end
    for r in lines:
        assert r["method"] == "rl-grpo"
        for key in ("gold", "proxy", "kl", "kl_k3", "d", "length", "distinct_1", "distinct_2"):
            assert math.isfinite(r[key]), key
        assert r["d"] == pytest.approx(math.sqrt(max(r["kl"], 0.0)))
    assert lines == result.metrics
    samples = read_jsonl(tmp_path / "run" / "samples.jsonl")
    assert {s["step"] for s in samples} == {0, 2, 4, 5}
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["final"] == lines[-1] and summary["base"] == lines[0]


@pytest.mark.parametrize(
    "overrides",
    [
        dict(algorithm="rloo", kl_coef=0.05),
        dict(algorithm="ppo", kl_coef=0.05, epochs=2, minibatch_size=16),
        dict(algorithm="grpo", kl_coef=0.05, kl_in="loss"),
        dict(algorithm="grpo", kl_coef=0.05, kl_target=0.5),
        dict(algorithm="grpo", reward=RewardPipelineConfig(shaping="par", reference_samples=2)),
    ],
    ids=["rloo-kl-reward", "ppo-epochs", "grpo-kl-loss", "grpo-adaptive", "grpo-par"],
)
def test_variants_train(tmp_path, tiny_tokenizer, overrides):
    policy = build_causal_lm("small", tiny_tokenizer, seed=0)
    before = _params(policy)
    config = RLConfig(**{**TINY, "steps": 3, "eval_every": 3, **overrides})
    result = run_rl(
        tmp_path / "run",
        policy=policy,
        tokenizer=tiny_tokenizer,
        reward=E_COUNT,
        gold=WORDS,
        train_prompts=PROMPTS,
        eval_prompts=EVAL_PROMPTS,
        config=config,
    )
    train = read_jsonl(tmp_path / "run" / "train.jsonl")
    assert len(train) == 3 and all(math.isfinite(r["loss"]) for r in train)
    assert any(not torch.equal(before[k], v) for k, v in result.policy.state_dict().items())
    if config.kl_coef > 0:
        assert all(r["kl"] > -1.0 for r in train)  # the KL to π0 was measured on every batch
    if config.kl_in == "reward" and config.kl_coef > 0 and config.kl_target is None:
        # r_final = r_shaped − β·KL
        for r in train:
            assert r["r_final"] == pytest.approx(r["r_shaped"] - 0.05 * r["kl"], abs=1e-5)
    if config.algorithm == "ppo":
        assert all(math.isfinite(r["vf_loss"]) for r in train)
    if config.kl_target is not None:
        assert train[-1]["kl_coef"] != 0.05  # the adaptive β moved


def test_kl_coef_zero_gives_the_proxy_as_the_reward(tmp_path, tiny_tokenizer):
    _run(tmp_path, tiny_tokenizer, steps=2)
    for r in read_jsonl(tmp_path / "run" / "train.jsonl"):
        assert r["r_final"] == r["r_shaped"] == r["r_proxy"]


# -- bad rewards ----------------------------------------------------------------------------


def test_nan_reward_stops_the_run_before_any_update(tmp_path, tiny_tokenizer):
    def nan_reward(prompts, completions):
        r = torch.zeros(len(prompts))
        r[3] = float("nan")
        return r

    policy = build_causal_lm("small", tiny_tokenizer, seed=0)
    before = _params(policy)
    with pytest.raises(ValueError, match=r"nan_reward.*item 3"):
        run_rl(
            tmp_path / "run",
            policy=policy,
            tokenizer=tiny_tokenizer,
            reward=nan_reward,
            gold=WORDS,
            train_prompts=PROMPTS,
            eval_prompts=EVAL_PROMPTS,
            config=RLConfig(**{**TINY, "steps": 2}),
        )
    # The step-0 evaluation scored the base policy's samples: the NaN is caught there,
    # and the policy was never updated.
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "nan_reward" in manifest["error"]


def one_short(prompts, completions):
    return [0.0] * (len(prompts) - 1)


def test_wrong_number_of_rewards_names_the_source(tmp_path, tiny_tokenizer):
    with pytest.raises(ValueError, match=r"one_short.*expected 4 scores"):
        _run(tmp_path, tiny_tokenizer, reward=one_short)


# -- resumption -----------------------------------------------------------------------------


class KilledAt:
    """E_COUNT, but the process "dies" on its n-th call (after the checkpoint at step 3)."""

    name = "e_count"
    version = "1"

    def __init__(self, calls: int):
        self.calls, self.left = calls, calls

    def score(self, prompts, completions):
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt("killed")
        return E_COUNT.score(prompts, completions)


def test_resumed_run_equals_an_uninterrupted_run(tmp_path, tiny_tokenizer):
    straight = _run(tmp_path, tiny_tokenizer, name="straight", steps=6)

    # Calls: eval 0, steps 1-2, eval 2, step 3 (checkpoint), step 4, eval 4, step 5 -> killed.
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, tiny_tokenizer, name="killed", reward=KilledAt(7), steps=6)
    killed_dir = tmp_path / "killed"
    assert [r["step"] for r in read_jsonl(killed_dir / "metrics.jsonl")] == [0, 2, 4]
    # Simulate a line torn by the kill.
    with open(killed_dir / "metrics.jsonl", "a") as f:
        f.write('{"method": "rl-grpo", "st')

    resumed = run_rl(
        killed_dir,
        policy=build_causal_lm("small", tiny_tokenizer, seed=0),
        tokenizer=tiny_tokenizer,
        reward=KilledAt(10**6),
        gold=WORDS,
        train_prompts=PROMPTS,
        eval_prompts=EVAL_PROMPTS,
        config=RLConfig(**{**TINY, "steps": 6}),
        resume=True,
    )
    assert (killed_dir / "metrics.jsonl").read_text() == (
        tmp_path / "straight" / "metrics.jsonl"
    ).read_text()
    assert resumed.metrics == straight.metrics
    assert [r["step"] for r in resumed.metrics] == [0, 2, 4, 6]
    a = read_jsonl(killed_dir / "samples.jsonl")
    b = read_jsonl(tmp_path / "straight" / "samples.jsonl")
    assert a == b
    for k, v in straight.policy.state_dict().items():
        assert torch.equal(v, resumed.policy.state_dict()[k]), k
    manifest = json.loads((killed_dir / "manifest.json").read_text())
    assert manifest["resumes"][0]["from_step"] == 3 and manifest["status"] == "complete"


def test_a_line_lost_after_its_checkpoint_is_recomputed(tmp_path, tiny_tokenizer):
    # Issue 17, defect 3: a finished 4-step run whose last metrics line is torn resumed from
    # the step-4 checkpoint, recomputed nothing, and reported a final step of 2.
    straight = _run(tmp_path, tiny_tokenizer, name="straight", steps=4)
    run_dir = tmp_path / "torn"
    _run(tmp_path, tiny_tokenizer, name="torn", steps=4)
    metrics = run_dir / "metrics.jsonl"
    text = metrics.read_text()
    metrics.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 20])  # last line cut
    assert [r["step"] for r in read_jsonl(metrics)] == [0, 2]
    resumed = _run(tmp_path, tiny_tokenizer, name="torn", steps=4, resume=True)
    assert metrics.read_text() == (tmp_path / "straight" / "metrics.jsonl").read_text()
    assert resumed.metrics == straight.metrics
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final"]["step"] == 4
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["resumes"][-1]["from_step"] == 3  # the step-4 checkpoint lacks its line


def test_a_damaged_line_inside_a_log_names_the_file_and_line(tmp_path, tiny_tokenizer):
    _run(tmp_path, tiny_tokenizer, steps=4)
    metrics = tmp_path / "run" / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    lines[1] = lines[1][:15] + "\n"
    metrics.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"metrics\.jsonl, line 2: not a JSON line"):
        _run(tmp_path, tiny_tokenizer, steps=4, resume=True)


def test_resume_with_fewer_steps_than_done_is_refused_before_writing(tmp_path, tiny_tokenizer):
    # Issue 17: `--resume --steps 2` on a 4-step run reported steps 2 and final step 4.
    _run(tmp_path, tiny_tokenizer, steps=4)
    config = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(ValueError, match=r"has already run 4 steps.*steps >= 4"):
        _run(tmp_path, tiny_tokenizer, steps=2, resume=True)
    assert (tmp_path / "run" / "config.yaml").read_text() == config


def test_resume_with_a_different_config_is_an_error(tmp_path, tiny_tokenizer):
    _run(tmp_path, tiny_tokenizer, steps=3)
    with pytest.raises(ValueError, match=r"different configuration.*config\.lr"):
        _run(tmp_path, tiny_tokenizer, steps=3, lr=1e-3, resume=True)
    with pytest.raises(ValueError, match=r"identity\.reward"):
        _run(tmp_path, tiny_tokenizer, steps=3, reward=WORDS, resume=True)
    with pytest.raises(ValueError, match=r"identity\.policy"):
        _run(tmp_path, tiny_tokenizer, steps=3, seed=1, resume=True)
    # A new run does not overwrite an existing one.
    with pytest.raises(ValueError, match="already holds a run"):
        _run(tmp_path, tiny_tokenizer, steps=3)
    # More steps is allowed: the run continues.
    result = _run(tmp_path, tiny_tokenizer, steps=4, resume=True)
    assert [r["step"] for r in result.metrics] == [0, 2, 3, 4]


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_runs_and_resumes(tmp_path, tiny_tokenizer, capsys):
    from goodhartlab.cli import main

    policy_dir, gold_dir, proxy_dir = tmp_path / "policy", tmp_path / "gold", tmp_path / "proxy"
    build_causal_lm("small", tiny_tokenizer, seed=0).save_pretrained(policy_dir)
    build_reward_model("small", tiny_tokenizer, seed=1).save_pretrained(gold_dir)
    build_reward_model("small", tiny_tokenizer, seed=2).save_pretrained(proxy_dir)
    for d in (policy_dir, gold_dir, proxy_dir):
        tiny_tokenizer.save_pretrained(d)
    (tmp_path / "train.txt").write_text("\n".join(PROMPTS))
    (tmp_path / "eval.txt").write_text("\n".join(EVAL_PROMPTS))
    run_dir = tmp_path / "run"
    files = (
        f"--policy {policy_dir} --prompts {tmp_path / 'train.txt'} --gold {gold_dir} "
        f"--eval-prompts-file {tmp_path / 'eval.txt'} --proxy {proxy_dir}"
    )
    small = "--max-new-tokens 6 --prompts-per-step 2 --group-size 2 --eval-every 1 --eval-prompts 2"
    argv = f"rl {files} {small} --checkpoint-every 1 --steps 1 --out {run_dir}".split()
    assert main(argv) == 0
    assert "final" in capsys.readouterr().out
    # --resume alone rebuilds the run from config.yaml; more steps continue it.
    assert main(["rl", "--resume", str(run_dir), "--steps", "2"]) == 0
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [0, 1, 2]
    # A changed setting is refused with a clear message.
    assert main(["rl", "--resume", str(run_dir), "--lr", "0.5"]) == 2
    assert "different configuration" in capsys.readouterr().err
    # GRPO with G = 1: a clear error, no traceback.
    assert main(f"rl {files} --group-size 1 --out {tmp_path / 'g1'}".split()) == 2
    assert "group_size" in capsys.readouterr().err
