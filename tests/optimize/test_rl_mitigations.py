"""Issue 18's mitigations in the RL loop: step-level Clip / Delta (Gao et al. 2024), the SFT
regularizer (Liu et al. 2024), reward centering and members standardized on base samples."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from goodhartlab.models.tiny import build_causal_lm
from goodhartlab.optimize.rl import RLConfig, run_rl, step_token_index
from goodhartlab.optimize.rundir import read_jsonl
from goodhartlab.rewards import ProgrammaticReward
from goodhartlab.rewards.pipeline import RewardPipelineConfig
from goodhartlab.rewards.steps import sentence_ends

PROMPTS = [f"review of a {n}:" for n in ("phone", "laptop", "camera", "book", "movie", "song")]
EVAL_PROMPTS = ["review of a chair:", "review of a coffee:"]
E_COUNT = ProgrammaticReward(lambda p, c: c.count("e") / 4, name="e_count", version="1")
WORDS = ProgrammaticReward(lambda p, c: float(len(c.split())), name="words", version="1")
TINY = dict(
    prompts_per_step=4,
    group_size=8,
    max_new_tokens=8,
    lr=1e-2,
    eval_every=3,
    eval_prompts=2,
    eval_samples=2,
    checkpoint_every=50,
)


def _run(tmp_path, tokenizer, name, source=E_COUNT, steps=3, **overrides):
    policy = build_causal_lm("small", tokenizer, seed=0)
    before = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    result = run_rl(
        tmp_path / name,
        policy=policy,
        tokenizer=tokenizer,
        reward=source,
        gold=WORDS,
        train_prompts=PROMPTS,
        eval_prompts=EVAL_PROMPTS,
        config=RLConfig(**{**TINY, "steps": steps, **overrides}),
    )
    moved = any(not torch.equal(before[k], v) for k, v in result.policy.state_dict().items())
    return result, read_jsonl(tmp_path / name / "train.jsonl"), moved


def test_step_clip_bounds_the_reward_by_zero_and_trains(tmp_path, tiny_tokenizer):
    shaping = RewardPipelineConfig(shaping="step_clip", shaping_params={"eta": 1.0})
    _, train, moved = _run(tmp_path, tiny_tokenizer, "clip", reward=shaping)
    assert moved
    assert all(r["r_shaped"] <= 0.0 for r in train)  # Σ_k min(r_k − η, 0) ≤ 0
    assert any(r["r_proxy"] > 0.0 for r in train)
    assert all(r["sentences"] >= 1.0 for r in train)


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_step_delta_trains_under_sequence_and_token_level_algorithms(
    tmp_path, tiny_tokenizer, algorithm
):
    shaping = RewardPipelineConfig(shaping="step_delta")
    _, train, moved = _run(
        tmp_path, tiny_tokenizer, algorithm, algorithm=algorithm, kl_coef=0.05, reward=shaping
    )
    assert moved and all(math.isfinite(r["loss"]) for r in train)
    # r_final = Σ_k r'_k − β·KL, Σ_k r'_k = r_shaped (the first sentence prefix's score).
    for r in train:
        assert r["r_final"] == pytest.approx(r["r_shaped"] - 0.05 * r["kl"], abs=1e-5)


def test_step_token_index_puts_each_step_on_its_last_token(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = tok(" the screen is great . the price is fine . very", add_special_tokens=False)[
        "input_ids"
    ]
    ids = [*ids, tok.eos_token_id]
    n = len(ids) - 1
    rollouts = SimpleNamespace(
        completion_ids=torch.tensor([ids]),
        completion_mask=torch.ones(1, len(ids), dtype=torch.long),
        num_tokens=torch.tensor([n]),
    )
    text = tok.decode(ids[:n], skip_special_tokens=True)
    ends = sentence_ends(text)
    assert len(ends) == 3
    index = step_token_index(tok, rollouts, [ends])[0].tolist()
    for k in range(2):  # the first token whose decoded prefix reaches the sentence's end
        t = index[k]
        assert len(tok.decode(ids[: t + 1])) >= ends[k] > len(tok.decode(ids[:t]))
        assert tok.decode(ids[: t + 1]).endswith(".")
    assert index[2] == len(ids) - 1  # the last step on the last token (EOS), as PPO's reward


def test_sft_regularizer_keeps_the_policy_closer_to_the_base(tmp_path, tiny_tokenizer):
    free, _, _ = _run(tmp_path, tiny_tokenizer, "free", steps=6, kl_coef=0.01)
    held, train, moved = _run(
        tmp_path, tiny_tokenizer, "sft", steps=6, kl_coef=0.01, sft_coef=2.0, sft_samples=2
    )
    assert moved and all(math.isfinite(r["sft_nll"]) for r in train)
    # The NLL of base-policy samples pulls towards π0: a smaller KL at every evaluation
    # (measured: 0.25 and 1.76 nats against 1.23 and 1.94 without it).
    kl_held = [m["kl"] for m in held.metrics[1:]]
    kl_free = [m["kl"] for m in free.metrics[1:]]
    assert all(h < f for h, f in zip(kl_held, kl_free, strict=True)), (kl_held, kl_free)


def test_running_center_centers_the_first_batch(tmp_path, tiny_tokenizer):
    _, train, moved = _run(
        tmp_path, tiny_tokenizer, "center", reward=RewardPipelineConfig(shaping="running_center")
    )
    # At step 1 the running mean is the batch's own mean: the batch's shaped rewards average 0.
    assert train[0]["r_shaped"] == pytest.approx(0.0, abs=1e-6)
    assert train[0]["r_proxy"] > 0.0 and moved


class OffsetEnsemble:
    """Two members that agree up to an offset of 100: raw WCO is the low member, always."""

    name = "offset_ensemble"

    def score_members(self, prompts, completions):
        e = torch.tensor([c.count("e") / 4 for c in completions])
        return torch.stack([e, 100.0 + e])


def test_standardized_members_are_optimized_in_base_policy_units(tmp_path, tiny_tokenizer):
    config = RewardPipelineConfig(
        aggregator="mean", standardize_members=True, standardize_prompts=4, reference_samples=4
    )
    ens = OffsetEnsemble()
    _, std, moved = _run(tmp_path, tiny_tokenizer, "std", source=ens, reward=config, steps=2)
    _, raw, _ = _run(
        tmp_path, tiny_tokenizer, "raw", source=ens, steps=2,
        reward=RewardPipelineConfig(aggregator="mean"),
    )  # fmt: skip
    # Raw, the mean carries the 100 / 2 offset; standardized on base samples, the first
    # batch (from π0 itself) scores near 0 in base-policy standard deviations.
    assert abs(std[0]["r_proxy"]) < 2.0 and moved
    assert raw[0]["r_proxy"] > 40.0


def test_a_resumed_run_with_the_mitigations_equals_an_uninterrupted_one(tmp_path, tiny_tokenizer):
    # Delta under PPO, the proxy standardized on base samples, the SFT term: the calibration
    # and the SFT samples are rebuilt on resume from the same seeds.
    settings = dict(
        algorithm="ppo",
        kl_coef=0.05,
        sft_coef=0.5,
        checkpoint_every=3,
        reward=RewardPipelineConfig(
            shaping="step_delta", standardize_members=True, standardize_prompts=2,
            reference_samples=2,
        ),
    )  # fmt: skip
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
    timing = ("sample_s", "step_s")
    train = {
        name: [
            {k: v for k, v in r.items() if k not in timing}
            for r in read_jsonl(tmp_path / name / "train.jsonl")
        ]
        for name in ("straight", "resumed")
    }
    assert train["resumed"] == train["straight"]
    for k, v in straight.policy.state_dict().items():
        assert torch.equal(v, resumed.policy.state_dict()[k]), k


def test_length_fit_removes_a_pure_length_proxy_and_trains(tmp_path, tiny_tokenizer):
    # Proxy = length in words: f(ℓ), fitted on π0's samples of the train prompts, is ℓ itself
    # wherever π0 put mass, so the residual r − f(ℓ) is ≈ 0 while the proxy is not.
    shaping = RewardPipelineConfig(shaping="length_fit", reference_samples=4)
    _, train, moved = _run(
        tmp_path, tiny_tokenizer, "lenfit", source=WORDS, steps=2, reward=shaping
    )
    assert moved and len(train) == 2
    for r in train:
        assert r["r_proxy"] > 1.0
        assert abs(r["r_shaped"]) < 0.1 * r["r_proxy"], r


def test_centered_shaping_is_a_no_op_under_rloo_but_par_is_not(tmp_path, tiny_tokenizer):
    # centered: r − mean(r_ref), a per-prompt constant, which RLOO's leave-one-out baseline
    # r_i − mean_{j≠i} r_j removes; the par-shaping study measured the two runs equal on every
    # seed. PAR's σ(r − r_ref) is nonlinear, so it changes the advantages and the run.
    none, _, _ = _run(tmp_path, tiny_tokenizer, "none", algorithm="rloo", kl_coef=0.0)
    reward = RewardPipelineConfig(shaping="centered")
    centered, train_c, _ = _run(
        tmp_path, tiny_tokenizer, "centered", algorithm="rloo", kl_coef=0.0, reward=reward
    )
    par, _, _ = _run(
        tmp_path, tiny_tokenizer, "par", algorithm="rloo", kl_coef=0.0,
        reward=RewardPipelineConfig(shaping="par"),
    )  # fmt: skip
    assert train_c[0]["r_shaped"] != pytest.approx(train_c[0]["r_proxy"])  # it did shape
    final = lambda r: r.metrics[-1]["gold"]  # noqa: E731
    assert final(centered) == pytest.approx(final(none), abs=1e-6)
    # The same policy to float rounding (the advantages differ in the last bits).
    kl = lambda r: [m["kl"] for m in r.metrics]  # noqa: E731
    assert kl(centered) == pytest.approx(kl(none), rel=1e-4)
    assert kl(par) != pytest.approx(kl(none), rel=1e-4)  # (gold, a word count, may tie)
