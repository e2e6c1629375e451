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
    flag_suspect_pairs,
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
    unknown = sorted(set(needs) - {"grade", "strength", "suspect", "length"})
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
    return out, report


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
