"""Per-pair inputs that some reward-model objectives need besides the two rewards.

An ``RM_OBJECTIVES`` entry lists them in its ``needs`` (e.g. ``("grade",)``); before training,
:func:`pair_inputs` computes each from the training pairs once, as a tensor with one value
per pair, and the training loop hands the batch's slice to the loss under the same name.

- ``grade``: the graded preference label (``data.grades.preference_grades``).
- ``strength`` and ``suspect``: the preference strength μ̂ of each pair from an ensemble of
  Bradley-Terry models cross-fitted on the training pairs (K folds, member k trained on the
  other folds scores fold k, so that no member scores a pair it was trained on), and the
  pairs flagged as likely flipped, the ``suspect_fraction`` of lowest strength
  (``core.rm_objectives.flag_suspect_pairs``; Wang et al. 2024, arXiv 2401.06080).
- ``length``: the length in words of the chosen and of the rejected completion, handed over
  as ``length_chosen`` and ``length_rejected`` (``core.length_bias.completion_lengths``; ODIN).
- ``observed``, ``propensity``, ``imputed_label``: simulated observational feedback (CausalRM,
  :func:`simulate_observation`, version ``OBSERVATION_VERSION``).

Each provider also returns a small JSON-ready report (saved in ``goodhart_rm.json``): for
the strengths, how many of the known flipped labels (``meta["flipped"]``) the suspects catch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from goodhartlab.core.length_bias import completion_lengths
from goodhartlab.core.rm_objectives import (
    detection_precision_recall,
    fit_logistic,
    flag_suspect_pairs,
    observation_propensity,
)
from goodhartlab.data.grades import GRADES_VERSION, preference_grades
from goodhartlab.data.schema import PreferencePair

Report = dict[str, Any]


def pair_inputs(
    needs: Sequence[str],
    pairs: Sequence[PreferencePair],
    tokenizer,
    backbone: str | os.PathLike | nn.Module,
    config,
) -> tuple[dict[str, torch.Tensor], Report]:
    """The tensors (one value per pair, in ``pairs`` order) that ``needs`` names, and a report.

    Args:
        needs: names from an objective entry's ``needs`` ("grade", "strength", "suspect",
            "length").
        pairs: the training pairs.
        tokenizer, backbone: those of the model being trained (the strength ensemble's
            members start from the same backbone).
        config: the ``RMTrainConfig`` of the run.
    """
    known = {"grade", "strength", "suspect", "length", "observed", "propensity", "imputed_label"}
    unknown = sorted(set(needs) - known)
    if unknown:
        raise ValueError(f"objective {config.objective!r} needs unknown pair inputs {unknown}")
    tensors: dict[str, torch.Tensor] = {}
    report: Report = {}
    if "grade" in needs:
        grades = preference_grades(pairs, config.grade_edges)
        tensors["grade"] = torch.tensor(grades, dtype=torch.long)
        counts = torch.bincount(tensors["grade"], minlength=len(config.grade_edges) + 2)[1:]
        report["grades"] = {
            "version": GRADES_VERSION,
            "edges": list(config.grade_edges),
            "counts": counts.tolist(),
        }
    if "strength" in needs or "suspect" in needs:
        strength = cross_fitted_strength(pairs, tokenizer, backbone, config)
        suspect = flag_suspect_pairs(strength, config.suspect_fraction)
        tensors["strength"], tensors["suspect"] = strength, suspect
        report["strength"] = _strength_report(pairs, strength, suspect, config)
    out = {k: v for k, v in tensors.items() if k in needs}
    if "length" in needs:
        out["length_chosen"] = completion_lengths([p.chosen for p in pairs])
        out["length_rejected"] = completion_lengths([p.rejected for p in pairs])
    if {"observed", "propensity", "imputed_label"} & set(needs):
        sim, report["observation"] = simulate_observation(pairs, config)
        out.update({k: v for k, v in sim.items() if k in needs})
    return out, report


#: Version of :func:`simulate_observation`; bump when its draws or features change.
OBSERVATION_VERSION = "1"


def observation_feature(pairs: Sequence[PreferencePair], feature: str) -> torch.Tensor:
    """x_i, the standardized content feature the simulated observation depends on. Shape: (B,)

    ``length_gap``: words(chosen) − words(rejected) of the pair as labelled; ``gold_gap``:
    |gold_chosen − gold_rejected| (needs the pairs' gold rewards). Standardized to mean 0 and
    std 1 over ``pairs``.
    """
    if feature == "length_gap":
        x = completion_lengths([p.chosen for p in pairs]) - completion_lengths(
            [p.rejected for p in pairs]
        )
    elif feature == "gold_gap":
        if any(p.gold_chosen is None or p.gold_rejected is None for p in pairs):
            raise ValueError("causal_feature 'gold_gap' needs gold_chosen and gold_rejected")
        x = torch.tensor([abs(p.gold_chosen - p.gold_rejected) for p in pairs], dtype=torch.float64)
    else:
        raise ValueError(f"causal_feature: expected length_gap or gold_gap, got {feature!r}")
    return (x - x.mean()) / x.std().clamp_min(1e-12)


def simulate_observation(
    pairs: Sequence[PreferencePair], config
) -> tuple[dict[str, torch.Tensor], Report]:
    """Observational feedback on the training pairs (CausalRM's setting), seeded and versioned.

    Pair i is observed (o_i = 1, its label seen) with the true propensity
    p_i = σ(α + β·x_i) (α = ``causal_obs_bias``, β = ``causal_obs_slope``, x_i from
    :func:`observation_feature` with ``causal_feature``), o_i ~ Bernoulli(p_i) drawn with
    ``torch.Generator().manual_seed(config.seed)``. The labels keep their noise (the pairs'
    own flips), so the feedback is both noisy and selection-biased. The practical version
    sees only x and o:

    - ``propensity``: p̂_i = max(σ(α̂ + β̂·x_i), c) with (α̂, β̂) a logistic regression of o on x
      over all pairs (``causal_propensity="estimated"``), or max(p_i, c) (``"oracle"``);
      c = ``causal_propensity_clip``.
    - ``imputed_label``: q_i = σ(â + b̂·d_i), the probability that the labelled chosen is
      preferred, from a logistic regression on the observed pairs' labels with d_i the
      standardized length gap, each observed pair entered in both orders (d, 1) and (−d, 0)
      with weight 1/p̂_i (so that the selection on x does not tilt it). A deliberately weak
      imputation model: it knows the length gap and nothing else of the content.
    """
    x = observation_feature(pairs, config.causal_feature)
    true_p = torch.sigmoid(config.causal_obs_bias + config.causal_obs_slope * x)
    gen = torch.Generator().manual_seed(config.seed)
    observed = torch.rand(len(pairs), generator=gen, dtype=torch.float64) < true_p
    if int(observed.sum()) < 2:
        raise ValueError(
            f"simulate_observation: {int(observed.sum())} observed pairs; raise causal_obs_bias"
        )
    clip = config.causal_propensity_clip
    if config.causal_propensity == "oracle":
        alpha, beta = config.causal_obs_bias, config.causal_obs_slope
    else:
        alpha, beta = fit_logistic(x, observed.double())
    propensity = observation_propensity(x, alpha, beta, clip)
    d = observation_feature(pairs, "length_gap")
    d_obs = d[observed]
    w_obs = 1.0 / propensity[observed]
    a, b = fit_logistic(
        torch.cat([d_obs, -d_obs]),
        torch.cat([torch.ones_like(d_obs), torch.zeros_like(d_obs)]),
        torch.cat([w_obs, w_obs]),
    )
    imputed = torch.sigmoid(a + b * d)
    report: Report = {
        "version": OBSERVATION_VERSION,
        "feature": config.causal_feature,
        "true_bias": config.causal_obs_bias,
        "true_slope": config.causal_obs_slope,
        "propensity": config.causal_propensity,
        "fitted_bias": alpha,
        "fitted_slope": beta,
        "clip": clip,
        "n_observed": int(observed.sum()),
        "observed_fraction": float(observed.double().mean()),
        "imputation_bias": a,
        "imputation_slope": b,
    }
    flips = [p.flipped for p in pairs]
    if flips and all(f is not None for f in flips):
        flipped = torch.tensor(flips)
        report["flipped_fraction_all"] = float(flipped.double().mean())
        report["flipped_fraction_observed"] = float(flipped[observed].double().mean())
    tensors = {
        "observed": observed.float(),
        "propensity": propensity.float(),
        "imputed_label": imputed.float(),
    }
    return tensors, report


def cross_fitted_strength(
    pairs: Sequence[PreferencePair],
    tokenizer,
    backbone: str | os.PathLike | nn.Module,
    config,
) -> torch.Tensor:
    """μ̂_i = r(y_c,i) − r(y_r,i) under the member that did not train on pair i. Shape: (B,)

    ``config.robust_members`` = K folds drawn with ``config.seed``; member k is a plain
    Bradley-Terry model (the run's recipe without margin, smoothing or centering, nothing held
    out, seed ``config.seed + 1 + k``) trained on the other K − 1 folds.
    """
    from goodhartlab.train.rm import train_reward_model

    pairs = list(pairs)
    k = config.robust_members
    if len(pairs) < 2 * k:
        raise ValueError(
            f"robust_members: {k} folds need at least {2 * k} training pairs; got {len(pairs)}"
        )
    perm = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(config.seed))
    folds = [perm[f::k].tolist() for f in range(k)]
    strength = torch.empty(len(pairs))
    for f, held in enumerate(folds):
        held_set = set(held)
        train = [p for i, p in enumerate(pairs) if i not in held_set]
        member_config = config.model_copy(
            update={
                "objective": "bradley_terry",
                "margin": False,
                "label_smoothing": 0.0,
                "center_coef": 0.0,
                "eval_fraction": 0.0,
                "seed": config.seed + 1 + f,
            }
        )
        member = train_reward_model(
            train, tokenizer, backbone, member_config, eval_pairs=[], progress=False
        ).reward_model
        scored = [pairs[i] for i in held]
        prompts = [p.prompt for p in scored]
        with torch.no_grad():
            r = member(
                prompts + prompts,
                [p.chosen for p in scored] + [p.rejected for p in scored],
                batch_size=config.eval_batch_size,
            )
        r = torch.as_tensor(r).detach().float().cpu()
        strength[held] = r[: len(held)] - r[len(held) :]
        del member
    return strength


def _strength_report(
    pairs: Sequence[PreferencePair], strength: torch.Tensor, suspect: torch.Tensor, config
) -> Report:
    report: Report = {
        "members": config.robust_members,
        "cross_fitted": True,
        "suspect_fraction": config.suspect_fraction,
        "n_suspect": int(suspect.sum()),
        "strength_mean": float(strength.mean()),
        "strength_negative_fraction": float((strength < 0).float().mean()),
    }
    flips = [p.flipped for p in pairs]
    if flips and all(f is not None for f in flips):
        flipped = torch.tensor(flips)
        detection = detection_precision_recall(suspect, flipped)
        # JSON has no NaN: a rate with an empty denominator is null.
        report["detection"] = {
            key: None if isinstance(v, float) and math.isnan(v) else v
            for key, v in detection.items()
        }
        if bool(flipped.any()) and bool((~flipped).any()):
            report["strength_mean_flipped"] = float(strength[flipped].mean())
            report["strength_mean_clean"] = float(strength[~flipped].mean())
    return report
