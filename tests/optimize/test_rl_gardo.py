"""GARDO in the RL loop (optimize.gardo; He et al. 2025, arXiv 2512.24138): the gated KL
penalty (fixed or adaptive fraction), the penalty's reference reset to the policy every K
steps or when the penalized KL exceeds a threshold, diversity-aware advantages; each switch
alone and all together on the tiny fixtures."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError
from test_rl_mitigations import E_COUNT, EVAL_PROMPTS, PROMPTS, TINY, WORDS, _run

from goodhartlab.core.gardo import adapted_gate_fraction
from goodhartlab.models.tiny import build_causal_lm
from goodhartlab.optimize.gardo import (
    GardoState,
    check_gardo_resume,
    ngram_counts,
    note_penalized_kl,
    reset_reference_if_due,
)
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
    # K = 2: the first reset is at step 3; step 1's reference is π0, already the policy.
    assert [r["ref_reset"] for r in train] == [0.0, 0.0]


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
        cfg=SimpleNamespace(ref_reset_every=3, ref_reset_kl=None),
        policy=policy,
        kl_reference=reference,
        gardo=None,
    )

    def same() -> bool:
        ref = reference.state_dict()
        return all(torch.equal(v, ref[k]) for k, v in policy.state_dict().items())

    # Step 1 is no reset: in a run the reference is then a copy of π0, the policy itself (a
    # reference that differs, as here, shows that nothing is copied).
    assert reset_reference_if_due(run, 1) == {"ref_reset": 0.0} and not same()
    for step in (2, 3, 4):
        with torch.no_grad():  # the step's update
            for p in policy.parameters():
                p.add_(0.01)
        due = reset_reference_if_due(run, step)
        # Steps 2 and 3 leave the reference as it was; step 4 starts after K = 3 steps.
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
    # Steps 1, 3, 5 sample from the policy the reference equals (π0 at step 1, else just reset
    # to it): KL ≈ 0 (the noise of sampler against forward); the fixed reference's KL at
    # steps 3 and 5 is not.
    for step in (1, 3, 5):
        assert abs(train[step - 1]["kl"]) < 1e-4
    # Resets at steps 3 and 5 (after K = 2 and 4); none logged at step 1, where π = π0.
    assert [r["ref_reset"] for r in train] == [0, 0, 1, 0, 1]
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


def test_adaptive_gate_and_kl_reset_settings_are_checked():
    with pytest.raises(ValidationError, match="kl_gate_adaptive: adapts the fraction"):
        RLConfig(kl_coef=0.1, kl_gate_adaptive=True)
    with pytest.raises(ValidationError, match="kl_gate_adaptive: adapts the fraction"):
        RLConfig(kl_coef=0.1, kl_gate="proxy_gap", kl_gate_threshold=0.5, kl_gate_adaptive=True)
    with pytest.raises(ValidationError, match=r"kl_gate_fraction: with kl_gate_adaptive.*0.3"):
        RLConfig(kl_coef=0.1, kl_gate="proxy_gap", kl_gate_adaptive=True, kl_gate_fraction=0.3)
    with pytest.raises(ValidationError, match="kl_gate_adapt_rate"):
        RLConfig(kl_coef=0.1, kl_gate="proxy_gap", kl_gate_adaptive=True, kl_gate_adapt_rate=1.0)
    with pytest.raises(ValidationError, match="ref_reset_kl: resets the KL penalty's reference"):
        RLConfig(ref_reset_kl=0.5)
    with pytest.raises(ValidationError, match="ref_reset_kl"):
        RLConfig(kl_coef=0.1, ref_reset_kl=0.0)
    # With the trigger, ref_reset_every is the longest interval: it need not divide the
    # checkpoints (the checkpoint holds the reference), and any checkpoint resumes.
    cfg = RLConfig(kl_coef=0.1, ref_reset_kl=0.5, ref_reset_every=16, checkpoint_every=50)
    check_gardo_resume(cfg, 12)


def _reset_run(**cfg):
    """A policy and a reference of one scalar, to follow which step's policy the reference is."""
    policy, reference = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        policy.weight.fill_(0.0)
        reference.weight.fill_(0.0)
    config = SimpleNamespace(**{"ref_reset_every": None, "kl_gate": None, **cfg})
    return SimpleNamespace(
        cfg=config, policy=policy, kl_reference=reference, gardo=GardoState(fraction=0.1)
    )


