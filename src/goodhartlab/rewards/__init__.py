"""Reward sources: ``score(prompts, completions) -> Tensor[B]`` (ensembles also (M, B))."""

from goodhartlab.registry import REWARD_SOURCES
from goodhartlab.rewards.ensemble import Ensemble
from goodhartlab.rewards.judge import (
    JUDGE_TEMPLATE_VERSION,
    GenerativeJudge,
    RubricJudge,
    load_judge,
)
from goodhartlab.rewards.pairwise import PAIRWISE_TEMPLATE_VERSION, PairwisePreferenceModel
from goodhartlab.rewards.programmatic import ProgrammaticReward
from goodhartlab.rewards.reward_model import (
    RewardModel,
    collate_rm_inputs,
    reward_at_last_token,
    rm_batch_input_ids,
    rm_input_ids,
)

__all__ = [
    "REWARD_SOURCES",
    "Ensemble",
    "GenerativeJudge",
    "PairwisePreferenceModel",
    "ProgrammaticReward",
    "RewardModel",
    "RubricJudge",
    "collate_rm_inputs",
    "reward_at_last_token",
    "rm_batch_input_ids",
    "rm_input_ids",
]


def _reward_model(path: str, device: str = "cpu") -> RewardModel:
    """A reward model directory (a scalar-head sequence classifier) loaded with safetensors."""
    return RewardModel.from_pretrained(path, device=device)


def _ensemble(paths: list[str], device: str = "cpu") -> Ensemble:
    """An ensemble from member directories, or from one ensemble directory (ensemble.json)."""
    from pathlib import Path

    from goodhartlab.rewards.ensemble import ensemble_member_dirs

    members = ensemble_member_dirs(paths[0]) if len(paths) == 1 else [Path(p) for p in paths]
    return Ensemble.from_dirs(members, device=device)


def _pairwise_preference(path: str, device: str = "cpu"):
    """A pairwise preference model P(y ≻ y' | x) directory (objective 'pairwise'; nash_mp only).

    It has no per-completion score: RL optimizes it with algorithm nash_mp only."""
    return PairwisePreferenceModel.from_pretrained(path, device=device)


REWARD_SOURCES.register(
    "reward_model", _reward_model, params={"path": "the reward model's directory"}
)
REWARD_SOURCES.register(
    "pairwise_preference", _pairwise_preference,
    paper="Munos et al. 2023, arXiv 2312.00886 (NLHF's preference model)",
    params={"path": "the pairwise preference model's directory"},
    version=PAIRWISE_TEMPLATE_VERSION,
)  # fmt: skip
REWARD_SOURCES.register(
    "ensemble", _ensemble, paper="Coste et al. 2023, arXiv 2310.02743",
    params={"paths": "member directories, or one ensemble directory"},
)  # fmt: skip


_JUDGE_PARAMS = {
    "path": "a causal-LM folder (real_text's policy folder): the judge",
    "max_rating": "top of the 1..max_rating scale (2..9, one digit token each)",
    "batch_size": "judge prompts per forward pass",
}


def _judge_direct(path: str, device: str = "cpu", max_rating: int = 9, batch_size: int = 16):
    """A causal LM prompted as a judge: its expected 1..9 rating of each answer (no sampling)."""
    return load_judge(GenerativeJudge, path, device, max_rating=max_rating, batch_size=batch_size)


def _judge_rubric(
    path: str,
    device: str = "cpu",
    max_rating: int = 9,
    batch_size: int = 16,
    rubric_tokens: int = 96,
):
    """A causal LM that writes a rubric per prompt (greedy), then rates each answer against it."""
    return load_judge(
        RubricJudge, path, device, max_rating=max_rating, batch_size=batch_size,
        rubric_tokens=rubric_tokens,
    )  # fmt: skip


REWARD_SOURCES.register(
    "judge_direct", _judge_direct, paper="RM-R1, Chen et al. 2025, arXiv 2505.02387 "
    "(generative judge); G-Eval's expected score, arXiv 2303.16634",
    params=_JUDGE_PARAMS, higher_is_better=True, version=JUDGE_TEMPLATE_VERSION,
)  # fmt: skip
REWARD_SOURCES.register(
    "judge_rubric", _judge_rubric, paper="RM-R1 (arXiv 2505.02387) rubrics; Proxy-GRM "
    "rubric-then-verdict",
    params={**_JUDGE_PARAMS, "rubric_tokens": "the rubric's greedy token budget"},
    higher_is_better=True, version=JUDGE_TEMPLATE_VERSION,
)  # fmt: skip


def _register_lm_self() -> None:
    """Rewards read off a causal LM itself (issue 16 item 3; ``rewards.lm_self``)."""
    from goodhartlab.rewards import lm_self

    batch = "sequences per forward pass"
    REWARD_SOURCES.register(
        "lm_confidence",
        lm_self.lm_confidence,
        paper="Confidence as a Reward: Transforming LLMs into Reward Models (CRew), 2025",
        params={
            "path": "a causal LM folder",
            "device": "torch device",
            "batch_size": batch,
            "end_of_turn": "score the end-of-turn (eos) token with the completion",
        },
        higher_is_better=True,
    )
    REWARD_SOURCES.register(
        "lm_reference_likelihood",
        lm_self.lm_reference_likelihood,
        paper="Likelihood-Based Reward Designs for General LLM Reasoning, 2025",
        params={
            "path": "a causal LM folder",
            "device": "torch device",
            "references": "prompt -> reference (callable or mapping); None: real_text topic",
            "reduction": "'sum' (log-probability) or 'mean' (per token)",
            "batch_size": batch,
        },
        higher_is_better=True,
        version=lm_self.REFERENCE_VERSION,
    )
    REWARD_SOURCES.register(
        "lm_followup_likelihood",
        lm_self.lm_followup_likelihood,
        paper="Zhang et al. 2024, arXiv 2409.13948 (FLR)",
        params={
            "path": "a causal LM folder",
            "device": "torch device",
            "positive": "positive user follow-ups",
            "negative": "negative user follow-ups",
            "batch_size": batch,
        },
        higher_is_better=True,
        version=lm_self.FOLLOWUP_VERSION,
    )
    REWARD_SOURCES.register(
        "lm_endogenous", lm_self.lm_endogenous,
        paper="Generalist Reward Models: Found Inside Large Language Models, 2025",
        params={"path": "a causal LM folder", "device": "torch device",
                "alpha": "soft-max temperature of V", "gamma": "discount",
                "end_of_turn": "the eos token as the terminal action (V = 0 after it)",
                "batch_size": batch},
        higher_is_better=True,
    )  # fmt: skip


_register_lm_self()
