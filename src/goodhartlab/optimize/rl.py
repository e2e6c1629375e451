"""RL against a proxy reward (GRPO, RLOO, PPO) with gold / proxy / KL tracking.

One loop, read top to bottom in :func:`run_rl` (build the run, restore a checkpoint, train,
write the summary) and :func:`_train`; each training step (:func:`rl_step`) is

1. sample G completions for each of B prompts from the current policy, keeping the token
   ids and the sampling-time log-probs (``logp_old``);
2. score them with the reward pipeline (source -> shaping -> KL penalty in the reward), and
   with ``occupancy_reg``, minus λ times a sequence-level occupancy divergence's per-sample
   gradient term (χ², √χ², TV, KL: Laidlaw et al. 2024, arXiv 2403.03185; optimize.occupancy);
3. advantages: GRPO group-normalized, RLOO leave-one-out, PPO GAE with a value model;
4. a few epochs of PPO-style clipped steps over minibatches (``core.losses``), plus, with
   ``sft_coef`` > 0, η times the NLL of SFT targets of the batch's prompts, base-policy
   samples or (``sft_source`` chosen) the chosen completions of preference pairs (the SFT
   regularizer of Liu et al. 2024, arXiv 2405.16436: ``core.losses.sft_nll_loss``);
5. with ``cooper``, a few Bradley-Terry steps on a copy of the reward model, a reference
   completion of each prompt over the policy's sample of it that a rule rejects and the
   reward model scores highest (Hong et al. 2025, arXiv 2508.05613; rewards.cooper).

Every ``eval_every`` steps (and at step 0, the base policy) the policy is evaluated on
held-out prompts (:func:`goodhartlab.measure.evaluate_policy`): one line in metrics.jsonl.
Checkpoints every ``checkpoint_every`` steps make the run resumable; a resumed run writes
the same metrics as an uninterrupted one (all randomness of step s is seeded from
(seed, s), and the state that carries over is checkpointed exactly).

The KL to the frozen base policy π0 is controlled either in the reward (k1 summed over the
completion, β fixed or adaptive: Ziegler et al. 2019, arXiv 1909.08593) or, for GRPO, in the
loss (k3 per token: Shao et al. 2024, arXiv 2402.03300).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from goodhartlab.artifacts import atomic_write_json
from goodhartlab.core.kl import REGULARIZERS, sequence_kl, token_kl
from goodhartlab.core.losses import sft_nll_loss
from goodhartlab.data.schema import PreferencePair
from goodhartlab.measure.evaluate import (
    Rollouts,
    completion_logprobs,
    completion_rollouts,
    evaluate_policy,
    position_ids,
    sample_rollouts,
)
from goodhartlab.models.loading import load_policy_and_reference, resolve_autocast_dtype
from goodhartlab.monitor.live import MonitorConfig
from goodhartlab.optimize.algorithms import RL_ALGORITHMS, AdvantageInputs
from goodhartlab.optimize.gardo import (
    GardoState,
    check_gardo_resume,
    check_gardo_run,
    diversity_amplified,
    gardo_state,
    gate_kl_penalty,
    note_penalized_kl,
    penalty_reference,
    reset_reference_if_due,
)
from goodhartlab.optimize.monitoring import MONITOR_LOG, RunMonitor, resolve_sources
from goodhartlab.optimize.nash_mp import check_pairwise_run
from goodhartlab.optimize.occupancy import occupancy_penalized
from goodhartlab.optimize.rundir import (
    RunDir,
    check_steps_reach,
    derived_seed,
    load_checkpoint,
    package_versions,
    prompts_hash,
    reward_identity,
    save_checkpoint,
)
from goodhartlab.registry import OCCUPANCY_DIVERGENCES, name_in
from goodhartlab.rewards.constrained import ConstrainedConfig, ConstrainedReward
from goodhartlab.rewards.cooper import CooperConfig, CooperReward
from goodhartlab.rewards.pipeline import KLPenalty, RewardPipeline, RewardPipelineConfig
from goodhartlab.train.rm import save_reward_model

__all__ = [
    "METRICS_VERSION",
    "ChosenTargets",
    "RLConfig",
    "RLResult",
    "ValueModel",
    "chosen_targets",
    "rl_step",
    "run_rl",
]

#: Bump on any change of what metrics.jsonl / train.jsonl fields mean.
METRICS_VERSION = "rl/v1"

#: Fields that may differ between a run and its resumption.
RESUMABLE_CHANGES = ("steps", "device")


class RLConfig(BaseModel):
    """Settings of an RL run. Invalid values fail at construction, naming the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: name_in(RL_ALGORITHMS) = Field(
        "grpo",
        description="Registry 'rl_algorithm'. grpo: group-normalized advantage, token-level clipped loss; rloo: "
        "leave-one-out advantage, sequence-level clipped REINFORCE; ppo: GAE with a value "
        "model (a copy of the policy's body with a linear head), token-level clipped loss; "
        "nash_mp: Nash Mirror Prox on a pairwise preference model's preference, or on the "
        "proxy's Bradley-Terry preference (optimize.nash_mp); the only one that can optimize "
        "a pairwise preference model.",
    )
    name: str | None = Field(None, description="Method label in metrics.jsonl (default rl-ALGO).")
    steps: int = Field(200, ge=1, description="Training steps (one batch of B·G completions each).")
    prompts_per_step: int = Field(8, ge=1, description="B: prompts sampled per step.")
    group_size: int = Field(
        8, ge=1, description="G: completions per prompt (>= 2 for grpo and rloo)."
    )
    epochs: int = Field(1, ge=1, description="Passes over each batch (PPO epochs).")
    minibatch_size: int | None = Field(
        None, ge=1, description="Rows per optimizer step; must divide B·G (None: B·G, one step)."
    )
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate (constant).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="Clip the gradient norm to this (None: no clipping)."
    )
    clip_coef: float = Field(0.2, gt=0, lt=1, description="ε of the clipped ratio.")
    kl_coef: float = Field(
        0.0, ge=0, description="β: weight of the KL to the base policy (0: no KL control)."
    )
    kl_in: Literal["reward", "loss"] = Field(
        "reward",
        description="reward: r − β·KL with KL the sequence k1 estimate (any algorithm); "
        "loss: β·k3 per token in GRPO's loss.",
    )
    kl_estimator: name_in(REGULARIZERS) | None = Field(
        None,
        description="Per-token KL estimate of the penalty (registry 'regularizer'); None: "
        "k1 in the reward (Ziegler et al. 2019), k3 in the loss (Shao et al. 2024).",
    )
    kl_target: float | None = Field(
        None,
        gt=0,
        description="Adaptive β (Ziegler et al. 2019) steering the sequence KL to this target "
        "in nats; needs kl_in='reward' and kl_coef > 0 (the initial β). None: fixed β.",
    )
    kl_horizon: int = Field(
        10_000, ge=1, description="Horizon of the adaptive controller (samples)."
    )
    kl_gate: Literal["member_std", "proxy_gap"] | None = Field(
        None,
        description="GARDO's gated KL (He et al. 2025, arXiv 2512.24138; optimize.gardo): the "
        "KL penalty in the reward only on the most uncertain samples of the batch, the "
        "uncertainty from an ensemble's members' win rates in the batch: member_std (their "
        "std), proxy_gap (the optimized reward's win rate minus the members' mean). None: off.",
    )
    kl_gate_fraction: float = Field(
        0.1,
        gt=0,
        le=1,
        description="kl_gate: the fraction of the batch penalized (the top); with "
        "kl_gate_adaptive, the fraction of the first step.",
    )
    kl_gate_adaptive: bool = Field(
        False,
        description="kl_gate: adapt the fraction every step as GARDO's released code does "
        "(core.gardo.adapted_gate_fraction): × (1 + kl_gate_adapt_rate) when the batch's mean "
        "non-negative uncertainty is above every one of the last kl_gate_window steps', × (1 − "
        "rate) when below all of them, clipped to [kl_gate_fraction_min, kl_gate_fraction_max]. "
        "False: fixed.",
    )
    kl_gate_adapt_rate: float = Field(
        0.1, gt=0, lt=1, description="kl_gate_adaptive: α, the fraction's relative step."
    )
    kl_gate_fraction_min: float = Field(
        0.02, gt=0, le=1, description="kl_gate_adaptive: the fraction's lower bound."
    )
    kl_gate_fraction_max: float = Field(
        0.2, gt=0, le=1, description="kl_gate_adaptive: the fraction's upper bound."
    )
    kl_gate_window: int = Field(
        20, ge=1, description="kl_gate_adaptive: W, the steps whose signals the rule compares."
    )
    kl_gate_threshold: float | None = Field(
        None,
        description="kl_gate: penalize where the uncertainty exceeds this instead of the top "
        "kl_gate_fraction (None: the fraction).",
    )
    ref_reset_every: int | None = Field(
        None,
        ge=1,
        description="GARDO's adaptive reference: the KL penalty's reference reset to the "
        "current policy after every K steps (metrics.jsonl's KL stays to the base policy; "
        "train.jsonl's kl is the penalty's). Must divide checkpoint_every, except with "
        "ref_reset_kl, where it is the longest interval between resets. None: fixed (or, with "
        "ref_reset_kl, no longest interval).",
    )
    ref_reset_kl: float | None = Field(
        None,
        gt=0,
        description="GARDO's KL-triggered reset (its released code): the reference is reset "
        "at the start of a step when the previous step's penalized samples (the gated ones "
        "with kl_gate, else all) had a mean sequence KL to it above this (nats), and at the "
        "latest ref_reset_every steps after the last reset (optimize.gardo). None: off.",
    )
    diversity_bonus: bool = Field(
        False,
        description="GARDO's diversity-aware amplification: advantages of samples above their "
        "group's mean reward × their token n-gram cosine distance to the nearest other "
        "completion of the prompt over the group's mean such distance (core.gardo).",
    )
    diversity_ngram: int = Field(2, ge=1, description="diversity_bonus: the n-gram order.")
    scale_rewards: bool = Field(
        True, description="grpo: divide by the group's std (False: Dr. GRPO's centering only)."
    )
    loss_type: Literal["grpo", "bnpo", "dapo"] = Field(
        "grpo", description="grpo: how token losses are averaged (core.losses.grpo_loss)."
    )
    sft_coef: float = Field(
        0.0,
        ge=0,
        description="η of the SFT regularizer (Liu et al. 2024, arXiv 2405.16436): the loss "
        "adds η × the per-token NLL of sft_samples targets per prompt of the step "
        "(sft_source says which) (0: off).",
    )
    sft_samples: int = Field(
        2, ge=1, description="SFT targets (completions) per prompt of a step for the SFT term."
    )
    sft_source: Literal["base", "chosen"] = Field(
        "base",
        description="The SFT term's targets: base: samples of the step's prompts from the "
        "base policy π0; chosen: the chosen completions of preference pairs (run_rl's "
        "sft_pairs, e.g. the pairs the proxies were trained on; RPO's form, Liu et al. 2024), "
        "each prompt's own where the pairs have it, else pairs drawn from all of them.",
    )
    occupancy_reg: name_in(OCCUPANCY_DIVERGENCES) | None = Field(
        None,
        description="Occupancy-measure regularizer over whole sequences (registry "
        "'occupancy_divergence'; Laidlaw et al. 2024, arXiv 2403.03185): sqrt_chi2 (the "
        "paper's), chi2, tv or kl; the reward becomes r − λ·t, t its per-sample gradient term "
        "from the sequence log-ratio (optimize.occupancy). None: off.",
    )
    occupancy_coef: float = Field(
        0.1,
        ge=0,
        description="λ of occupancy_reg: with occupancy_scale 'proxy_std', the paper's "
        "scale-free coefficient (λ = coef × the proxy's std on base-policy samples; "
        "√(1 − r²) by its Theorem 5.1), else λ itself.",
    )
    occupancy_scale: Literal["proxy_std", "none"] = Field(
        "proxy_std",
        description="proxy_std: λ = occupancy_coef × σ of the proxy on reference_samples "
        "base-policy completions of each of the first standardize_prompts training prompts; "
        "none: λ = occupancy_coef.",
    )
    nash_prox_coef: float = Field(
        1.0,
        ge=0,
        description="nash_mp: 1/η, weight of the k3 KL to π_k (the step's sampling policy) in "
        "both proximal steps' loss (Tiapkin et al. 2025, arXiv 2505.19731); its gradient is 0 "
        "on a batch's first update, so it acts only with epochs > 1 or minibatches.",
    )
    nash_opponents: int | None = Field(
        None,
        ge=1,
        description="nash_mp: G', completions per prompt sampled from the extrapolated policy "
        "π_{k+1/2} as the update step's opponents (None: group_size).",
    )
    nash_extrapolate: bool = Field(
        True,
        description="nash_mp: take Mirror Prox's extrapolation step; False: the ablation "
        "without it, one proximal step per batch on the self-play payoff P̂(y ≻ π_k) "
        "(mirror descent on the preference game).",
    )
    gamma: float = Field(1.0, ge=0, le=1, description="ppo: discount γ.")
    lam: float = Field(0.95, ge=0, le=1, description="ppo: GAE λ.")
    vf_coef: float = Field(0.1, ge=0, description="ppo: weight of the value loss.")
    vf_clip: float | None = Field(None, gt=0, description="ppo: value clipping ε_v (None: off).")
    whiten_advantages: bool = Field(True, description="ppo: standardize GAE advantages per batch.")
    max_new_tokens: int = Field(64, ge=1, description="Completion budget (tokens, EOS included).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature during training.")
    eval_every: int = Field(10, ge=1, description="Evaluate every this many steps (and at 0, end).")
    eval_prompts: int | None = Field(
        100, ge=1, description="Held-out prompts per evaluation (the first ones; None: all)."
    )
    eval_samples: int = Field(2, ge=1, description="Completions per held-out prompt.")
    eval_temperature: float = Field(1.0, gt=0, description="Decoding temperature of evaluation.")
    eval_batch_size: int = Field(256, ge=1, description="Rows sampled together in evaluation.")
    logged_samples: int = Field(
        4, ge=0, description="Evaluation samples per eval in samples.jsonl."
    )
    checkpoint_every: int = Field(
        50, ge=1, description="Checkpoint every this many steps (and at the end)."
    )
    keep_checkpoints: int = Field(2, ge=1, description="Newest checkpoints kept.")
    seed: int = Field(0, description="Seeds prompts, sampling, minibatch order and evaluation.")
    device: str = Field("cpu", description="cpu, cuda, cuda:1, ...")
    bf16: bool = Field(False, description="bf16 autocast (only where the device supports it).")
    reward: RewardPipelineConfig = Field(
        default_factory=RewardPipelineConfig,
        description="The reward pipeline: ensemble aggregator and shaping.",
    )
    monitor: MonitorConfig | None = Field(
        None,
        description="The hacking monitor (no gold) at every evaluation: detectors in "
        "metrics.jsonl, inputs in monitor.jsonl, alarm.json when it fires (None: off).",
    )
    constrained: ConstrainedConfig | None = Field(
        None,
        description="Constrained RLHF (μ-PPO, Moskovitz et al. 2023, arXiv 2310.04373; "
        "rewards.constrained): the reward ensemble's members are component proxies, held at "
        "their thresholds by Lagrange multipliers (dual ascent every step), the KL reward "
        "−β·KL as the objective (None: off).",
    )
    cooper: CooperConfig | None = Field(
        None,
        description="Cooper (Hong et al. 2025, arXiv 2508.05613; rewards.cooper): after each "
        "policy update, Bradley-Terry steps on a copy of the reward model (a single "
        "RewardModel), the positive of each prompt the best of K base-policy samples that pass "
        "a rule (under the frozen proxy), the negative the policy's sample the rule rejects "
        "and the reward model scores highest; the policy is rewarded by the copy and evaluated "
        "with the frozen proxy; never reads the gold (None: off).",
    )

    @model_validator(mode="after")
    def _check(self) -> RLConfig:
        algo = RL_ALGORITHMS[self.algorithm]
        if algo.group_based and self.group_size < 2:
            raise ValueError(
                f"group_size: {self.algorithm} needs G >= 2 completions per prompt (with G = 1 "
                "the group baseline equals the reward and every advantage is 0); got "
                f"{self.group_size}. Use group_size >= 2, or algorithm 'ppo'."
            )
        rows = self.prompts_per_step * self.group_size
        if self.minibatch_size is not None and rows % self.minibatch_size:
            raise ValueError(
                f"minibatch_size: must divide B·G = {rows} (prompts_per_step × group_size); "
                f"got {self.minibatch_size}"
            )
        if self.kl_in == "loss" and not algo.kl_in_loss:
            with_loss = [e.name for e in RL_ALGORITHMS.entries() if e.obj.kl_in_loss]
            raise ValueError(
                f"kl_in: 'loss' (the KL in the loss) exists for {', '.join(with_loss)} only; "
                f"{self.algorithm} takes the KL in the reward (kl_in='reward')"
            )
        if self.algorithm == "nash_mp" and self.reward.shaping != "none":
            raise ValueError(
                f"reward.shaping: nash_mp's payoff is the preference σ(r(y) − r(y')) of the "
                f"proxy itself; it takes no shaping (expected 'none', got {self.reward.shaping!r})"
            )
        if self.sft_source != "base" and self.sft_coef == 0:
            raise ValueError(
                f"sft_source: {self.sft_source!r} picks the SFT term's targets, but the term is "
                "off (sft_coef = 0); set sft_coef > 0, or leave sft_source at 'base'"
            )
        if self.kl_target is not None and (self.kl_in != "reward" or self.kl_coef <= 0):
            raise ValueError(
                "kl_target: the adaptive controller needs kl_in='reward' and kl_coef > 0 "
                f"(its initial β); got kl_in={self.kl_in!r}, kl_coef={self.kl_coef}"
            )
        return self

    @model_validator(mode="after")
    def _check_threshold_search(self) -> RLConfig:
        c = self.constrained
        if c is not None and c.search != "none" and c.search_every % self.eval_every:
            raise ValueError(
                f"constrained.search_every: the search is told an evaluation's gold, so it must "
                f"be a multiple of eval_every ({self.eval_every}); got {c.search_every}"
            )
        return self

    @model_validator(mode="after")
    def _check_gardo(self) -> RLConfig:
        group_based = RL_ALGORITHMS[self.algorithm].group_based
        if self.kl_gate is not None and (self.kl_in != "reward" or self.kl_coef <= 0):
            raise ValueError(
                "kl_gate: gates the KL penalty in the reward; needs kl_in='reward' and "
                f"kl_coef > 0, got kl_in={self.kl_in!r}, kl_coef={self.kl_coef}"
            )
        if (self.kl_gate is not None or self.diversity_bonus) and not group_based:
            raise ValueError(
                f"kl_gate / diversity_bonus: exist for group-based algorithms (groups of G "
                f"completions, the advantage from r_final); got algorithm={self.algorithm!r}"
            )
        if self.kl_gate_adaptive:
            if self.kl_gate is None or self.kl_gate_threshold is not None:
                raise ValueError(
                    "kl_gate_adaptive: adapts the fraction of a fraction gate; needs kl_gate "
                    f"and kl_gate_threshold=None, got kl_gate={self.kl_gate!r}, "
                    f"kl_gate_threshold={self.kl_gate_threshold}"
                )
            lo, hi = self.kl_gate_fraction_min, self.kl_gate_fraction_max
            if not lo <= self.kl_gate_fraction <= hi:
                raise ValueError(
                    f"kl_gate_fraction: with kl_gate_adaptive, the first fraction must lie in "
                    f"[kl_gate_fraction_min, kl_gate_fraction_max] = [{lo}, {hi}]; got "
                    f"{self.kl_gate_fraction}"
                )
        for name in ("ref_reset_every", "ref_reset_kl"):
            if getattr(self, name) is not None and self.kl_coef <= 0:
                raise ValueError(f"{name}: resets the KL penalty's reference; needs kl_coef > 0")
        if self.ref_reset_every is not None and self.ref_reset_kl is None:
            if self.checkpoint_every % self.ref_reset_every:
                raise ValueError(
                    f"ref_reset_every: must divide checkpoint_every ({self.checkpoint_every}), so "
                    f"that a resumed run resets where an uninterrupted one does; got {self.ref_reset_every}"
                )
        return self

    @property
    def method(self) -> str:
        return self.name or f"rl-{self.algorithm}"


