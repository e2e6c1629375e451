"""Reward-model training with the Bradley-Terry loss, ensembles of such models, evaluation.

A reward model is a sequence-classification model (one output) read at the last token
(``goodhartlab.rewards.reward_model``); training tokenizes pairs with the same function the
scorer uses, so a trained model scores exactly the ids it was trained on.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from goodhartlab.artifacts import atomic_write_text, dir_mode, seal
from goodhartlab.core.losses import RM_OBJECTIVES
from goodhartlab.core.rm_metrics import brier_score, expected_calibration_error
from goodhartlab.data.schema import PreferencePair
from goodhartlab.models.loading import check_vocabulary
from goodhartlab.registry import RM_FEATURES, RM_TOOLS, name_in
from goodhartlab.rewards.ensemble import Ensemble
from goodhartlab.rewards.reward_model import (
    RewardModel,
    collate_rm_inputs,
    reward_at_last_token,
)
from goodhartlab.train.rm_features import fit_feature_head
from goodhartlab.train.rm_length_head import (
    build_length_head,
    head_length_correlations,
    odin_rewards,
)
from goodhartlab.train.rm_loop import RMHead
from goodhartlab.train.rm_pair_inputs import pair_inputs
from goodhartlab.train.rm_trunk import LoraSettings, merge_trunk, prepare_trunk

#: Name of the metadata file written next to a trained reward model.
RM_INFO_FILE = "goodhart_rm.json"


class RMTrainConfig(BaseModel):
    """Settings of one reward-model training run (Bradley-Terry, AdamW)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    objective: name_in(RM_OBJECTIVES) = Field(
        "bradley_terry",
        description="The loss (registry 'rm_objective'); its parameters are the fields of "
        "the same names (bradley_terry: label_smoothing, center_coef; ordinal: grade_edges, "
        "ordinal_levels, ordinal_spacing; noise_robust: robust_members, suspect_fraction, "
        "suspect_action, suspect_weight, strength_margin, label_smoothing; armo: the armo_* "
        "fields; odin: length_coef, "
        "ortho_coef, length_sign; reform: the reform_* fields, label_smoothing, center_coef; "
        "causal_naive / causal_ips / causal_dr: the causal_* fields; pal: the pal_* fields, "
        "pairs' meta['persona']; pairwise: label_smoothing, a preference model of both "
        "completions, train.rm_pairwise).",
    )
    batch_size: int = Field(32, gt=0, description="Pairs per optimizer step (2x sequences).")
    lr: float = Field(1e-4, gt=0, description="Peak AdamW learning rate.")
    lr_schedule: Literal["constant", "linear"] = Field(
        "linear", description="'linear': decay to 0 over training; 'constant': fixed."
    )
    epochs: int = Field(1, gt=0, description="Passes over the training pairs.")
    seed: int = Field(0, description="Seeds the score-head init and the data order.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay.")
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="Clip the global gradient norm to this; None: no clipping."
    )
    margin: bool = Field(
        False,
        description="Use each pair's `margin` field m in −log σ(r_c − r_r − m) (Llama 2); "
        "every training pair must then have a margin.",
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="ε: weight of the loss of the reversed preference."
    )
    center_coef: float = Field(
        0.0,
        ge=0,
        description="c of the reward-centering penalty c·(r_c + r_r)² (Eisenstein et al.).",
    )
    grade_edges: list[float] = Field(
        [1.0, 3.0],
        description="ordinal: gold-margin edges between preference grades "
        "(data.grades: grade = 1 + #edges <= |gold_c - gold_r|, unless meta['grade']).",
    )
    ordinal_levels: int = Field(
        9, ge=2, description="ordinal: K, the number of ordinal ratings (OPRM: 9)."
    )
    ordinal_spacing: float = Field(
        1.0, gt=0, description="ordinal: distance between the ordered logit's cut points."
    )
    robust_members: int = Field(
        3,
        ge=2,
        description="noise_robust: folds (= members) of the cross-fitted Bradley-Terry "
        "ensemble that measures each pair's preference strength.",
    )
    suspect_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="noise_robust: fraction of lowest-strength pairs flagged as likely "
        "flipped (Wang et al. 2024 flip the lowest 10%).",
    )
    suspect_action: Literal["flip", "downweight"] = Field(
        "flip", description="noise_robust: flip the suspects' labels or down-weight them."
    )
    suspect_weight: float = Field(
        0.0, ge=0, le=1, description="noise_robust: a suspect's weight under 'downweight'."
    )
    strength_margin: float = Field(
        1.0,
        ge=0,
        description="noise_robust: λ of the adaptive margin λ·max(0, strength) (0: none).",
    )
    causal_feature: Literal["length_gap", "gold_gap"] = Field(
        "length_gap",
        description="causal_*: the content feature x the simulated observation depends on: "
        "length_gap (standardized words(chosen) − words(rejected)) or gold_gap (standardized "
        "|gold_chosen − gold_rejected|, users rate pairs they feel strongly about).",
    )
    causal_obs_bias: float = Field(
        -1.0, description="causal_*: α of the simulated propensity p = σ(α + β·x)."
    )
    causal_obs_slope: float = Field(
        2.0, description="causal_*: β of the simulated propensity p = σ(α + β·x)."
    )
    causal_propensity: Literal["estimated", "oracle"] = Field(
        "estimated",
        description="causal_ips/dr: p̂ from a logistic regression of o on x (estimated) or the "
        "simulation's true p (oracle).",
    )
    causal_propensity_clip: float = Field(
        0.05, ge=0, lt=1, description="causal_ips/dr: floor c of p̂ (bounds 1/p̂)."
    )
    armo_attribute_noise: float = Field(
        0.5,
        ge=0,
        description="armo: std of the Gaussian noise on each attribute rating, as a fraction "
        "of that attribute's std over the training completions.",
    )
    armo_gate_hidden: int = Field(64, gt=0, description="armo: width of the gating MLP.")
    armo_gate_layers: int = Field(
        2, ge=0, description="armo: hidden layers of the gating MLP (the reference code: 3)."
    )
    armo_temperature: float = Field(
        10.0, gt=0, description="armo: τ of the gating softmax (the reference code: 10)."
    )
    armo_gate_epochs: int = Field(
        20, gt=0, description="armo: stage-2 epochs of the gating network over the pairs."
    )
    armo_gate_lr: float = Field(1e-3, gt=0, description="armo: stage-2 AdamW learning rate.")
    armo_decorrelate: bool = Field(
        True,
        description="armo: remove each attribute's verbosity component (the paper); False: "
        "λ = 0, the ablation.",
    )
    length_coef: float = Field(
        1.0,
        ge=0,
        description="odin: λ_L, weight of |ρ(r_Q, length)| − s·ρ(r_L, length) (Chen et al. 2024).",
    )
    ortho_coef: float = Field(
        1.0, ge=0, description="odin: λ_O, weight of |W_Q · W_L|, the heads' orthogonality."
    )
    length_sign: float = Field(
        1.0,
        description="odin: s in |ρ(r_Q, length)| − s·ρ(r_L, length): 1, the length head "
        "rewards length (the paper); -1, it penalizes length (labels that prefer brevity).",
    )
    reform_rounds: int = Field(
        1, ge=1, description="reform: search-relabel-retrain rounds (train.rm_reform)."
    )
    reform_pairs: int = Field(
        256,
        ge=1,
        description="reform: adversarial pairs labelled and added per round (extra labels).",
    )
    reform_prompts: int = Field(
        256, ge=1, description="reform: training prompts searched per round."
    )
    reform_samples: int = Field(
        16, ge=2, description="reform: K, base-policy samples per searched prompt."
    )

    pal_prototypes: int = Field(
        4, ge=1, description="pal: K, the prototypes whose softmax mixtures are the ideal points."
    )
    pal_dim: int = Field(16, ge=1, description="pal: D, the dimension of the latent f(x, y).")
    pal_mlp_hidden: int = Field(
        64, ge=1, description="pal: width of the MLP from the last hidden state to f(x, y)."
    )
    pal_weights_lr: float = Field(
        0.05,
        gt=0,
        description="pal: AdamW learning rate of the personas' mixture logits and the prototypes "
        "(at `lr` they would barely leave the uniform mixture in a few hundred steps).",
    )
    pal_fewshot_steps: int = Field(
        300,
        ge=1,
        description="pal: full-batch Adam steps fitting a new persona's mixture logits "
        "(train.rm_pal.fit_persona), everything else frozen.",
    )
    pal_fewshot_lr: float = Field(
        0.05, gt=0, description="pal: Adam learning rate of the few-shot fit."
    )
    pal_fewshot_prior: float = Field(
        0.0,
        ge=0,
        description="pal: λ, precision of the Gaussian prior pulling a few-shot persona's mixture "
        "logits toward the mean of the known personas' logits (core.pal.mixture_prior_penalty; "
        "0: unregularized).",
    )

    @field_validator("length_sign")
    @classmethod
    def _check_length_sign(cls, v: float) -> float:
        if v not in (1.0, -1.0):
            raise ValueError(f"length_sign: expected 1 or -1, got {v}")
        return v

    tool: name_in(RM_TOOLS) | None = Field(
        None,
        description="Themis (Li et al. 2024): a tool (registry 'rm_tool') whose answer the "
        "model reads after each completion, at training and scoring alike (saved with the "
        "model); None: no tool.",
    )
    features: name_in(RM_FEATURES) | None = Field(
        None,
        description="Domain-knowledge features (registry 'rm_features'; core.feature_reward): "
        "the score is the backbone's plus a linear layer over the standardized feature "
        "vector of each completion, trained jointly and saved with the model; None: none.",
    )
    features_lr: float = Field(
        0.05,
        gt=0,
        description="features: AdamW learning rate of the feature layer (at `lr` its weights "
        "would barely move in the few steps of a small training set).",
    )
    max_length: int = Field(
        128,
        ge=2,
        description="Longest RM input in tokens (text + eos); longer inputs lose their start.",
    )
    reinit_head: bool = Field(
        True,
        description="Re-initialise the score head from `seed` (also for a module backbone); "
        "False keeps the head a module backbone already has.",
    )
    lora: LoraSettings | None = Field(
        None,
        description="LoRA adapters on the trunk (train.rm_trunk, peft), the score head trained "
        "fully; merged into the weights before saving, so the saved model loads like any "
        "other; e.g. {r: 8, alpha: 16, dropout: 0, target_modules: [q_proj, v_proj]}. "
        "None: the whole trunk trains. Bradley-Terry-style objectives only.",
    )
    freeze_trunk: bool = Field(
        False,
        description="Train the score head alone (with an encoder's pooler), the trunk frozen "
        "(train.rm_trunk). Bradley-Terry-style objectives only; not with lora.",
    )
    eval_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Held-out fraction of `pairs` when no eval pairs are given; 0: no eval.",
    )
    split_seed: int = Field(
        0,
        description="Seeds the train / held-out split (kept apart from `seed`, so ensemble "
        "members share a split).",
    )
    eval_batch_size: int = Field(64, gt=0, description="Sequences per scoring batch in eval.")
    device: str = Field("cpu", description="torch device to train on, e.g. 'cpu', 'cuda'.")

    @model_validator(mode="after")
    def _one_trunk_setting(self) -> RMTrainConfig:
        if self.lora is not None and self.freeze_trunk:
            raise ValueError(
                "lora, freeze_trunk: expected at most one (LoRA already freezes the trunk's "
                "own weights)"
            )
        return self


