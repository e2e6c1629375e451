"""The occupancy-measure regularizer in the RL loop (RLConfig.occupancy_reg; Laidlaw et al.
2024, arXiv 2403.03185): r − λ·t on the sequence reward, λ from the proxy's base-policy std."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from test_rl_mitigations import E_COUNT, EVAL_PROMPTS, PROMPTS, TINY, WORDS, _run

from goodhartlab.models.tiny import build_causal_lm
from goodhartlab.optimize.rl import RLConfig, run_rl
from goodhartlab.optimize.rundir import read_jsonl


@pytest.mark.parametrize("algorithm", ["grpo", "rloo", "ppo"])
def test_two_steps_with_sqrt_chi2_penalize_the_reward(tmp_path, tiny_tokenizer, algorithm):
    _, train, moved = _run(
        tmp_path, tiny_tokenizer, algorithm, steps=2, algorithm=algorithm, kl_coef=0.0,
        occupancy_reg="sqrt_chi2", occupancy_coef=0.5,
    )  # fmt: skip
    assert moved and len(train) == 2
    for r in train:
        assert all(math.isfinite(v) for v in r.values() if isinstance(v, float))
        assert r["occ_lambda"] > 0.0 and r["occ_sqrt_chi2"] >= 1e-2  # √ of the 1e-4 floor
        # No KL and no shaping: the optimized reward is the proxy minus the mean λ·t.
        assert r["r_final"] == pytest.approx(r["r_shaped"] - r["occ_term"], abs=1e-5)
    # λ is computed once from the same base-policy samples: equal at every step.
    assert train[0]["occ_lambda"] == train[1]["occ_lambda"]
    # Step 1 samples from π0 itself (w = 1): nothing to penalize; step 2 from π1 ≠ π0.
    assert abs(train[0]["occ_term"]) < 1e-4  # float noise of sampler vs forward
    assert train[1]["occ_sqrt_chi2"] > 1e-2


def test_a_strong_chi2_penalty_keeps_the_policy_closer_to_the_base(tmp_path, tiny_tokenizer):
    free, _, _ = _run(tmp_path, tiny_tokenizer, "free", steps=6)
    held, train, moved = _run(
        tmp_path, tiny_tokenizer, "chi2", steps=6, occupancy_reg="sqrt_chi2",
        occupancy_coef=5.0, occupancy_scale="none",
    )  # fmt: skip
    assert moved and train[0]["occ_lambda"] == 5.0
    kl_held = [m["kl"] for m in held.metrics[1:]]
    kl_free = [m["kl"] for m in free.metrics[1:]]
    assert all(h < f for h, f in zip(kl_held, kl_free, strict=True)), (kl_held, kl_free)


def test_every_divergence_runs_and_zero_coefficient_changes_nothing(tmp_path, tiny_tokenizer):
    plain, _, _ = _run(tmp_path, tiny_tokenizer, "plain", steps=2)
    for name in ("chi2", "tv", "kl"):
        _, train, _ = _run(tmp_path, tiny_tokenizer, name, steps=1, occupancy_reg=name)
        assert f"occ_{name}" in train[0]
    zero, train, _ = _run(
        tmp_path, tiny_tokenizer, "zero", steps=2, occupancy_reg="sqrt_chi2", occupancy_coef=0.0
    )
    assert train[1]["occ_term"] == 0.0
    for a, b in zip(plain.policy.parameters(), zero.policy.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_resumed_run_with_sqrt_chi2_equals_an_uninterrupted_one(tmp_path, tiny_tokenizer):
    # λ is not checkpointed: it is recomputed on resume from the same seeded base samples.
    settings = dict(occupancy_reg="sqrt_chi2", occupancy_coef=0.5, checkpoint_every=3)
    straight, _, _ = _run(tmp_path, tiny_tokenizer, "straight", steps=6, **settings)
    _run(tmp_path, tiny_tokenizer, "resumed", steps=3, **settings)
    resumed = run_rl(
        tmp_path / "resumed",
        policy=build_causal_lm("small", tiny_tokenizer, seed=0),
        tokenizer=tiny_tokenizer,
        reward=E_COUNT,
        gold=WORDS,
        train_prompts=PROMPTS,
        eval_prompts=EVAL_PROMPTS,
        config=RLConfig(**{**TINY, **settings, "steps": 6}),
        resume=True,
    )
    assert resumed.metrics == straight.metrics
    drop = ("sample_s", "step_s")
    train = {
        name: [
            {k: v for k, v in r.items() if k not in drop}
            for r in read_jsonl(tmp_path / name / "train.jsonl")
        ]
        for name in ("straight", "resumed")
    }
    assert train["resumed"] == train["straight"]
    assert all("occ_sqrt_chi2" in r for r in train["resumed"])


def test_bad_settings_name_the_field():
    with pytest.raises(ValidationError, match=r"occupancy_reg[\s\S]*registered: chi2, sqrt_chi2"):
        RLConfig(occupancy_reg="chi")
    with pytest.raises(ValidationError, match="occupancy_coef"):
        RLConfig(occupancy_reg="sqrt_chi2", occupancy_coef=-0.1)
    with pytest.raises(ValidationError, match="occupancy_scale"):
        RLConfig(occupancy_scale="std")