@dataclass(frozen=True)
class RLResult:
    out_dir: Path
    metrics: list[dict[str, Any]]
    """The lines of metrics.jsonl."""
    policy: nn.Module
    """The trained policy."""


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


class ValueModel(nn.Module):
    """V(state before each completion token): the policy's body (copied) with a linear head.

    The head starts at 0, so the first values are 0 and the first advantages are the
    returns. Separate from the policy (no shared parameters), as in TRL's former PPO.
    """

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.body = copy.deepcopy(policy.base_model)
        self.head = nn.Linear(policy.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, rollouts: Rollouts) -> Tensor:
        """Values, 0 off the completion mask. Shape: (B, T)"""
        mask = rollouts.attention_mask
        hidden = self.body(
            input_ids=rollouts.input_ids, attention_mask=mask, position_ids=position_ids(mask)
        ).last_hidden_state
        width = rollouts.prompt_ids.shape[1]
        values = self.head(hidden[:, width - 1 : -1, :].float()).squeeze(-1)
        return values * rollouts.completion_mask


# --------------------------------------------------------------------------------------
# One training step
# --------------------------------------------------------------------------------------


@dataclass
class _Run:
    """What a training step needs (built once by :func:`run_rl`)."""

    cfg: RLConfig
    policy: nn.Module
    reference: nn.Module
    value_model: ValueModel | None
    tokenizer: Any
    pipeline: RewardPipeline
    optimizer: torch.optim.Optimizer
    train_prompts: list[str]
    device: torch.device
    autocast_dtype: torch.dtype | None
    kl_reference: nn.Module | None = None
    """The KL penalty's reference when it moves (GARDO's ref_reset_every / ref_reset_kl),
    else None: π0."""
    gardo: GardoState | None = None
    """GARDO's adaptive fraction and reset state (kl_gate_adaptive / ref_reset_kl), else None."""
    constrained: ConstrainedReward | None = None
    """μ-PPO's multipliers (``cfg.constrained``), else None."""
    cooper: CooperReward | None = None
    """Cooper's co-trained reward model (``cfg.cooper``), else None."""
    eval_proxy: Any = None
    """The reward the evaluations report as ``proxy`` when it is not the pipeline (Cooper:
    the frozen proxy), else None."""
    sft_chosen: ChosenTargets | None = None
    """The SFT term's targets with ``sft_source`` chosen (run_rl's ``sft_pairs``), else None."""

    def autocast(self):
        return torch.autocast(
            self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        )