@dataclass
class RMTrainResult:
    """What ``train_reward_model`` returns."""

    reward_model: RewardModel
    """The trained model, ready to score (on ``config.device``); for objective ``pairwise`` a
    ``rewards.pairwise.PairwisePreferenceModel``."""
    history: list[dict[str, float]]
    """One entry per epoch (epoch 0 = before training): train_loss, eval_loss, eval_accuracy,
    eval_clean_accuracy when available."""
    metrics: dict[str, Any]
    """Final held-out evaluation (see ``evaluate_reward_model``); empty without eval pairs."""
    num_parameters: int
    """Parameters the saved model has (the network's and the domain-feature layer's)."""
    num_trainable_parameters: int = 0
    """Parameters training updated: with 'lora' the adapters and the score head, with
    'freeze_trunk' the score head (each with an encoder's pooler), else every one; plus heads
    trained but not kept (ODIN's length head)."""
    path: Path | None = None
    """Directory the model was saved to, if ``out_dir`` was given."""
    pair_inputs: dict[str, Any] = field(default_factory=dict)
    """What the objective's per-pair inputs were (``train.rm_pair_inputs``): grade counts,
    or the strength ensemble and how many known flipped labels its suspects caught."""


@dataclass
class EnsembleTrainResult:
    """What ``train_ensemble`` returns: one entry per member, in seed order."""

    paths: list[Path]
    metrics: list[dict[str, Any]]
    histories: list[list[dict[str, float]]] = field(default_factory=list)