def test_a_kl_above_the_threshold_resets_at_the_next_step_and_the_cap_resets_at_the_latest():
    run = _reset_run(ref_reset_kl=0.5, ref_reset_every=4)
    resets, due = [], []
    # The batch's mean KL of steps 1..9; the policy's weight is the number of its updates.
    kls = [0.1, 0.7, 0.2, 0.3, 0.1, 0.2, 0.6, 0.9, 0.1]
    for step, kl in enumerate(kls, start=1):
        resets.append(reset_reference_if_due(run, step)["ref_reset"])
        assert run.kl_reference.weight.item() == run.gardo.last_reset - 1  # π at its start
        stats = note_penalized_kl(run, torch.tensor([kl - 0.05, kl + 0.05]), {})
        due.append(stats["ref_reset_due"])
        assert stats["kl_penalized"] == pytest.approx(kl)
        with torch.no_grad():
            run.policy.weight.add_(1.0)
    # KL 0.7 at step 2 -> reset at 3; then 4 steps against it: the cap at 7 (7 − 3 = 4);
    # 0.6 at 7 -> 8; 0.9 at 8 -> 9. Step 1 never resets (the reference is π0's copy).
    assert due == [0, 1, 0, 0, 0, 0, 1, 1, 0]
    assert resets == [0, 0, 1, 0, 0, 0, 1, 1, 1]
    # Without a cap only the trigger resets; with a gate the KL is the gated samples'.
    run = _reset_run(ref_reset_kl=0.5, kl_gate="proxy_gap")
    assert note_penalized_kl(run, torch.ones(4), {"kl_gated": 0.4})["ref_reset_due"] == 0.0
    assert [reset_reference_if_due(run, s)["ref_reset"] for s in (2, 3, 30)] == [0, 0, 0]
    assert note_penalized_kl(run, torch.zeros(4), {"kl_gated": 0.6})["ref_reset_due"] == 1.0
    assert reset_reference_if_due(run, 31)["ref_reset"] == 1.0 and run.gardo.last_reset == 31


ADAPTIVE = dict(
    kl_coef=0.05,
    kl_gate="proxy_gap",
    kl_gate_adaptive=True,
    kl_gate_fraction=0.1,
    kl_gate_window=3,
    ref_reset_kl=1e9,  # never: the cap alone resets, at steps 4 and 7
    ref_reset_every=3,
    checkpoint_every=5,
    eval_every=5,
)


def test_the_adaptive_fraction_follows_the_rule_on_the_logged_signals(tmp_path, tiny_tokenizer):
    _, train, moved = _run(tmp_path, tiny_tokenizer, "adaptive", LetterEnsemble(), 6, **ADAPTIVE)
    assert moved and len(train) == 6
    f, history = 0.1, []
    for r in train:
        f = adapted_gate_fraction(
            f, r["gate_signal"], torch.tensor(history[-3:], dtype=torch.float64)
        )
        history.append(r["gate_signal"])
        assert r["kl_gate_fraction"] == pytest.approx(f)
        assert r["kl_gated_frac"] == math.ceil(f * 32 - 1e-9) / 32  # B·G = 32 rows
    assert len({r["kl_gate_fraction"] for r in train}) > 1  # it did move
    assert [r["ref_reset"] for r in train] == [0, 0, 0, 1, 0, 0]
    assert all(r["ref_reset_due"] == 0.0 for r in train)


def test_a_resumed_run_with_adaptive_gate_and_kl_reset_equals_an_uninterrupted_one(
    tmp_path, tiny_tokenizer
):
    # The checkpoint at step 5 falls between the resets at 4 and 7: step 6 runs against the
    # reference of step 4 (from the checkpoint), with the fraction and the signals of 1-5.
    straight, _, _ = _run(tmp_path, tiny_tokenizer, "straight", LetterEnsemble(), 7, **ADAPTIVE)
    _run(tmp_path, tiny_tokenizer, "resumed", LetterEnsemble(), 5, **ADAPTIVE)
    resumed = run_rl(
        tmp_path / "resumed",
        policy=build_causal_lm("small", tiny_tokenizer, seed=0),
        tokenizer=tiny_tokenizer,
        reward=LetterEnsemble(),
        gold=WORDS,
        train_prompts=PROMPTS,
        eval_prompts=EVAL_PROMPTS,
        config=RLConfig(**{**TINY, **ADAPTIVE, "steps": 7}),
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
    assert [r["ref_reset"] for r in lines["straight"]] == [0, 0, 0, 1, 0, 0, 1]
    assert lines["straight"][5]["kl"] > 1e-4  # step 6 is not against its own policy


def test_ngram_counts_by_hand():
    # Rows [1, 2, 1, 2] (4 tokens) and [2, 1, 9] (3 tokens, 9 past the end is padding).
    # Bigrams: row 0 (1,2) ×2, (2,1) ×1; row 1 (2,1) ×1. Vocabulary in order of appearance.
    ids = torch.tensor([[1, 2, 1, 2], [2, 1, 9, 9]])
    counts = ngram_counts(ids, torch.tensor([4, 2]), 2)
    assert counts.tolist() == [[2.0, 1.0], [0.0, 1.0]]
    # A row shorter than n counts its whole sequence once.
    assert ngram_counts(ids, torch.tensor([4, 1]), 2).tolist() == [[2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
