"""The pairwise preference model as a reward source (rewards/pairwise.py, rewards/pipeline.py)."""

from __future__ import annotations

import json

import pytest
import torch

from goodhartlab.models.tiny import build_reward_model
from goodhartlab.rewards import REWARD_SOURCES, PairwisePreferenceModel, RewardModel
from goodhartlab.rewards.pairwise import PAIRWISE_TEMPLATE_VERSION, pairwise_input_ids
from goodhartlab.rewards.pipeline import RewardPipeline, RewardPipelineConfig
from goodhartlab.train.rm import save_reward_model
from goodhartlab.train.rm_pairwise import saved_pairwise_info

PROMPT = "review of a phone:"
A, B, C = " the screen is great.", " it was very bad and slow.", " fine."


@pytest.fixture
def pm(tiny_tokenizer):
    """An untrained pairwise model (seed 0), its head scaled up so that its (arbitrary)
    preferences are far from 1/2."""
    model = build_reward_model("small", tiny_tokenizer, seed=0)
    with torch.no_grad():
        model.score.weight.mul_(100.0)
    return PairwisePreferenceModel(model, tiny_tokenizer)


def _tok(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_template_by_hand(tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    (ids,) = pairwise_input_ids(tiny_tokenizer, [PROMPT], [A], [B], 200)
    # Version 1: tok(prompt + first) + [eos] + tok(second) + [eos].
    assert ids == [*_tok(tiny_tokenizer, PROMPT + A), eos, *_tok(tiny_tokenizer, B), eos]
    assert PAIRWISE_TEMPLATE_VERSION == "1"


def test_template_truncation_keeps_each_sides_end(tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    a, b, c = (_tok(tiny_tokenizer, t) for t in (PROMPT + A, B, C))
    assert len(c) <= 4 < len(a)
    # The second side fits in half the budget: it stays whole, the first loses its start
    # (the prompt's) to fill the rest.
    width = len(c) + 2 + 4
    (ids,) = pairwise_input_ids(tiny_tokenizer, [PROMPT], [A], [C], width)
    assert ids == [*a[-4:], eos, *c, eos] and len(ids) == width
    # Both longer than half the budget: each keeps its last (width − 2) / 2 tokens.
    assert len(b) > 3
    (ids,) = pairwise_input_ids(tiny_tokenizer, [PROMPT], [A], [B], 8)
    assert ids == [*a[-3:], eos, *b[-3:], eos]


def test_preferences_are_antisymmetric_and_one_half_against_itself(pm):
    p_ab = pm.preference([PROMPT] * 2, [A, B], [B, C])
    p_ba = pm.preference([PROMPT] * 2, [B, C], [A, B])
    torch.testing.assert_close(p_ab + p_ba, torch.ones(2))
    # a against a: both orders read the same ids, so the same logit up to the rounding of
    # the batched forward pass, and P = σ(0) = 1/2.
    assert pm.preference([PROMPT], [A], [A]).item() == pytest.approx(0.5, abs=1e-6)
    assert float((p_ab - 0.5).abs().max()) > 0.1  # the net has preferences


def test_preference_matrix_is_the_preferences_of_every_pair(pm):
    completions = [A, B, C, B + A, C + C, A + B]  # 2 prompts x G = 3
    prompts = [PROMPT, "review of a book:"]
    own = pm.preference_matrix(prompts, completions, 3)
    opponents = [C, A, B + B, A + C]  # 2 prompts x G' = 2
    vs = pm.preference_matrix(prompts, completions, 3, opponents, 2)
    assert own.shape == (2, 3, 3) and vs.shape == (2, 3, 2)
    for b in range(2):
        for i in range(3):
            assert own[b, i, i].item() == 0.5  # set, not computed
            for j in range(3):
                direct = pm.preference(
                    [prompts[b]], [completions[3 * b + i]], [completions[3 * b + j]]
                )
                assert own[b, i, j].item() == pytest.approx(direct.item(), abs=1e-6)
            for j in range(2):
                direct = pm.preference(
                    [prompts[b]], [completions[3 * b + i]], [opponents[2 * b + j]]
                )
                assert vs[b, i, j].item() == pytest.approx(direct.item(), abs=1e-6)
    with pytest.raises(ValueError, match="opp_group_size"):
        pm.preference_matrix(prompts, completions, 3, opponents, 3)


def test_saved_model_loads_as_pairwise_and_not_as_a_reward_model(tmp_path, pm, tiny_tokenizer):
    info = {"format_version": 1, **saved_pairwise_info(), "max_length": 64}
    save_reward_model(pm.model, tiny_tokenizer, tmp_path / "pm", info)
    loaded = REWARD_SOURCES["pairwise_preference"](str(tmp_path / "pm"))
    assert isinstance(loaded, PairwisePreferenceModel) and loaded.max_length == 64
    torch.testing.assert_close(
        loaded.preference([PROMPT], [A], [B]), pm.preference([PROMPT], [A], [B])
    )
    with pytest.raises(ValueError, match=r"pairwise preference model.*nash_mp"):
        RewardModel.from_pretrained(tmp_path / "pm")
    # A scalar reward model is not a pairwise one; an unknown template version is refused.
    save_reward_model(pm.model, tiny_tokenizer, tmp_path / "rm", {"format_version": 1})
    with pytest.raises(ValueError, match="not a pairwise preference model"):
        PairwisePreferenceModel.from_pretrained(tmp_path / "rm")
    info["pairwise_template"] = "0"
    save_reward_model(pm.model, tiny_tokenizer, tmp_path / "old", info)
    with pytest.raises(ValueError, match="template version 0"):
        PairwisePreferenceModel.from_pretrained(tmp_path / "old")
    assert json.loads((tmp_path / "pm" / "goodhart_rm.json").read_text())["kind"] == "pairwise"


def test_pipeline_pays_the_self_play_preference_in_training(pm):
    completions = [A, B, C, B + A]
    prompts = [PROMPT] * 2 + ["review of a book:"] * 2
    out = RewardPipeline(pm)(prompts, completions, group_size=2)
    # G = 2: each completion's payoff is its preference over the other one of its group.
    p = pm.preference([PROMPT, "review of a book:"], [A, C], [B, B + A])
    expected = torch.stack([p, 1 - p], dim=1).reshape(-1)
    torch.testing.assert_close(out.r_proxy, expected, atol=1e-6, rtol=0)
    assert out.r_members is None and torch.equal(out.r_shaped, out.r_proxy)
    with pytest.raises(ValueError, match="group_size"):
        RewardPipeline(pm)(prompts, completions)


def test_pipeline_scores_a_completion_by_its_win_rate_over_the_base_policy(pm):
    refs = {PROMPT: [B, C, A + A]}
    calls = []

    def sampler(prompts):
        calls.append(list(prompts))
        return [refs[p] for p in prompts]

    pipe = RewardPipeline(pm, RewardPipelineConfig(reference_samples=3), reference_sampler=sampler)
    r, members = pipe.score_source([PROMPT, PROMPT], [A, C])
    assert members is None
    for k, y in enumerate([A, C]):
        direct = pm.preference([PROMPT] * 3, [y] * 3, refs[PROMPT]).double().mean()
        assert r[k].item() == pytest.approx(direct.item(), abs=1e-6)
    pipe.score_source([PROMPT], [B])
    assert calls == [[PROMPT]]  # the references are sampled once per prompt
    with pytest.raises(ValueError, match="reference_sampler"):
        RewardPipeline(pm).score_source([PROMPT], [A])


@pytest.mark.parametrize(
    "config, field",
    [
        (RewardPipelineConfig(shaping="par"), r"reward\.shaping"),
        (RewardPipelineConfig(standardize_members=True), r"reward\.standardize_members"),
    ],
)
def test_pipeline_refuses_what_needs_a_scalar_score(pm, config, field):
    with pytest.raises(ValueError, match=field):
        RewardPipeline(
            pm, config, reference_sampler=lambda p: [[A]] * len(p), calibration_prompts=[PROMPT]
        )