def evaluate_reward_model(
    rm, pairs: Sequence[PreferencePair], *, batch_size: int = 64
) -> dict[str, Any]:
    """Pairwise metrics of a reward source on labelled pairs.

    A pair is correct iff score(chosen) > score(rejected), strictly (RewardBench); ties are
    wrong.

    Args:
        rm: any ``score(prompts, completions) -> Tensor[B]`` (RewardModel, Ensemble, gold),
            or a pairwise preference model (``rewards.pairwise``; then
            ``train.rm_pairwise.evaluate_preference_model``, the same metrics of P(c ≻ r)).
        pairs: labelled pairs.

    Returns:
        ``n``; ``accuracy``; ``loss`` = mean −log σ(r_c − r_r); ``margin_mean`` = mean
        r_c − r_r; when every pair records ``meta["flipped"]``: ``clean_accuracy``, the
        accuracy against the noise-free labels (flipped pairs counted the other way round),
        and the calibration of the Bradley-Terry forecast σ(r_c − r_r) against them,
        ``clean_ece`` (``core.rm_metrics.expected_calibration_error``, 10 bins) and
        ``clean_brier``; ``accuracy_by_subset`` when pairs have a ``subset``.
    """
    if callable(getattr(rm, "preference", None)):  # rewards.pairwise: no scalar score
        from goodhartlab.train.rm_pairwise import evaluate_preference_model

        return evaluate_preference_model(rm, pairs, batch_size=batch_size)
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs: expected at least one pair to evaluate")
    n = len(pairs)
    prompts = [p.prompt for p in pairs]
    completions = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    kwargs = {"batch_size": batch_size} if isinstance(rm, RewardModel | Ensemble) else {}
    r = torch.as_tensor(rm(prompts + prompts, completions, **kwargs)).detach().double().cpu()
    if r.shape != (2 * n,):
        raise ValueError(f"reward: expected shape ({2 * n},), got {tuple(r.shape)}")
    return pair_metrics(r[:n] - r[n:], pairs)