@dataclass(frozen=True)
class _Experience:
    """One batch of rollouts with what the losses need, row-aligned."""

    rollouts: Rollouts
    logp_old: Tensor  # (B, T) sampling-time log-probs
    logp_ref: Tensor | None  # (B, T) for GRPO's k3 term in the loss, else None
    advantages: Tensor  # (B,) per sequence, or (B, T) per token (PPO)
    returns: Tensor | None  # (B, T) value targets (PPO)
    values_old: Tensor | None  # (B, T) (PPO)

    def select(self, idx: Tensor) -> _Experience:
        idx = idx.to(self.logp_old.device)
        pick = lambda x: None if x is None else x[idx]  # noqa: E731
        return _Experience(
            self.rollouts.select(idx), self.logp_old[idx], pick(self.logp_ref),
            self.advantages[idx], pick(self.returns), pick(self.values_old),
        )  # fmt: skip


def _loss(
    run: _Run, exp: _Experience, sft: Rollouts | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """The algorithm's loss on a minibatch (``optimize.algorithms``), and its statistics;
    with ``sft`` (the step's SFT targets, :func:`_sft_samples`), plus η · their NLL under
    the policy."""
    with run.autocast():
        logp = completion_logprobs(run.policy, exp.rollouts, run.cfg.temperature)
        loss, stats = RL_ALGORITHMS[run.cfg.algorithm].loss(run, exp, logp)
        if sft is not None:
            nll, sft_stats = sft_nll_loss(
                completion_logprobs(run.policy, sft, run.cfg.temperature), sft.completion_mask
            )
            loss, stats = loss + run.cfg.sft_coef * nll, {**stats, **sft_stats}
        return loss, stats


@dataclass(frozen=True)
class ChosenTargets:
    """The chosen completions of preference pairs as the SFT term's targets (``sft_source``
    chosen): Liu et al. 2024 (arXiv 2405.16436) regularize with the NLL of the preference
    data's chosen answers; here, of the pairs the proxy was trained on (their labelled-chosen
    side, label noise included)."""

    pairs: list[tuple[str, str]]
    """Every (prompt, chosen), in file order."""
    by_prompt: dict[str, list[int]]
    """A prompt's rows of ``pairs``."""

    @classmethod
    def from_pairs(cls, pairs: Sequence[PreferencePair]) -> ChosenTargets:
        """The targets of ``pairs``; none, or a pair with an empty prompt, is an error."""
        if not pairs:
            raise ValueError(
                "sft_pairs: no preference pairs (empty file?); sft_source 'chosen' needs at "
                "least one, whose chosen completion is an SFT target"
            )
        by_prompt: dict[str, list[int]] = {}
        for i, pair in enumerate(pairs):
            if not pair.prompt:
                raise ValueError(
                    f"sft_pairs: pair {i} has an empty prompt (nothing to condition its chosen "
                    "completion on)"
                )
            by_prompt.setdefault(pair.prompt, []).append(i)
        return cls([(p.prompt, p.chosen) for p in pairs], by_prompt)

    def draw(self, prompts: Sequence[str], n: int, seed: int) -> list[tuple[str, str]]:
        """``n`` (prompt, chosen) rows for each of ``prompts``, prompt-major, a pure function
        of the arguments: the prompt's own pairs where it has some, else pairs of any prompt
        (a chosen completion is a target for its own prompt only; the term then keeps its
        weight, as RPO's SFT term on the preference data keeps it). Uniform, without
        replacement when the pool has ``n`` rows or more."""
        rng = np.random.default_rng(seed)
        rows = []
        for prompt in prompts:
            pool = self.by_prompt.get(prompt) or range(len(self.pairs))
            for i in rng.choice(len(pool), n, replace=len(pool) < n):
                rows.append(self.pairs[pool[i]])
        return rows


def _sft_samples(run: _Run, prompts: list[str], step: int) -> Rollouts:
    """The SFT regularizer's targets: ``sft_samples`` rows for each of the step's prompts,
    prompt-major, their randomness seeded by (seed, step) so that a resumed run draws the
    same ones.

    ``sft_source`` base: completions of each prompt sampled from the frozen base policy.
    ``sft_source`` chosen: chosen completions of the preference pairs
    (:meth:`ChosenTargets.draw`: the prompt's own where the pairs have it, as Liu et al.'s
    SFT term is on the chosen answers of the same prompts; the study's toy_text pairs are
    drawn with replacement from the training prompts, and its 6000 cover all 600 of them
    (at least 2 each, median 10), a smaller set not every one; pairs of any prompt stand in
    for a prompt without any), tokenized as the policy's samples are (completion + EOS,
    :func:`completion_rollouts`) so that ``completion_logprobs`` and ``sft_nll_loss`` apply
    unchanged."""
    cfg = run.cfg
    seed = derived_seed(cfg.seed, "sft", step)
    if run.sft_chosen is not None:
        rows = run.sft_chosen.draw(prompts, cfg.sft_samples, seed)
        targets = completion_rollouts(run.tokenizer, [p for p, _ in rows], [c for _, c in rows])
        return targets.to(run.device)
    generator = torch.Generator(device=run.device).manual_seed(seed)
    return sample_rollouts(
        run.reference,
        run.tokenizer,
        prompts,
        cfg.sft_samples,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        generator=generator,
        autocast_dtype=run.autocast_dtype,
    )


def step_token_index(tokenizer: Any, rollouts: Rollouts, ends: list[list[int]]) -> Tensor:
    """The completion-token index where each step ends, from the steps' character ends.

    Step k ends on the first token whose decoded prefix reaches its end offset; the last step
    ends on the row's last completion token (EOS when sampled), where the sequence reward of
    PPO goes (``core.advantages.ppo_token_rewards``). Shape: (B, K), 0 past a row's steps.
    """
    last = rollouts.completion_mask.sum(dim=1) - 1
    out = torch.zeros(len(ends), max(len(e) for e in ends), dtype=torch.long)
    for b, row_ends in enumerate(ends):
        n = int(rollouts.num_tokens[b])
        ids = rollouts.completion_ids[b, :n].tolist()
        reach = [len(tokenizer.decode(ids[: t + 1], skip_special_tokens=True)) for t in range(n)]
        t = 0
        for k, e in enumerate(row_ends[:-1]):
            while t < n - 1 and reach[t] < e:
                t += 1
            out[b, k] = min(t, int(last[b]))
        out[b, len(row_ends) - 1] = int(last[b])
    return out


def rl_step(run: _Run, step: int) -> dict[str, float]:
    """One step: sample, score, advantages, clipped updates. Returns the step's statistics."""
    cfg, policy = run.cfg, run.policy
    B, G = cfg.prompts_per_step, cfg.group_size
    t0 = time.perf_counter()

    # 1. Sample G completions for each of B prompts (randomness seeded by (seed, step)).
    rng = np.random.default_rng(derived_seed(cfg.seed, "prompts", step))
    prompts = [run.train_prompts[i] for i in rng.choice(len(run.train_prompts), B, replace=False)]
    generator = torch.Generator(device=run.device).manual_seed(
        derived_seed(cfg.seed, "rollout", step)
    )
    rollouts = sample_rollouts(
        policy,
        run.tokenizer,
        prompts,
        G,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        generator=generator,
        autocast_dtype=run.autocast_dtype,
    )
    flat_prompts = [p for p in prompts for _ in range(G)]
    mask = rollouts.completion_mask
    logp_old = rollouts.logp
    t_sample = time.perf_counter()

    # 2. Score: reward pipeline, with the KL to π0 in the reward when asked.
    logp_ref = kl_seq = None
    gardo = reset_reference_if_due(run, step)  # GARDO's moving reference (optimize.gardo)
    if cfg.kl_coef > 0:
        ref = run.reference if run.kl_reference is None else run.kl_reference
        with torch.no_grad(), run.autocast():
            logp_ref = completion_logprobs(ref, rollouts, cfg.temperature)
        kl_seq = sequence_kl(logp_old, logp_ref, mask, cfg.kl_estimator or "k1")
    in_reward = run.pipeline.kl_penalty is not None
    scored = run.pipeline(
        flat_prompts, rollouts.completions, kl=kl_seq if in_reward else None, group_size=G
    )
    if cfg.kl_gate is not None:  # GARDO: the penalty on the uncertain samples only
        scored, gardo = gate_kl_penalty(run, scored, kl_seq, gardo)
    if cfg.ref_reset_kl is not None:  # GARDO: the KL that triggers the next step's reset
        gardo = note_penalized_kl(run, kl_seq, gardo)
    if run.constrained is not None:  # μ-PPO's Lagrangian of component proxies
        scored = run.constrained.apply(scored, kl_seq if in_reward else None)
    r_final = scored.r_final.to(run.device)
    occupancy: dict[str, float] = {}
    if cfg.occupancy_reg is not None:  # r − λ·t (Laidlaw et al. 2024): optimize.occupancy
        r_final, occupancy = occupancy_penalized(run, rollouts, logp_old, logp_ref, r_final)

    # 3. Advantages (the algorithm's: optimize.algorithms).
    kl_token = token_kl(logp_old, logp_ref, cfg.kl_estimator or "k1") if in_reward else None
    step_inputs = {}
    if scored.steps is not None:  # step-level shaping: a token-level algorithm uses each step
        step_inputs = dict(
            step_rewards=scored.steps.rewards,
            step_mask=scored.steps.mask,
            step_token=step_token_index(run.tokenizer, rollouts, scored.steps.ends),
        )
    advantages, returns, values_old = RL_ALGORITHMS[cfg.algorithm].advantages(
        run,
        AdvantageInputs(
            rollouts, r_final, scored.r_shaped, scored.kl_coef if in_reward else 0.0, kl_token, G,
            **step_inputs, prompts=flat_prompts, step=step,
        ),
    )  # fmt: skip
    if cfg.diversity_bonus:  # GARDO: amplify good samples that differ from their group
        advantages, gardo = diversity_amplified(cfg, rollouts, r_final, advantages, gardo)
    sft = _sft_samples(run, prompts, step) if cfg.sft_coef > 0 else None

    # 4. Clipped updates: `epochs` passes over shuffled minibatches.
    experience = _Experience(
        rollouts, logp_old, None if in_reward else logp_ref, advantages, returns, values_old
    )
    mb = cfg.minibatch_size or B * G
    shuffle = torch.Generator().manual_seed(derived_seed(cfg.seed, "minibatches", step))
    params = [p for g in run.optimizer.param_groups for p in g["params"]]
    sums: dict[str, float] = {}
    n_updates = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(B * G, generator=shuffle)
        for start in range(0, B * G, mb):
            loss, stats = _loss(run, experience.select(order[start : start + mb]), sft)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or math.inf)
            if not torch.isfinite(grad_norm):
                raise FloatingPointError(
                    f"step {step}: the gradient norm is {float(grad_norm)}; the run stopped "
                    "before this update (lower lr, or check the reward)"
                )
            run.optimizer.step()
            for k, v in {"loss": loss.detach(), "grad_norm": grad_norm, **stats}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n_updates += 1

    # The adaptive β sees the KL of the batch just optimized.
    if in_reward and kl_seq is not None:
        run.pipeline.kl_penalty.update(float(kl_seq.mean()), B * G)

    # 5. Cooper: the reward model learns from this batch's pairs (rewards.cooper).
    cooper: dict[str, float] = {}
    if run.cooper is not None:
        cooper = run.cooper.update(prompts, rollouts.completions, scored.r_proxy)
        cooper["r_proxy_frozen"] = float(
            run.cooper.frozen.score(flat_prompts, rollouts.completions).mean()
        )

    out = {k: v / n_updates for k, v in sums.items()}
    out.update(
        r_proxy=float(scored.r_proxy.mean()),
        r_shaped=float(scored.r_shaped.mean()),
        r_final=float(r_final.mean()),
        length=float(rollouts.num_tokens.float().mean()),
        eos_frac=float(rollouts.eos.float().mean()),
        kl_coef=scored.kl_coef if in_reward else cfg.kl_coef,
        sample_s=t_sample - t0,
        step_s=time.perf_counter() - t0,
    )
    out.update(occupancy)
    out.update(gardo)
    out.update(run.constrained.last_stats if run.constrained is not None else {})
    out.update(cooper)
    if run.sft_chosen is not None:  # the share of the step's prompts with their own targets
        out["sft_own_prompts"] = sum(p in run.sft_chosen.by_prompt for p in prompts) / B
    if kl_seq is not None:
        out["kl"] = float(kl_seq.mean())
    if scored.steps is not None:
        out["sentences"] = float(scored.steps.mask.sum(dim=1).float().mean())
    return out


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


