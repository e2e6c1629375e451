"""The reward pipeline: source -> aggregate -> shape -> KL penalty, and its bad-input errors."""

from __future__ import annotations

import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from goodhartlab.core.shaping import par
from goodhartlab.models.tiny import build_reward_model
from goodhartlab.rewards import Ensemble, ProgrammaticReward, RewardModel
from goodhartlab.rewards.pipeline import KLPenalty, RewardPipeline, RewardPipelineConfig

PROMPTS = ["q1:", "q1:", "q2:", "q2:"]
COMPLETIONS = [" a", " a b", " a b c", ""]
WORDS = ProgrammaticReward(lambda p, c: float(len(c.split())), name="words", version="1")


def test_no_shaping_no_penalty_is_the_source():
    out = RewardPipeline(WORDS)(PROMPTS, COMPLETIONS)
    expected = torch.tensor([1.0, 2.0, 3.0, 0.0])
    for r in (out.r_proxy, out.r_shaped, out.r_final):
        torch.testing.assert_close(r, expected)
    assert out.r_members is None and out.kl_coef == 0.0


def test_kl_coef_zero_leaves_the_reward_unchanged():
    kl = torch.tensor([0.5, 1.0, 2.0, 3.0])
    out = RewardPipeline(WORDS, kl_penalty=KLPenalty(0.0))(PROMPTS, COMPLETIONS, kl=kl)
    assert torch.equal(out.r_final, out.r_shaped)


def test_kl_penalty_subtracts_beta_kl():
    kl = torch.tensor([0.5, 1.0, 2.0, 3.0])
    out = RewardPipeline(WORDS, kl_penalty=KLPenalty(0.1))(PROMPTS, COMPLETIONS, kl=kl)
    # [1, 2, 3, 0] − 0.1 · [0.5, 1, 2, 3]
    torch.testing.assert_close(out.r_final, torch.tensor([0.95, 1.9, 2.8, -0.3]))
    with pytest.raises(ValueError, match="kl: required"):
        RewardPipeline(WORDS, kl_penalty=KLPenalty(0.1))(PROMPTS, COMPLETIONS)


def test_adaptive_penalty_moves_towards_the_target_and_round_trips():
    pen = KLPenalty(0.1, target=1.0, horizon=100)
    # KL 10x the target: error clipped to +0.2, β · (1 + 0.2 · 50/100) = 0.11
    assert pen.update(10.0, 50) == pytest.approx(0.11)
    pipe = RewardPipeline(WORDS, kl_penalty=pen)
    fresh = RewardPipeline(WORDS, kl_penalty=KLPenalty(0.1, target=1.0, horizon=100))
    fresh.load_state_dict(pipe.state_dict())
    assert fresh.kl_penalty.coef == pytest.approx(0.11)


def _nan_at_2(prompts, completions):
    r = torch.ones(len(prompts))
    r[2] = float("nan")
    return r


def test_nan_reward_is_an_error_naming_the_source():
    with pytest.raises(ValueError, match=r"_nan_at_2.*nan.*item 2"):
        RewardPipeline(_nan_at_2)(PROMPTS, COMPLETIONS)


def test_wrong_number_of_scores_is_an_error_naming_the_source():
    def short(prompts, completions):
        return [1.0] * (len(prompts) - 1)

    with pytest.raises(ValueError, match=r"short.*expected 4 scores.*got shape \(3,\)"):
        RewardPipeline(short)(PROMPTS, COMPLETIONS)


def test_nan_member_of_an_ensemble_is_an_error():
    class Members:
        name = "ens"

        def score_members(self, prompts, completions):
            r = torch.zeros(3, len(prompts))
            r[1, 0] = float("nan")  # nanmean-style aggregators would hide it
            return r

    with pytest.raises(ValueError, match=r"ens.*member 1"):
        RewardPipeline(Members())(PROMPTS, COMPLETIONS)


