"""Cooper in the RL loop: the reward model trained on reference / policy pairs as the policy trains.

Cooper (Hong et al. 2025, arXiv 2508.05613): every RL step, after the policy update, a few
Bradley-Terry steps on the reward model, with a reference completion of each of the step's
prompts as the positive and the policy's sample of that prompt the rule rejects and the
reward model scores highest as the negative (``core.cooper``: the selection and its
equations; ``core.losses.bradley_terry_loss``: the loss).

What the method sees: the prompts, the policy's completions of the step and the reward
model's scores of them (the scores the policy was rewarded with), K base-policy samples of
each prompt (drawn once per prompt, seeded by (seed, prompt), by the sampler the RL loop
passes in), the frozen initial proxy's scores of those samples, and the rule ``check``
(``testbeds.toy_text.checks.toy_text_surface_check`` for toy_text; ``none`` passes every
completion). It never sees the gold reward.

The reward model trained is a copy (``CooperReward.model``): the proxy passed in, and its
directory on disk, are never modified; the RL loop scores the policy's samples with the copy,
and evaluates the policy with the frozen proxy, so ``proxy`` in metrics.jsonl is the same
reward as in a run without Cooper. The copy is updated in eval mode (no dropout), with its
own AdamW; its weights and optimizer state are checkpointed with the run.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from goodhartlab.core.cooper import negative_index, reference_index
from goodhartlab.core.losses import bradley_terry_loss
from goodhartlab.rewards.reward_model import RewardModel, collate_rm_inputs, reward_at_last_token

__all__ = ["CHECKS", "CooperConfig", "CooperReward"]


def _pass_all(prompt: str, completion: str) -> bool:
    return True


def _toy_text_surface(prompt: str, completion: str) -> bool:
    from goodhartlab.testbeds.toy_text.checks import toy_text_surface_check

    return toy_text_surface_check(prompt, completion)


#: The rules a Cooper run may use: f(prompt, completion) -> bool (True: passes).
CHECKS: dict[str, Callable[[str, str], bool]] = {
    "toy_text_surface": _toy_text_surface,
    "none": _pass_all,
}


class CooperConfig(BaseModel):
    """Cooper (Hong et al. 2025, arXiv 2508.05613): the reward model co-trained during RL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    check: Literal["toy_text_surface", "none"] = Field(
        "toy_text_surface",
        description="The rule c(x, y): toy_text_surface (testbeds.toy_text.checks: rejects "
        "unterminated, over-long, repetitive, stuffed, off-topic-part or stacked-intensifier "
        "text; never reads the gold), or none (every completion passes).",
    )
    reference_samples: int = Field(
        4,
        ge=1,
        description="K: base-policy samples per prompt; the positive is the one the frozen proxy "
        "scores highest among those that pass the check (no pair when none passes).",
    )
    fallback: Literal["top", "none"] = Field(
        "top",
        description="A prompt none of whose policy samples the check rejects: top, its sample "
        "the reward model scores highest is the negative; none, no pair.",
    )
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate of the reward model.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay of the reward model.")
    updates: int = Field(
        1, ge=1, description="Bradley-Terry steps on the step's pairs, every RL step."
    )
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="Clip the reward model's gradient norm (None: no clipping)."
    )


class CooperReward:
    """The co-trained copy of a reward model, its optimizer and the reference set.

    Args:
        config: :class:`CooperConfig`.
        reward: the proxy (a ``RewardModel``); it is copied, never modified.
        sampler: ``f(prompt) -> K base-policy completions`` (deterministic per prompt).
    """

    def __init__(
        self,
        config: CooperConfig,
        reward: Any,
        sampler: Callable[[str], list[str]],
    ):
        if not isinstance(reward, RewardModel):
            raise ValueError(
                f"cooper: trains a learned reward model (a RewardModel); the reward is "
                f"{type(reward).__name__}"
            )
        if reward.feature_head is not None:
            raise ValueError(
                "cooper: the reward model has a domain-feature layer (feature_head), which "
                "Cooper's Bradley-Terry update does not train; use a reward model without "
                "features"
            )
        self.config = config
        self.frozen = reward
        self.model = RewardModel(
            copy.deepcopy(reward.model),
            reward.tokenizer,
            max_length=reward.max_length,
            name=reward.name,
            tool=reward.tool,
        )
        for p in self.model.model.parameters():
            p.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(
            self.model.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.check = CHECKS[config.check]
        self.sampler = sampler
        self.references: dict[str, str | None] = {}

    def reference(self, prompt: str) -> str | None:
        """y⁺(x): the best passing base-policy sample under the frozen proxy (cached)."""
        if prompt not in self.references:
            samples = self.sampler(prompt)
            passed = torch.tensor([self.check(prompt, y) for y in samples])
            scores = self.frozen.score([prompt] * len(samples), samples)
            k = reference_index(scores, passed)
            self.references[prompt] = samples[k] if k >= 0 else None
        return self.references[prompt]

    def update(self, prompts: Sequence[str], completions: Sequence[str], scores: Tensor) -> dict:
        """The pairs of one RL step and ``updates`` Bradley-Terry steps on them.

        Args:
            prompts: the step's B prompts.
            completions: their G completions each, prompt-major. Shape: (B·G,)
            scores: the reward model's scores of ``completions`` (before this update).

        Returns:
            Statistics for train.jsonl: ``cooper_pairs``, ``cooper_rejected`` (the fraction
            of the policy's samples the check rejects), ``cooper_score_std`` (the std of
            ``scores`` over the batch: near 0 when the reward model has collapsed to a
            constant), ``cooper_acc`` and ``cooper_loss`` (before the update, on the pairs),
            ``cooper_margin``.
        """
        B = len(prompts)
        G = len(completions) // B
        rejected = torch.tensor(
            [not self.check(prompts[i // G], y) for i, y in enumerate(completions)]
        ).view(B, G)
        neg = negative_index(scores.detach().view(B, G).cpu(), rejected, self.config.fallback)
        pos_p, pos_y, neg_y = [], [], []
        for b, p in enumerate(prompts):
            ref = self.reference(p)
            if ref is None or int(neg[b]) < 0:
                continue
            y_neg = completions[b * G + int(neg[b])]
            if y_neg == ref:
                continue
            pos_p.append(p)
            pos_y.append(ref)
            neg_y.append(y_neg)
        stats = {
            "cooper_pairs": float(len(pos_p)),
            "cooper_rejected": float(rejected.float().mean()),
            "cooper_score_std": float(scores.float().std()),
        }
        if not pos_p:
            return stats | {
                "cooper_acc": math.nan,
                "cooper_loss": math.nan,
                "cooper_margin": math.nan,
            }
        m = self.model
        ids = m.input_ids(pos_p, pos_y) + m.input_ids(pos_p, neg_y)
        input_ids, mask = collate_rm_inputs(ids, m.pad_token_id)
        input_ids, mask = input_ids.to(m.device), mask.to(m.device)
        n = len(pos_p)
        params = list(m.model.parameters())
        was_training = m.model.training
        m.model.eval()  # no dropout: the update is deterministic
        try:
            for i in range(self.config.updates):
                r = reward_at_last_token(m.model, input_ids, mask).float()
                loss, bt = bradley_terry_loss(r[:n], r[n:])
                if i == 0:
                    stats.update(
                        cooper_acc=float(bt["accuracy"]),
                        cooper_loss=float(loss.detach()),
                        cooper_margin=float(bt["margin_mean"]),
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
                self.optimizer.step()
        finally:
            m.model.train(was_training)
        return stats