def _logged_by(cfg: RLConfig) -> Callable[[int], dict[str, range | list[int]]]:
    """The log lines a run checkpointed at a step has written (see RunDir.resume_checkpoint):
    a train line per step, an evaluation at 0, every ``eval_every`` steps and at a final step
    (a checkpoint off the ``checkpoint_every`` grid, or at ``steps``, was the last step)."""

    def logged(step: int) -> dict[str, range | list[int]]:
        evals = [k for k in range(step + 1) if k % cfg.eval_every == 0]
        final = step == cfg.steps or step % cfg.checkpoint_every != 0
        if final and step % cfg.eval_every != 0:
            evals.append(step)
        logged = {"train": range(1, step + 1), "metrics": evals}
        return logged | ({MONITOR_LOG: evals} if cfg.monitor is not None else {})

    return logged


def _evaluate(
    run: _Run, step: int, eval_prompts: list[str], gold: Any, monitor: dict[str, Any] | None
) -> tuple[dict, list[dict], dict | None]:
    cfg = run.cfg
    metrics, samples, record = evaluate_policy(
        run.policy,
        run.reference,
        run.tokenizer,
        eval_prompts,
        gold=gold,
        proxy=run.pipeline if run.eval_proxy is None else run.eval_proxy,
        num_samples=cfg.eval_samples,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.eval_temperature,
        seed=derived_seed(cfg.seed, "eval"),
        batch_size=cfg.eval_batch_size,
        num_logged_samples=cfg.logged_samples,
        autocast_dtype=run.autocast_dtype,
        monitor=monitor,
    )
    kl_coef = run.pipeline.kl_penalty.coef if run.pipeline.kl_penalty is not None else cfg.kl_coef
    # No timings here: a resumed run's metrics must equal an uninterrupted run's.
    line = {"method": cfg.method, "step": step, **metrics, "kl_coef": kl_coef}
    return line, [{"step": step, **s} for s in samples], record