def pair_metrics(margin: torch.Tensor, pairs: Sequence[PreferencePair]) -> dict[str, Any]:
    """The held-out metrics of a model's margins z = logit P(chosen ≻ rejected) on ``pairs``
    (a reward gap r_c − r_r, or a pairwise preference model's logit): accuracy, the
    Bradley-Terry loss softplus(−z), the mean margin; against the noise-free labels when every
    pair records ``flipped``, clean accuracy and the calibration of σ(z) (ECE, Brier); and the
    accuracy per subset when pairs name one. Shape of margin: (len(pairs),)."""
    assert margin.shape == (len(pairs),), margin.shape
    gap = margin.double()
    correct = gap > 0
    out: dict[str, Any] = {
        "n": len(pairs),
        "accuracy": correct.double().mean().item(),
        "loss": F.softplus(-gap).mean().item(),
        "margin_mean": gap.mean().item(),
    }
    flips = [p.flipped for p in pairs]
    if all(f is not None for f in flips):
        flipped = torch.tensor(flips)
        clean_correct = torch.where(flipped, gap < 0, gap > 0)
        out["clean_accuracy"] = clean_correct.double().mean().item()
        forecast, truly_chosen = torch.sigmoid(gap), (~flipped).double()
        out["clean_ece"] = expected_calibration_error(forecast, truly_chosen)
        out["clean_brier"] = brier_score(forecast, truly_chosen)
    subsets = [p.subset for p in pairs]
    if any(s is not None for s in subsets):
        by_subset: dict[str, list[bool]] = {}
        for s, c in zip(subsets, correct.tolist(), strict=True):
            by_subset.setdefault(str(s), []).append(c)
        out["accuracy_by_subset"] = {s: sum(v) / len(v) for s, v in sorted(by_subset.items())}
    return out


def _load_backbone(backbone: str | os.PathLike | nn.Module) -> nn.Module:
    if isinstance(backbone, nn.Module):
        return copy.deepcopy(backbone)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    # A causal-LM backbone has no score head: transformers reports it as missing (a block of
    # text per member), but the head is drawn afresh below, so that report says nothing.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            backbone, num_labels=1, trust_remote_code=False
        )
    finally:
        hf_logging.set_verbosity(verbosity)


def _reinit_score_head(model: nn.Module, seed: int) -> None:
    """Draw the score head afresh from ``seed``: N(0, initializer_range²) weights, zero bias."""
    head = getattr(model, "score", None)
    if head is None:
        head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Linear):
        raise ValueError(
            f"backbone: cannot find a linear score head on {type(model).__name__} to "
            "re-initialise; pass reinit_head=False"
        )
    std = getattr(getattr(model, "config", None), "initializer_range", 0.02)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * std)
        if head.bias is not None:
            head.bias.zero_()