def test_ensemble_aggregators_and_uwo_default_lambda(tiny_tokenizer):
    ens = Ensemble(
        [
            RewardModel(build_reward_model("small", tiny_tokenizer, seed=s), tiny_tokenizer)
            for s in (0, 1, 2)
        ]
    )
    r = ens.score_members(PROMPTS, COMPLETIONS)
    uwo = RewardPipeline(ens, RewardPipelineConfig(aggregator="uwo"))(PROMPTS, COMPLETIONS)
    # λ = 0.1 (Coste et al.'s value for RL), population variance.
    torch.testing.assert_close(uwo.r_proxy, r.mean(0) - 0.1 * r.var(0, correction=0))
    torch.testing.assert_close(uwo.r_members, r)
    wco = RewardPipeline(ens, RewardPipelineConfig(aggregator="wco"))(PROMPTS, COMPLETIONS)
    torch.testing.assert_close(wco.r_proxy, r.min(0).values)


def test_bad_aggregator_or_parameter_fails_at_config_time():
    with pytest.raises(ValueError, match="aggregator"):
        RewardPipelineConfig(aggregator="max")
    with pytest.raises(ValueError, match="does not take"):
        RewardPipelineConfig(aggregator="wco", aggregator_params={"lam": 1.0})
    with pytest.raises(ValueError, match="ceil"):
        RewardPipelineConfig(shaping="ceil")


def test_members_with_different_tokenizers_are_an_error(tiny_tokenizer):
    vocab = {"<pad>": 0, "<eos>": 1, "great": 2, "bad": 3}
    wl = Tokenizer(models.WordLevel(vocab, unk_token="bad"))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    other = PreTrainedTokenizerFast(tokenizer_object=wl, pad_token="<pad>", eos_token="<eos>")
    a = RewardModel(build_reward_model("small", tiny_tokenizer), tiny_tokenizer)
    b = RewardModel(build_reward_model("small", other), other)
    with pytest.raises(ValueError, match="tokenizer"):
        RewardPipeline(Ensemble([a, b]))


class CountingSampler:
    """M fixed reference completions per prompt; counts the prompts it was asked for."""

    def __init__(self, m: int):
        self.m = m
        self.asked: list[str] = []

    def __call__(self, prompts):
        self.asked += list(prompts)
        return [[" x" * (j + 1) for j in range(self.m)] for _ in prompts]


def test_par_uses_references_sampled_and_scored_once_per_prompt():
    sampler = CountingSampler(3)
    pipe = RewardPipeline(
        WORDS, RewardPipelineConfig(shaping="par", reference_samples=3), reference_sampler=sampler
    )
    out = pipe(PROMPTS, COMPLETIONS)
    # References score 1, 2, 3 words: r_RL = mean_m σ(r − r_ref^m).
    r_ref = torch.tensor([[1.0, 2.0, 3.0]] * 4)
    torch.testing.assert_close(out.r_shaped, par(torch.tensor([1.0, 2.0, 3.0, 0.0]), r_ref))
    assert out.r_shaped[0] == pytest.approx(
        (1 / (1 + math.exp(0)) + 1 / (1 + math.exp(1)) + 1 / (1 + math.exp(2))) / 3
    )
    pipe(PROMPTS, COMPLETIONS)
    assert sampler.asked == ["q1:", "q2:"]  # cached after the first batch


def test_par_without_a_reference_sampler_is_an_error():
    with pytest.raises(ValueError, match="reference_sampler"):
        RewardPipeline(WORDS, RewardPipelineConfig(shaping="par"))


def test_clip_shaping_uses_running_moments_and_restores_them():
    pipe = RewardPipeline(WORDS, RewardPipelineConfig(shaping="clip"))
    out = pipe(PROMPTS, COMPLETIONS)
    # μ = 1.5, σ = sqrt(1.25) (population) over [1, 2, 3, 0]: clip to [0.382, 2.618].
    s = math.sqrt(1.25)
    torch.testing.assert_close(out.r_shaped, torch.tensor([1.0, 2.0, 1.5 + s, 1.5 - s]))
    other = RewardPipeline(WORDS, RewardPipelineConfig(shaping="clip"))
    other.load_state_dict(pipe.state_dict())
    assert other.moments == pipe.moments


def test_score_source_is_pure():
    pipe = RewardPipeline(WORDS, RewardPipelineConfig(shaping="meanstd"))
    pipe.score_source(PROMPTS, COMPLETIONS)
    assert pipe.moments.count == 0


# -- step-level shaping (Gao et al. 2024) ------------------------------------------------------