def run_identity(
    policy_id: dict[str, Any],
    reward: Any,
    gold: Any,
    train_prompts: Sequence[str],
    eval_prompts: Sequence[str],
    sft_chosen: ChosenTargets | None = None,
) -> dict[str, Any]:
    """What a run optimizes and measures, for config.yaml (a resume must match it)."""
    sft = {}
    if sft_chosen is not None:
        rows = [json.dumps(row) for row in sft_chosen.pairs]
        sft = {"sft_pairs": {"count": len(rows), "sha256": prompts_hash(rows)}}
    return {
        "policy": policy_id,
        "reward": reward_identity(reward),
        "gold": {
            "name": str(getattr(gold, "name", type(gold).__name__)),
            "version": str(getattr(gold, "version", "unversioned")),
        },
        "train_prompts": {"count": len(train_prompts), "sha256": prompts_hash(train_prompts)},
        "eval_prompts": {"count": len(eval_prompts), "sha256": prompts_hash(eval_prompts)},
        **sft,
    }


def _base_policy_samples(
    cfg: RLConfig,
    reference: nn.Module,
    tokenizer: Any,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    purpose: str,
    prompt: str,
    n: int,
) -> list[str]:
    """``n`` completions of ``prompt`` from the frozen base policy π0, seeded by (seed,
    ``purpose``, prompt), so that a resumed run draws the same ones."""
    gen = torch.Generator(device=device).manual_seed(derived_seed(cfg.seed, purpose, prompt))
    return sample_rollouts(
        reference,
        tokenizer,
        [prompt],
        n,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        generator=gen,
        autocast_dtype=autocast_dtype,
    ).completions


