"""GARDO in the RL loop (optimize.gardo; He et al. 2025, arXiv 2512.24138): the gated KL
penalty, the penalty's reference reset to the policy every K steps, diversity-aware
advantages; each switch alone and all together on the tiny fixtures."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError
from test_rl_mitigations import E_COUNT, EVAL_PROMPTS, PROMPTS, TINY, WORDS, _run

from goodhartlab.models.tiny import build_causal_lm
from goodhartlab.optimize.gardo import check_gardo_resume, ngram_counts, reset_reference_if_due
from goodhartlab.optimize.rl import RLConfig, run_rl
from goodhartlab.optimize.rundir import read_jsonl


class LetterEnsemble:
    """Three members that disagree: counts of 'e', of 'a' and of 'o' (raw, unstandardized)."""

    name = "letter_ensemble"

    def score_members(self, prompts, completions):
        return torch.tensor([[c.count(x) / 4 for c in completions] for x in "eao"])


GARDO = dict(
    kl_coef=0.05,
    kl_gate="member_std",
    kl_gate_fraction=0.25,
    ref_reset_every=2,
    checkpoint_every=2,
    diversity_bonus=True,
)


@pytest.mark.parametrize("gate", ["member_std", "proxy_gap"])
def test_two_steps_of_full_gardo_penalize_only_the_gated_quarter(tmp_path, tiny_tokenizer, gate):
    _, train, moved = _run(
        tmp_path,
        tiny_tokenizer,
        gate,
        source=LetterEnsemble(),
        steps=2,
        **{**GARDO, "kl_gate": gate},
    )
    assert moved and len(train) == 2
    for r in train:
        assert all(math.isfinite(v) for v in r.values())
        # B·G = 32 rows, ⌈0.25 · 32⌉ = 8 gated.
        assert r["kl_gated_frac"] == 8 / 32
        # r_final = r_shaped − β·g·KL, averaged: mean r_shaped − β · (8/32) · mean KL of the gated.
        assert r["r_final"] == pytest.approx(r["r_shaped"] - 0.05 * 0.25 * r["kl_gated"], abs=1e-5)
        assert 0.0 <= r["diversity"] <= 2.0 and r["diversity_mult"] > 0.0
    assert [r["ref_reset"] for r in train] == [1.0, 0.0]  # steps 1 (a no-op: π = π0) and 3, ...


def test_a_threshold_no_sample_reaches_gates_nothing(tmp_path, tiny_tokenizer):
    # proxy_gap lies in [−1, 1]: a threshold of 1 gates no sample, so no KL reaches the
    # reward (r_final = r_shaped) though KL is measured; the empty set logs 0, not NaN.
    _, train, _ = _run(
        tmp_path, tiny_tokenizer, "none", source=LetterEnsemble(), steps=2, kl_coef=0.05,
        kl_gate="proxy_gap", kl_gate_threshold=1.0,
    )  # fmt: skip
    for r in train:
        assert r["kl_gated_frac"] == 0.0 and r["kl_gated"] == 0.0
        assert r["r_final"] == pytest.approx(r["r_shaped"], abs=1e-7)
    assert train[1]["kl"] > 1e-3


def test_the_gate_needs_an_ensemble_and_the_penalty_in_the_reward(tmp_path, tiny_tokenizer):
    with pytest.raises(ValueError, match="kl_gate: 'member_std' reads the uncertainty"):
        _run(tmp_path, tiny_tokenizer, "single", source=E_COUNT, steps=1, **GARDO)
    with pytest.raises(ValidationError, match="kl_gate: gates the KL penalty in the reward"):
        RLConfig(kl_gate="proxy_gap", kl_coef=0.0)
    with pytest.raises(ValidationError, match="group-based"):
        RLConfig(algorithm="ppo", diversity_bonus=True)
    with pytest.raises(ValidationError, match="ref_reset_every: must divide checkpoint_every"):
        RLConfig(kl_coef=0.01, ref_reset_every=3, checkpoint_every=50)
    with pytest.raises(ValidationError, match="kl_gate_fraction"):
        RLConfig(kl_coef=0.01, kl_gate="member_std", kl_gate_fraction=0.0)
    # A checkpoint off the reset grid (a final one, resumed with more steps) is refused.
    check_gardo_resume(RLConfig(kl_coef=0.01, ref_reset_every=5), 10)
    with pytest.raises(ValueError, match="checkpoint at step 12 is not a multiple of 5"):
        check_gardo_resume(RLConfig(kl_coef=0.01, ref_reset_every=5), 12)


def test_after_k_steps_the_penalty_reference_equals_the_policy(tiny_tokenizer):
    policy = build_causal_lm("small", tiny_tokenizer, seed=0)
    reference = build_causal_lm("small", tiny_tokenizer, seed=1)
    run = SimpleNamespace(
        cfg=SimpleNamespace(ref_reset_every=3), policy=policy, kl_reference=reference
    )

    def same() -> bool:
        ref = reference.state_dict()
        return all(torch.equal(v, ref[k]) for k, v in policy.state_dict().items())

    assert reset_reference_if_due(run, 1) == {"ref_reset": 1.0} and same()
    for step in (2, 3, 4):
        with torch.no_grad():  # the step's update
            for p in policy.parameters():
                p.add_(0.01)
        due = reset_reference_if_due(run, step)
        # Steps 2 and 3 leave the reference at π after step 0; step 4 starts after K = 3 steps.
        assert due == {"ref_reset": float(step == 4)} and same() == (step == 4)
    assert reset_reference_if_due(SimpleNamespace(kl_reference=None), 5) == {}


def test_a_moving_reference_moves_the_penalty_not_the_logged_kl(tmp_path, tiny_tokenizer):
    # KL penalty only (no gate, no bonus), reference reset after every 2 steps, 5 steps.
    moving, train, _ = _run(
        tmp_path, tiny_tokenizer, "moving", steps=5, kl_coef=0.05, ref_reset_every=2,
        checkpoint_every=2, eval_every=5,
    )  # fmt: skip
    fixed, fixed_train, _ = _run(
        tmp_path, tiny_tokenizer, "fixed", steps=5, kl_coef=0.05, checkpoint_every=2, eval_every=5
    )
    # Steps 1, 3, 5 sample from the policy the reference was just reset to: KL ≈ 0 (the noise
    # of sampler against forward); the fixed reference's KL at steps 3 and 5 is not.
    for step in (1, 3, 5):
        assert abs(train[step - 1]["kl"]) < 1e-4
    assert fixed_train[2]["kl"] > 1e-3 and fixed_train[4]["kl"] > 1e-3
    # The evaluation's KL is to the base policy in both runs: well away from 0 at step 5.
    assert moving.metrics[-1]["kl"] > 1e-3 and fixed.metrics[-1]["kl"] > 1e-3


def test_a_resumed_gardo_run_equals_an_uninterrupted_one(tmp_path, tiny_tokenizer):
    # Checkpoint (and evaluation) at step 3; the reference is reset after steps 3 and 6.
    settings = {**GARDO, "ref_reset_every": 3, "checkpoint_every": 3}
    straight, _, _ = _run(tmp_path, tiny_tokenizer, "straight", LetterEnsemble(), 6, **settings)
    _run(tmp_path, tiny_tokenizer, "resumed", LetterEnsemble(), 3, **settings)
    resumed = run_rl(
        tmp_path / "resumed",
        policy=build_causal_lm("small", tiny_tokenizer, seed=0),
        tokenizer=tiny_tokenizer,
        reward=LetterEnsemble(),
        gold=WORDS,
        train_prompts=PROMPTS,
        eval_prompts=EVAL_PROMPTS,
        config=RLConfig(**{**TINY, **settings, "steps": 6}),
        resume=True,
    )
    assert resumed.metrics == straight.metrics
    timing = ("sample_s", "step_s")
    lines = {
        name: [
            {k: v for k, v in r.items() if k not in timing}
            for r in read_jsonl(tmp_path / name / "train.jsonl")
        ]
        for name in ("straight", "resumed")
    }
    assert lines["resumed"] == lines["straight"]


def test_ngram_counts_by_hand():
    # Rows [1, 2, 1, 2] (4 tokens) and [2, 1, 9] (3 tokens, 9 past the end is padding).
    # Bigrams: row 0 (1,2) ×2, (2,1) ×1; row 1 (2,1) ×1. Vocabulary in order of appearance.
    ids = torch.tensor([[1, 2, 1, 2], [2, 1, 9, 9]])
    counts = ngram_counts(ids, torch.tensor([4, 2]), 2)
    assert counts.tolist() == [[2.0, 1.0], [0.0, 1.0]]
    # A row shorter than n counts its whole sequence once.
    assert ngram_counts(ids, torch.tensor([4, 1]), 2).tolist() == [[2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