def _split(
    pairs: list[PreferencePair], fraction: float, seed: int
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    if fraction == 0:
        return pairs, []
    n_eval = max(1, round(fraction * len(pairs)))
    if n_eval >= len(pairs):
        raise ValueError(
            f"eval_fraction: {fraction} of {len(pairs)} pairs leaves nothing to train on"
        )
    perm = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    return [pairs[i] for i in perm[n_eval:]], [pairs[i] for i in perm[:n_eval]]


def train_reward_model(
    pairs: Sequence[PreferencePair],
    tokenizer,
    backbone: str | os.PathLike | nn.Module,
    config: RMTrainConfig | None = None,
    *,
    eval_pairs: Sequence[PreferencePair] | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    extra_pair_inputs: dict[str, Any] | None = None,
) -> RMTrainResult:
    """Train a Bradley-Terry reward model on preference pairs.

    Each step scores the chosen and the rejected completions of ``batch_size`` pairs in one
    forward pass and minimises ``config.objective`` (default
    :func:`goodhartlab.core.losses.bradley_terry_loss`) with
    AdamW. Held-out loss and accuracy are computed before training (epoch 0) and after
    every epoch. With ``config.lora`` the trunk trains as LoRA adapters, with
    ``config.freeze_trunk`` not at all (``train.rm_trunk``); adapters are merged into the
    weights before the model is returned and saved.

    Args:
        pairs: labelled training pairs (all of them, if ``eval_pairs`` is given; otherwise
            ``config.eval_fraction`` of them is held out).
        tokenizer: the tokenizer of the backbone; saved with the model.
        backbone: a local path or hub name of a causal LM or a reward model (loaded as
            ``AutoModelForSequenceClassification`` with ``num_labels=1``,
            ``trust_remote_code=False``), or a built ``nn.Module`` (a sequence-classification
            model; it is copied, never modified).
        config: training settings; defaults to ``RMTrainConfig()``.
        eval_pairs: held-out pairs; overrides ``config.eval_fraction``.
        out_dir: if given, the model, tokenizer and ``goodhart_rm.json`` are saved there
            atomically (an existing reward-model directory is replaced).
        progress: show a tqdm progress bar.
        extra_pair_inputs: reported with the per-pair inputs (``RMTrainResult.pair_inputs``
            and the saved ``goodhart_rm.json``): how the pairs were made, e.g. REFORM's
            search (``train.rm_reform``).
    """
    config = config or RMTrainConfig()
    train_pairs, eval_pairs, margins = _training_pairs(pairs, eval_pairs, config)
    objective = RM_OBJECTIVES.entry(config.objective)
    _check_trunk_settings(objective, config)
    inputs, inputs_report = _objective_inputs(
        objective, train_pairs, tokenizer, backbone, config, extra_pair_inputs
    )
    reward_model = _build_reward_model(tokenizer, backbone, config)
    head = _build_head(objective, reward_model, train_pairs, eval_pairs, margins, inputs, config)

    evals = [head.evaluate(eval_pairs)]
    history = [_epoch_record(0, None, evals[-1])]

    def record(epoch: int, train_loss: float) -> None:
        evals.append(head.evaluate(eval_pairs))
        history.append(_epoch_record(epoch, train_loss, evals[-1]))

    losses = head.fit(progress=progress, on_epoch=record if head.eval_each_epoch else None)
    num_trained = _count_trained(head)  # after fit: a variant may install its modules in it
    inputs_report.update(head.report())
    if not head.eval_each_epoch:  # ArmoRM, PAL: held-out pairs once, after training
        record(config.epochs, losses[-1])
    if config.lora is not None or config.freeze_trunk:
        merge_trunk(reward_model.model)  # LoRA: adapters into the weights (train.rm_trunk)

    result = RMTrainResult(
        reward_model=getattr(head, "scorer", reward_model),
        history=history,
        metrics=evals[-1],
        num_parameters=_count_parameters(reward_model),
        num_trainable_parameters=num_trained,
        pair_inputs=inputs_report,
    )
    if out_dir is not None:
        info = _rm_info(backbone, config, objective, result, len(train_pairs), len(eval_pairs))
        result.path = save_reward_model(reward_model.model, tokenizer, out_dir, info)
    return result


def _objective_inputs(
    objective, train_pairs, tokenizer, backbone, config: RMTrainConfig, extra: dict | None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The per-pair inputs the objective needs (grades, ensemble strengths) and their report
    (with ``extra``), computed before this model's seed is set, so that they leave its
    initialisation and data order alone."""
    inputs, report = pair_inputs(
        objective.meta.get("needs", ()), train_pairs, tokenizer, backbone, config
    )
    report.update(extra or {})
    if config.objective == "reform" and "reform" not in report:
        raise ValueError(
            "objective reform: train it with train.rm_reform.train_reform (or goodhart "
            "train-rm --objective reform), which searches with a policy and labels with gold; "
            "train_reward_model alone would train plain Bradley-Terry without the search"
        )
    return inputs, report


def _build_reward_model(
    tokenizer, backbone: str | os.PathLike | nn.Module, config: RMTrainConfig
) -> RewardModel:
    """The backbone loaded (under ``config.seed``), its score head drawn afresh from the seed
    (``reinit_head``), on ``config.device``, as the scorer that training reads through."""
    torch.manual_seed(config.seed)
    model = _load_backbone(backbone)
    check_vocabulary(tokenizer, model)
    if config.reinit_head:
        _reinit_score_head(model, config.seed)
    prepare_trunk(model, config.lora, config.freeze_trunk)
    model.to(config.device)
    return RewardModel(
        model,
        tokenizer,
        max_length=config.max_length,
        name=_backbone_name(backbone),
        tool=config.tool,
    )


def _check_trunk_settings(objective, config: RMTrainConfig) -> None:
    """``lora`` and ``freeze_trunk`` are the scalar head's (:class:`ScalarHead`); the
    variants with their own loop (ArmoRM, PAL, pairwise) choose their trained modules."""
    if config.lora is None and not config.freeze_trunk:
        return
    if any(objective.meta.get(k) for k in ("pairwise", "multi_objective", "ideal_point")):
        name = "lora" if config.lora is not None else "freeze_trunk"
        raise ValueError(
            f"{name}: not supported with objective {config.objective!r}, which trains in its "
            "own loop; use a Bradley-Terry-style objective"
        )


def _count_trained(head: RMHead) -> int:
    """Parameters training updated: the network's that require a gradient (not a frozen
    trunk's; ArmoRM's gating too) and the head's others (feature layer, ODIN's length head)."""
    params = [*head.model.parameters(), *head.parameters()]
    trained = {id(p): p for p in params if p.requires_grad}
    return sum(p.numel() for p in trained.values())


def _build_head(
    objective,
    reward_model: RewardModel,
    train_pairs: list[PreferencePair],
    eval_pairs: list[PreferencePair],
    margins: torch.Tensor | None,
    inputs: dict[str, torch.Tensor],
    config: RMTrainConfig,
) -> RMHead:
    """The objective's variant (``train.rm_loop.RMHead``): ArmoRM (meta ``multi_objective``),
    PAL (meta ``ideal_point``), the pairwise preference model (meta ``pairwise``), else one
    scalar reward (:class:`ScalarHead`)."""
    if objective.meta.get("pairwise"):
        from goodhartlab.train.rm_pairwise import PairwiseTrainHead

        return PairwiseTrainHead(reward_model, objective, train_pairs, config)
    multi_objective = bool(objective.meta.get("multi_objective"))
    if multi_objective or objective.meta.get("ideal_point"):
        if config.features is not None:
            raise ValueError(
                f"features: not supported with objective {config.objective!r}, which trains in "
                "its own loop; use a Bradley-Terry-style objective"
            )
        if multi_objective:
            from goodhartlab.train.rm_armo import ArmoTrainHead

            return ArmoTrainHead(reward_model, train_pairs, config)
        from goodhartlab.train.rm_pal import PalTrainHead

        return PalTrainHead(reward_model, train_pairs, config)
    return ScalarHead(
        reward_model,
        objective,
        train_pairs,
        config,
        margins=margins,
        inputs=inputs,
        report_pairs=eval_pairs or train_pairs,
    )


class ScalarHead(RMHead):
    """One scalar reward per completion, trained on any of the pairwise objectives (Bradley-
    Terry, ordinal, noise_robust, causal_*, odin, ...): the model's linear score head, plus
    ODIN's length head (objective meta ``length_head``: trained beside it, not saved,
    ``train.rm_length_head``) and the domain-feature layer (``config.features``: trained at
    ``features_lr``, saved as the RewardModel's ``feature_head``, ``core.feature_reward``)."""

    def __init__(
        self,
        reward_model: RewardModel,
        objective,
        train_pairs: list[PreferencePair],
        config: RMTrainConfig,
        *,
        margins: torch.Tensor | None,
        inputs: dict[str, torch.Tensor],
        report_pairs: list[PreferencePair],
    ):
        super().__init__(reward_model, config, items=len(train_pairs), batch=config.batch_size)
        self.objective, self.margins, self.inputs = objective, margins, inputs
        self.report_pairs = report_pairs
        # The objective's parameters are RMTrainConfig fields of the same names.
        self.objective_params = {k: getattr(config, k) for k in objective.params.model_fields}
        self.feature_head = self.phi_chosen = self.phi_rejected = None
        if config.features is not None:
            self.feature_head, phi_c, phi_r = fit_feature_head(config.features, train_pairs)
            self.phi_chosen, self.phi_rejected = phi_c.to(config.device), phi_r.to(config.device)
        reward_model.feature_head = self.feature_head
        # The scorer's own ids (its tool's answers included): training reads what scoring reads.
        prompts = [p.prompt for p in train_pairs]
        self.ids_chosen = reward_model.input_ids(prompts, [p.chosen for p in train_pairs])
        self.ids_rejected = reward_model.input_ids(prompts, [p.rejected for p in train_pairs])
        self.length_head = (
            build_length_head(self.model, config.seed)
            if objective.meta.get("length_head")
            else None
        )
        if self.feature_head is not None:
            self.feature_head.to(config.device)

    def _network_parameters(self) -> list[torch.Tensor]:
        length = list(self.length_head.parameters()) if self.length_head is not None else []
        # A frozen trunk (lora, freeze_trunk: train.rm_trunk) is neither updated nor clipped.
        network = [p for p in self.model.parameters() if p.requires_grad]
        return network + length

    def parameters(self) -> list[torch.Tensor]:
        feature = [] if self.feature_head is None else list(self.feature_head.parameters())
        return self._network_parameters() + feature

    def param_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = [{"params": self._network_parameters()}]
        if self.feature_head is not None:
            groups.append(
                {"params": list(self.feature_head.parameters()), "lr": self.config.features_lr}
            )
        return groups

    def scores(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """r_c, r_r of the training pairs ``idx`` (one forward pass) and the objective's other
        inputs from the heads (ODIN's length rewards and head weights)."""
        input_ids, mask = collate_rm_inputs(
            [self.ids_chosen[i] for i in idx] + [self.ids_rejected[i] for i in idx],
            self.reward_model.pad_token_id,
        )
        input_ids, mask = input_ids.to(self.config.device), mask.to(self.config.device)
        head_inputs: dict[str, torch.Tensor] = {}
        if self.length_head is None:
            rewards = reward_at_last_token(self.model, input_ids, mask)
            r_chosen, r_rejected = rewards[: len(idx)], rewards[len(idx) :]
        else:
            r_chosen, r_rejected, head_inputs = odin_rewards(
                self.model, self.length_head, input_ids, mask, len(idx)
            )
        if self.feature_head is not None:
            r_chosen = self.feature_head(r_chosen, self.phi_chosen[idx])
            r_rejected = self.feature_head(r_rejected, self.phi_rejected[idx])
        return r_chosen, r_rejected, head_inputs

    def loss(self, idx: list[int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        r_chosen, r_rejected, head_inputs = self.scores(idx)
        device = self.config.device
        return self.objective.obj(
            r_chosen,
            r_rejected,
            margin=None if self.margins is None else self.margins[idx].to(device),
            **{k: v[idx].to(device) for k, v in self.inputs.items()},
            **head_inputs,
            **self.objective_params,
        )

    def report(self) -> dict[str, Any]:
        if self.length_head is None:
            return {}
        return {
            "length_heads": head_length_correlations(
                self.reward_model, self.length_head, self.report_pairs
            )
        }


def _rm_info(
    backbone, config: RMTrainConfig, objective, result: RMTrainResult, n_train: int, n_eval: int
) -> dict[str, Any]:
    """The contents of goodhart_rm.json."""
    model = result.reward_model.model
    feature_head = getattr(result.reward_model, "feature_head", None)
    pairwise = {}
    if objective.meta.get("pairwise"):  # rewards.pairwise reads this to load it
        from goodhartlab.train.rm_pairwise import saved_pairwise_info

        pairwise = saved_pairwise_info()
    return {
        "format_version": 1,
        **pairwise,
        "backbone": _backbone_name(backbone),
        "config": config.model_dump(),
        "objective_version": objective.version,
        "pair_inputs": result.pair_inputs,
        "max_length": config.max_length,
        # A tool-augmented model (Themis) calls its tool again when it is loaded.
        **(
            {"tool": config.tool, "tool_version": RM_TOOLS.entry(config.tool).version}
            if config.tool is not None
            else {}
        ),
        # A domain-knowledge model (core.feature_reward) scores with its feature layer.
        **({"feature_head": feature_head.spec()} if feature_head is not None else {}),
        "num_parameters": result.num_parameters,
        "num_trainable_parameters": result.num_trainable_parameters,
        # LoRA: trained as adapters, saved merged into the weights (train.rm_trunk).
        **({"lora": {**config.lora.model_dump(), "merged": True}} if config.lora else {}),
        "num_train_pairs": n_train,
        "num_eval_pairs": n_eval,
        # A head that is not a linear layer (ArmoRM's) is rebuilt from its spec on load.
        **(
            {"head": model.score.spec()}
            if hasattr(model, "score") and hasattr(model.score, "spec")
            else {}
        ),
        "metrics": result.metrics,
        "history": result.history,
        "versions": _versions(),
    }


def _training_pairs(
    pairs: Sequence[PreferencePair],
    eval_pairs: Sequence[PreferencePair] | None,
    config: RMTrainConfig,
) -> tuple[list[PreferencePair], list[PreferencePair], torch.Tensor | None]:
    """(train pairs, held-out pairs, margins or None): the pairs checked, split unless
    ``eval_pairs`` is given, and their margins when ``config.margin``."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs: expected at least one training pair")
    _check_signal(pairs)
    if eval_pairs is None:
        train_pairs, eval_pairs = _split(pairs, config.eval_fraction, config.split_seed)
    else:
        train_pairs, eval_pairs = pairs, list(eval_pairs)
    if not config.margin:
        return train_pairs, eval_pairs, None
    missing = [i for i, p in enumerate(train_pairs) if p.margin is None]
    if missing:
        raise ValueError(
            f"config.margin=True: expected every training pair to have a margin; "
            f"{len(missing)} do not (e.g. id {train_pairs[missing[0]].id!r})"
        )
    return (
        train_pairs,
        eval_pairs,
        torch.tensor([p.margin for p in train_pairs], dtype=torch.float32),
    )


def _check_signal(pairs: Sequence[PreferencePair]) -> None:
    """Refuse pairs that carry no preference at all (every chosen equals its rejected: the
    loss is log 2 whatever the model, and accuracy counts every tie as wrong); warn when
    more than a quarter are such ties."""
    import warnings

    ties = sum(p.chosen == p.rejected for p in pairs)
    if ties == len(pairs):
        raise ValueError(
            f"pairs: in all {len(pairs)} pairs chosen equals rejected (empty or duplicated "
            "rows?): there is no preference to learn"
        )
    if ties > len(pairs) / 4:
        warnings.warn(
            f"pairs: {ties} of {len(pairs)} pairs have chosen equal to rejected; they carry "
            "no preference and count as errors in accuracy",
            stacklevel=3,
        )


def _epoch_record(epoch: int, train_loss: float | None, ev: dict[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = {"epoch": epoch}
    if train_loss is not None:
        rec["train_loss"] = train_loss
    for key in ("loss", "accuracy", "clean_accuracy", "margin_mean"):
        if key in ev:
            rec[f"eval_{key}"] = ev[key]
    if "accuracy_by_subset" in ev:
        rec["eval_accuracy_by_subset"] = ev["accuracy_by_subset"]
    return rec


def _backbone_name(backbone: str | os.PathLike | nn.Module) -> str:
    if isinstance(backbone, nn.Module):
        name = getattr(getattr(backbone, "config", None), "_name_or_path", "") or ""
        return name or f"<{type(backbone).__name__}>"
    return str(backbone)


def _count_parameters(reward_model: RewardModel) -> int:
    """Every trained parameter the model keeps: the network's (its score head, whatever its
    kind) and the domain-feature layer's (ODIN's length head is trained but not kept)."""
    from goodhartlab.models.tiny import count_parameters

    modules = [reward_model.model]
    if reward_model.feature_head is not None:
        modules.append(reward_model.feature_head)
    return count_parameters(nn.ModuleList(modules))


def _versions() -> dict[str, str]:
    import transformers

    import goodhartlab

    return {
        "goodhartlab": goodhartlab.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def save_reward_model(
    model: nn.Module, tokenizer, out_dir: str | os.PathLike, info: dict[str, Any]
) -> Path:
    """Save model (safetensors), tokenizer and ``goodhart_rm.json`` atomically.

    Everything is written to a temporary sibling directory, sealed with the checksums of its
    files (``goodhartlab.artifacts``: a truncated or altered file is detected when the model
    is loaded), then renamed to ``out_dir``. An existing ``out_dir`` is replaced only if it is empty or a reward-model
    directory (has ``goodhart_rm.json``); anything else raises ValueError.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ValueError(f"out_dir: {out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not (out_dir / RM_INFO_FILE).exists():
            raise ValueError(
                f"out_dir: {out_dir} exists and is not a reward-model directory "
                f"(no {RM_INFO_FILE}); refusing to replace it"
            )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / RM_INFO_FILE).write_text(json.dumps(info, indent=2, allow_nan=False) + "\n")
        seal(tmp, {"kind": "reward_model"})
        os.chmod(tmp, dir_mode())
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def train_ensemble(
    pairs: Sequence[PreferencePair],
    tokenizer,
    backbones: str | os.PathLike | nn.Module | Sequence[str | os.PathLike | nn.Module],
    seeds: Sequence[int],
    config: RMTrainConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    eval_pairs: Sequence[PreferencePair] | None = None,
    progress: bool = True,
) -> EnsembleTrainResult:
    """Train one reward model per seed; members are saved to ``out_dir/member_<i>``.

    With one backbone, members differ only by seed (head init and data order): the
    fine-tune-seed ensembles of Coste et al. 2023. With a list of backbones, one per seed
    (e.g. causal LMs pretrained from different seeds), they are the pretrain-seed ensembles
    of Eisenstein et al. 2023. All members share the train / held-out split
    (``config.split_seed``). ``out_dir/ensemble.json`` lists the members and their metrics.
    Load the result with ``Ensemble.from_dirs(result.paths)``.
    """
    config = config or RMTrainConfig()
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds: expected at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: expected distinct seeds, got {seeds}")
    if isinstance(backbones, str | os.PathLike | nn.Module):
        backbones = [backbones] * len(seeds)
    backbones = list(backbones)
    if len(backbones) != len(seeds):
        raise ValueError(
            f"backbones: expected one backbone or one per seed ({len(seeds)}), got {len(backbones)}"
        )
    if out_dir is None:
        raise ValueError("out_dir: expected a directory to save the ensemble members in")
    out_dir = Path(out_dir)
    result = EnsembleTrainResult(paths=[], metrics=[], histories=[])
    for i, (seed, backbone) in enumerate(zip(seeds, backbones, strict=True)):
        member = train_reward_model(
            pairs,
            tokenizer,
            backbone,
            config.model_copy(update={"seed": seed}),
            eval_pairs=eval_pairs,
            out_dir=out_dir / f"member_{i}",
            progress=progress,
        )
        assert member.path is not None
        result.paths.append(member.path)
        result.metrics.append(member.metrics)
        result.histories.append(member.history)
        del member
    write_ensemble_index(out_dir, result.paths, seeds, backbones, result.metrics)
    return result


def write_ensemble_index(
    out_dir: str | os.PathLike,
    paths: Sequence[Path],
    seeds: Sequence[int],
    backbones: Sequence[str | os.PathLike | nn.Module],
    metrics: Sequence[dict[str, Any]],
) -> Path:
    """Write ``out_dir/ensemble.json`` (atomically, last: it marks the ensemble complete),
    listing each member's directory, seed, backbone and metrics, as ``train_ensemble`` does
    once every member is saved (also when the members were trained elsewhere)."""
    index = {
        "members": [
            {"path": Path(p).name, "seed": s, "backbone": _backbone_name(b), "metrics": m}
            for p, s, b, m in zip(paths, seeds, backbones, metrics, strict=True)
        ]
    }
    path = Path(out_dir) / "ensemble.json"
    atomic_write_text(path, json.dumps(index, indent=2, allow_nan=False) + "\n")
    return path