STEP_PROMPTS = ["q1:", "q2:", "q3:"]
# Sentences: " a b ." | " c ." | " d e f"  (3 steps); " x ." (1 step); "" (1 step, itself).
STEP_COMPLETIONS = [" a b . c . d e f", " x .", ""]


def test_step_delta_scores_each_sentence_prefix():
    out = RewardPipeline(WORDS, RewardPipelineConfig(shaping="step_delta"))(
        STEP_PROMPTS, STEP_COMPLETIONS
    )
    # Prefix word counts (the '.' is a word): 3, 5, 8 | 2 | 0. Delta: 3 − 5, 5 − 8, 8 | 2 | 0;
    # the sums (= the first prefix's score) are the sequence rewards.
    torch.testing.assert_close(
        out.steps.r_steps, torch.tensor([[3.0, 5.0, 8.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    )
    torch.testing.assert_close(
        out.steps.rewards, torch.tensor([[-2.0, -3.0, 8.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    )
    assert out.steps.mask.sum(dim=1).tolist() == [3, 1, 1]
    assert out.steps.ends == [[6, 10, 16], [4], [0]]
    torch.testing.assert_close(out.r_shaped, torch.tensor([3.0, 2.0, 0.0]))
    torch.testing.assert_close(out.r_proxy, torch.tensor([8.0, 2.0, 0.0]))  # the whole completion


def test_step_clip_bounds_the_return_by_zero():
    config = RewardPipelineConfig(shaping="step_clip", shaping_params={"eta": 4.0})
    out = RewardPipeline(WORDS, config)(STEP_PROMPTS, STEP_COMPLETIONS)
    # min(r − 4, 0) per prefix: (−1, 0, 0) | −2 | −4.
    torch.testing.assert_close(out.r_shaped, torch.tensor([-1.0, -2.0, -4.0]))
    torch.testing.assert_close(out.steps.rewards[0], torch.tensor([-1.0, 0.0, 0.0]))


def test_step_clip_rejects_a_bad_eta_at_config_time():
    with pytest.raises(ValueError, match="eta"):
        RewardPipelineConfig(shaping="step_clip", shaping_params={"eta": float("nan")})


def test_running_center_subtracts_the_mean_of_all_rewards_seen():
    pipe = RewardPipeline(WORDS, RewardPipelineConfig(shaping="running_center"))
    out = pipe(PROMPTS, COMPLETIONS)  # rewards 1, 2, 3, 0: mean 1.5
    torch.testing.assert_close(out.r_shaped, torch.tensor([-0.5, 0.5, 1.5, -1.5]))
    out = pipe(PROMPTS[:1], [" a b c d e f g h i"])  # 9: mean of the five seen is 15/5 = 3
    torch.testing.assert_close(out.r_shaped, torch.tensor([6.0]))


class OffsetMembers:
    """Two members: the word count, and 100 + 2 × the count of 'b' (an arbitrary offset)."""

    name = "offsets"

    def score_members(self, prompts, completions):
        words = [float(len(c.split())) for c in completions]
        bs = [100.0 + 2.0 * c.count("b") for c in completions]
        return torch.tensor([words, bs])


class ABCSampler(CountingSampler):
    def __call__(self, prompts):
        self.asked += list(prompts)
        return [[" a", " a b", " a b c"] for _ in prompts]


def test_standardize_members_on_base_policy_samples():
    sampler = ABCSampler(3)
    config = RewardPipelineConfig(aggregator="wco", standardize_members=True, reference_samples=3)
    pipe = RewardPipeline(
        OffsetMembers(), config, reference_sampler=sampler, calibration_prompts=["c1", "c2"]
    )
    r, members = pipe.score_source(["q"], [" a b"])
    # Calibration: words 1, 2, 3 (twice): μ = 2, σ = sqrt(2/3); b's 100, 102, 102: μ = 304/3,
    # σ = sqrt(8/9). " a b": z_words = 0, z_b = (102 − 304/3) / sqrt(8/9) = (2/3)/sqrt(8/9).
    torch.testing.assert_close(
        members[:, 0], torch.tensor([0.0, (2 / 3) / math.sqrt(8 / 9)]), rtol=1e-5, atol=1e-6
    )
    assert r.item() == pytest.approx(0.0, abs=1e-6)  # WCO: the minimum of the z-scores
    raw = RewardPipeline(OffsetMembers(), RewardPipelineConfig(aggregator="wco"))
    assert raw.score_source(["q"], [" a b"])[0].item() == 2.0  # raw: always the low-offset member
    pipe.score_source(["q"], [" a"])
    assert sampler.asked == ["c1", "c2"]  # calibrated once


def test_standardize_members_needs_a_sampler_and_prompts():
    config = RewardPipelineConfig(standardize_members=True)
    with pytest.raises(ValueError, match="standardize_members"):
        RewardPipeline(WORDS, config)


class GoodBadSampler(CountingSampler):
    def __call__(self, prompts):
        self.asked += list(prompts)
        return [[" a", " a b", " a b c", " good", " good b", " good b c"] for _ in prompts]


# Quality q = 1 with "good", else 0; the proxy r = q − ℓ/2 pays for brevity (ℓ in words).
BREVITY = ProgrammaticReward(
    lambda p, c: float("good" in c) - 0.5 * len(c.split()), name="brevity", version="1"
)


def test_length_fit_subtracts_the_length_bias_fitted_on_base_samples():
    sampler = GoodBadSampler(6)
    config = RewardPipelineConfig(shaping="length_fit", reference_samples=6)
    pipe = RewardPipeline(BREVITY, config, reference_sampler=sampler, calibration_prompts=["c"])
    # Calibration: ℓ = 1, 2, 3 each with q = 0 and 1, so E[r | ℓ] = 1/2 − ℓ/2 = f(ℓ).
    # " a b": r = −1, f = −1/2 -> −1/2; " good b c": r = −1/2, f = −1 -> 1/2;
    # " good": r = 1/2, f = 0 -> 1/2. The residual is q − 1/2: length no longer pays.
    out = pipe(["q"] * 3, [" a b", " good b c", " good"])
    torch.testing.assert_close(out.r_proxy, torch.tensor([-1.0, -0.5, 0.5]))
    torch.testing.assert_close(
        out.r_shaped, torch.tensor([-0.5, 0.5, 0.5], dtype=out.r_shaped.dtype), atol=0.03, rtol=0
    )
    report = pipe.length_bias_report
    # ρ(r, ℓ) = −½ Var ℓ / sqrt((¼ + ¼ Var ℓ) Var ℓ) with Var ℓ = 2/3: −(1/3) / sqrt(5/18).
    assert report.n == 6 and report.pearson_before == pytest.approx(-(1 / 3) / math.sqrt(5 / 18))
    assert abs(report.pearson_after) < 0.01
    assert report.curve == pytest.approx({1: 0.0, 2: -0.5, 3: -1.0}, abs=0.03)
    pipe(["q"], [" a"])
    assert sampler.asked == ["c"]  # sampled and fitted once


def test_ceil_base_caps_at_the_quantile_of_base_sample_rewards():
    sampler = GoodBadSampler(6)
    config = RewardPipelineConfig(
        shaping="ceil_base", shaping_params={"quantile": 0.5}, reference_samples=6
    )
    pipe = RewardPipeline(BREVITY, config, reference_sampler=sampler, calibration_prompts=["c"])
    # Calibration rewards: -1/2, -1, -3/2, 1/2, 0, -1/2; sorted -3/2, -1, -1/2, -1/2, 0, 1/2;
    # the median (position 2.5) is -1/2: rewards above it are capped there.
    out = pipe(["q"] * 3, [" a b c", " a", " good"])
    torch.testing.assert_close(out.r_proxy, torch.tensor([-1.5, -0.5, 0.5]))
    torch.testing.assert_close(out.r_shaped, torch.tensor([-1.5, -0.5, -0.5]))
    pipe(["q"], [" a"])
    assert sampler.asked == ["c"]  # the base samples are drawn and scored once
    with pytest.raises(ValueError, match="ceil_base"):
        RewardPipeline(BREVITY, config)
    with pytest.raises(ValueError, match="quantile"):
        RewardPipelineConfig(shaping="ceil_base")


def test_length_fit_needs_a_sampler_and_prompts_and_checks_its_params():
    with pytest.raises(ValueError, match="length_fit"):
        RewardPipeline(WORDS, RewardPipelineConfig(shaping="length_fit"))
    with pytest.raises(ValueError, match="dim"):
        RewardPipelineConfig(shaping="length_fit", shaping_params={"dim": 3})