def _build_run(
    cfg: RLConfig,
    model: nn.Module,
    reference: nn.Module,
    tokenizer: Any,
    reward: Any,
    train_prompts: Sequence[str],
    device: torch.device,
    sft_chosen: ChosenTargets | None = None,
) -> _Run:
    """The reward pipeline, the value model (if the algorithm has one) and the optimizer."""
    autocast_dtype = resolve_autocast_dtype(cfg.bf16, device)
    sample_base = partial(_base_policy_samples, cfg, reference, tokenizer, device, autocast_dtype)

    def reference_sampler(prompts: Sequence[str]) -> list[list[str]]:  # PAR / LSC / centered
        return [sample_base("reference", p, cfg.reward.reference_samples) for p in prompts]

    cooper = eval_proxy = None
    if cfg.cooper is not None:  # the pipeline scores with a copy that the run trains
        positives = partial(sample_base, "cooper_reference", n=cfg.cooper.reference_samples)
        cooper = CooperReward(cfg.cooper, reward, positives)
        reward, eval_proxy = cooper.model, RewardPipeline(reward)

    kl_penalty = (
        KLPenalty(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
        if cfg.kl_in == "reward" and cfg.kl_coef > 0
        else None
    )
    pipeline = RewardPipeline(
        reward,
        cfg.reward,
        reference_sampler=reference_sampler,
        kl_penalty=kl_penalty,
        calibration_prompts=train_prompts,
    )
    value_model = ValueModel(model).to(device) if RL_ALGORITHMS[cfg.algorithm].value_model else None
    params = list(model.parameters()) + (list(value_model.parameters()) if value_model else [])
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    check_gardo_run(cfg, pipeline)
    return _Run(
        cfg,
        model,
        reference,
        value_model,
        tokenizer,
        pipeline,
        optimizer,
        list(train_prompts),
        device,
        autocast_dtype,
        kl_reference=penalty_reference(cfg, reference),
        gardo=gardo_state(cfg),
        constrained=ConstrainedReward(cfg.constrained) if cfg.constrained is not None else None,
        cooper=cooper,
        eval_proxy=eval_proxy,
        sft_chosen=sft_chosen,
    )


def chosen_targets(
    cfg: RLConfig, sft_pairs: Sequence[PreferencePair] | None
) -> ChosenTargets | None:
    """The SFT term's chosen targets with ``sft_source`` chosen, else None; the pairs are
    needed exactly then."""
    if cfg.sft_source != "chosen":
        if sft_pairs is not None:
            raise ValueError(
                f"sft_pairs: given, but sft_source is {cfg.sft_source!r}; the pairs are the SFT "
                "targets of sft_source 'chosen' only"
            )
        return None
    if sft_pairs is None:
        raise ValueError(
            "sft_pairs: sft_source 'chosen' takes the SFT term's targets from the chosen "
            "completions of preference pairs; none given (run_rl's sft_pairs; goodhart rl "
            "--sft-pairs FILE)"
        )
    return ChosenTargets.from_pairs(sft_pairs)


def _checked_prompts(
    cfg: RLConfig, train_prompts: Sequence[str], eval_prompts: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The training prompts and the first ``cfg.eval_prompts`` held-out ones (None: all);
    fewer training prompts than a step samples, or no held-out prompt, is an error."""
    train_prompts, eval_prompts = list(train_prompts), list(eval_prompts)
    if len(train_prompts) < cfg.prompts_per_step:
        raise ValueError(
            f"prompts_per_step: {cfg.prompts_per_step} prompts per step, but only "
            f"{len(train_prompts)} training prompts"
        )
    if not eval_prompts:
        raise ValueError("eval_prompts: expected at least one held-out prompt")
    return train_prompts, eval_prompts[: cfg.eval_prompts] if cfg.eval_prompts else eval_prompts


def _open_run_dir(
    out_dir: Path,
    cfg: RLConfig,
    identity: dict[str, Any],
    launch: dict[str, Any] | None,
    resume: bool,
) -> RunDir:
    """The run directory with its config.yaml, created or resumed (only
    ``RESUMABLE_CHANGES`` and the launch may differ); a resume with fewer steps than the
    run has done is refused before anything is written."""
    resolved = {
        "study": "rl",
        "metrics_version": METRICS_VERSION,
        "config": cfg.model_dump(mode="json"),
        "identity": identity,
        "launch": launch or {},
    }
    if resume:
        check_steps_reach(out_dir, cfg.steps)
    return RunDir.open(
        out_dir,
        kind="rl",
        config=resolved,
        resume=resume,
        name=cfg.method,
        seed=cfg.seed,
        metrics_version=METRICS_VERSION,
        resumable=[*(f"config.{k}" for k in RESUMABLE_CHANGES), "launch."],
    )


def _extra_models(
    run: _Run,
) -> dict[str, tuple[nn.Module, torch.optim.Optimizer | None]] | None:
    """The models a checkpoint holds beside the policy: Cooper's reward model (and its
    optimizer) and, when GARDO's resets are KL-triggered (they fall on any step), the KL
    penalty's reference."""
    extra = {"cooper_rm": (run.cooper.model.model, run.cooper.optimizer)} if run.cooper else {}
    if run.cfg.ref_reset_kl is not None:
        extra[KL_REFERENCE] = (run.kl_reference, None)
    return extra or None


def _restore(rundir: RunDir, run: _Run, resume: bool) -> int:
    """The step to go on from (0: a new run), its checkpoint loaded (policy, optimizer,
    value model, RNGs, the pipeline's, μ-PPO's and GARDO's state) and the logs cut back to it.

    Lines past the checkpoint are recomputed; without a checkpoint, everything is."""
    cfg = run.cfg
    ckpt, start = rundir.resume_checkpoint(_logged_by(cfg)) if resume else (None, 0)
    if ckpt is not None:
        state = load_checkpoint(
            ckpt, policy=run.policy, optimizer=run.optimizer, value_model=run.value_model,
            device=run.device, extra=_extra_models(run),
        )  # fmt: skip
        run.pipeline.load_state_dict(state["pipeline"])
        if run.constrained is not None:
            run.constrained.load_state_dict(state["constrained"])
        if run.gardo is not None:
            run.gardo.load_state_dict(state["gardo"])
        check_gardo_resume(cfg, start)
        rundir.resumed(start)
    logs = ("metrics", "train", "samples", MONITOR_LOG)
    rundir.truncate(logs, start if ckpt is not None else -1)
    return start


def _progress_line(cfg: RLConfig, line: dict[str, Any], reading: Any) -> str:
    """One evaluation as printed with ``progress``."""
    alarm = f"  ALARM (step {reading.alarm_step})" if reading and reading.alarm else ""
    return (
        f"[{cfg.method}] step {line['step']:>5}  kl {line['kl']:7.3f}  gold {line['gold']:7.3f}  "
        f"proxy {line['proxy']:7.3f}  len {line['length']:5.1f}{alarm}"
    )


def _log_eval(
    run: _Run,
    rundir: RunDir,
    eval_prompts: list[str],
    gold: Any,
    watch: RunMonitor | None,
    sources: dict[str, Any] | None,
    progress: bool,
    step: int,
) -> bool:
    """Evaluates at ``step``: a metrics.jsonl line, its samples and, with a monitor, its
    inputs and reading; True when the monitor asks the run to stop."""
    line, samples, record = _evaluate(run, step, eval_prompts, gold, sources)
    if run.constrained is not None:  # NM-PPO: this evaluation's gold moves the thresholds
        line.update(run.constrained.observe_gold(step, line["gold"]))
    reading = None
    if watch is not None:
        reading = watch.observe(step, record, run.policy, run.tokenizer, line.get("kl", math.nan))
        line["monitor"] = reading.to_json()
    for s in samples:  # before the metrics line, whose presence says they are all written
        rundir.append("samples", s)
    rundir.append("metrics", line)
    if progress:
        print(_progress_line(run.cfg, line, reading), flush=True)
    return watch is not None and watch.stops(reading)


def _checkpoint(run: _Run, out_dir: Path, step: int) -> None:
    """Saves what a resumed run needs after ``step``: the trained models, their optimizers,
    the RNGs, the pipeline's state (adaptive β, running statistics), μ-PPO's and GARDO's."""
    save_checkpoint(
        out_dir,
        step,
        policy=run.policy,
        optimizer=run.optimizer,
        value_model=run.value_model,
        state={
            "pipeline": run.pipeline.state_dict(),
            "constrained": run.constrained and run.constrained.state_dict(),
            "gardo": run.gardo and run.gardo.state_dict(),
        },
        keep=run.cfg.keep_checkpoints,
        extra=_extra_models(run),
    )


def _train(
    run: _Run, rundir: RunDir, out_dir: Path, start: int, log_eval: Callable[[int], bool]
) -> int | None:
    """Steps ``start`` + 1 .. ``steps`` (step 0: the base policy's evaluation first): a
    train.jsonl line per step, an evaluation every ``eval_every`` steps and at the end, a
    checkpoint every ``checkpoint_every`` steps, at the end and where the monitor stops the
    run. Returns the step it stopped at, or None."""
    cfg = run.cfg
    if start == 0:
        log_eval(0)  # the base policy
    for step in range(start + 1, cfg.steps + 1):
        stats = rl_step(run, step)
        rundir.append("train", {"step": step, **stats})
        stop = False
        if step % cfg.eval_every == 0 or step == cfg.steps:
            stop = log_eval(step)
        if stop or step % cfg.checkpoint_every == 0 or step == cfg.steps:
            _checkpoint(run, out_dir, step)
        if stop:
            return step
    return None


def _write_summary(
    out_dir: Path, cfg: RLConfig, metrics: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    """summary.json: the base, peak-gold and final evaluations (and the monitor's alarm)."""
    peak = max(metrics, key=lambda r: r["gold"])
    atomic_write_json(
        out_dir / "summary.json",
        {
            "method": cfg.method,
            "metrics_version": METRICS_VERSION,
            "steps": cfg.steps,
            "base": metrics[0],
            "final": metrics[-1],
            "peak_gold": {k: peak[k] for k in ("step", "gold", "proxy", "kl")},
            "gold_drop_from_peak": peak["gold"] - metrics[-1]["gold"],
            **extra,
        },
    )


#: The checkpoint's name for GARDO's KL reference when resets are KL-triggered.
KL_REFERENCE = "kl_reference"

#: A Cooper run's co-trained reward model at its end, a reward-model directory in the run dir.
COOPER_RM = "cooper_rm"


def save_cooper_reward_model(cooper: CooperReward, out_dir: Path, step: int) -> Path | None:
    """Write Cooper's co-trained reward model as ``out_dir/cooper_rm`` (atomic, sealed);
    ``RewardModel.from_pretrained`` loads it, so best-of-n, RL, ``goodhart eval-rm`` and the
    monitor take it like any proxy. None (nothing written) for a model whose score head is
    not a linear layer (ArmoRM, PAL), whose saved form this copy does not rebuild."""
    model = cooper.model.model
    if hasattr(getattr(model, "score", None), "spec"):
        return None
    info = {
        "format_version": 1,
        "objective": "cooper",
        "max_length": cooper.model.max_length,
        **({"tool": cooper.model.tool} if cooper.model.tool is not None else {}),
        "cooper": {
            "config": cooper.config.model_dump(),
            "steps": step,
            "initial_model": cooper.frozen.name,
        },
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "versions": package_versions(),
    }
    return save_reward_model(model, cooper.model.tokenizer, out_dir / COOPER_RM, info)


def run_rl(
    out_dir: str | os.PathLike,
    *,
    policy: str | os.PathLike | nn.Module,
    reward: Any,
    gold: Any,
    train_prompts: Sequence[str],
    eval_prompts: Sequence[str],
    config: RLConfig | None = None,
    tokenizer=None,
    resume: bool = False,
    launch: dict[str, Any] | None = None,
    progress: bool = False,
    monitor_sources: dict[str, Any] | None = None,
    sft_pairs: Sequence[PreferencePair] | None = None,
) -> RLResult:
    """Train a policy against a proxy reward and track gold, proxy and KL; write a run dir.

    Args:
        out_dir: the run directory (see :mod:`goodhartlab.optimize.rundir`). A new run
            refuses a directory that already has metrics; ``resume=True`` continues it.
        policy: the base policy π0: a directory, a cached hub name, or a causal-LM module
            (then pass ``tokenizer``; the module is trained in place and a frozen copy is
            the reference).
        reward: the proxy: a ``RewardModel``, an ``Ensemble``, a ``ProgrammaticReward`` or
            any ``f(prompts, completions) -> Tensor[B]``; ``config.reward`` says how it is
            aggregated and shaped. Or a pairwise preference model
            (``rewards.pairwise.PairwisePreferenceModel``), for algorithm ``nash_mp`` only:
            the evaluations' ``proxy`` is then its win rate over base-policy samples
            (``rewards.pipeline``).
        gold: the gold reward, ``score(prompts, completions) -> Tensor[B]``.
        train_prompts: prompts the policy is trained on.
        eval_prompts: held-out prompts (the first ``config.eval_prompts`` are used).
        config: :class:`RLConfig`.
        tokenizer: the policy's tokenizer (default: loaded from the policy directory).
        resume: continue from the newest checkpoint in ``out_dir``; the configuration must
            match the saved one (except steps and device).
        launch: how the run was launched (e.g. CLI arguments), saved in config.yaml so that
            ``goodhart rl --resume`` can rebuild it; not compared on resume.
        progress: print one line per evaluation.
        monitor_sources: with ``config.monitor``, the rewards the monitor reads besides the
            optimized one: ``members`` (an ensemble), ``heldout`` (a reward not optimized
            against), ``latents`` (a ``RewardModel``; default: the optimized one).
        sft_pairs: with ``config.sft_source`` chosen (and only then), the preference pairs
            whose chosen completions are the SFT term's targets (e.g. the proxy's training
            pairs); their count and hash are part of the run's identity.

    Returns:
        :class:`RLResult`.
    """

    cfg = config or RLConfig()
    out_dir = Path(out_dir)
    device = torch.device(cfg.device)
    resolve_autocast_dtype(cfg.bf16, device)  # an unsupported bf16 fails before any loading
    train_prompts, eval_prompts = _checked_prompts(cfg, train_prompts, eval_prompts)
    sft_chosen = chosen_targets(cfg, sft_pairs)
    check_pairwise_run(cfg, reward)
    model, reference, tokenizer, policy_id = load_policy_and_reference(
        policy, tokenizer, device=device
    )
    identity = run_identity(policy_id, reward, gold, train_prompts, eval_prompts, sft_chosen)
    rundir = _open_run_dir(out_dir, cfg, identity, launch, resume)
    run = _build_run(cfg, model, reference, tokenizer, reward, train_prompts, device, sft_chosen)
    start = _restore(rundir, run, resume)
    watch = RunMonitor(rundir, cfg.monitor, start) if cfg.monitor is not None else None
    sources = resolve_sources(reward, monitor_sources) if watch is not None else None
    log_eval = partial(_log_eval, run, rundir, eval_prompts, gold, watch, sources, progress)

    try:
        stopped_at = _train(run, rundir, out_dir, start, log_eval)
    except BaseException as e:
        rundir.fail(e)
        raise

    metrics = rundir.read("metrics")
    fields = watch.summary(stopped_at) if watch else {}
    if run.cooper is not None:  # the co-trained reward model, for use as a proxy after the run
        saved = save_cooper_reward_model(run.cooper, out_dir, metrics[-1]["step"])
        fields[COOPER_RM] = saved and COOPER_RM
    _write_summary(out_dir, cfg, metrics, fields)
    rundir.finish()
    return RLResult(out_dir=out_dir, metrics=metrics, policy=model)
