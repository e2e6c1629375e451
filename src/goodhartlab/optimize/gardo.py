"""GARDO in the RL loop (He et al. 2025, arXiv 2512.24138; formulas in ``core.gardo``).

Three switches of ``RLConfig``, each usable alone (so they can be ablated):

- ``kl_gate``: the KL penalty in the reward applies only to the most uncertain samples of
  the batch (``kl_gate_fraction`` of them, or those above ``kl_gate_threshold``); the
  uncertainty is read from the ensemble's members (``member_std``: their disagreement about
  the sample's rank in the batch; ``proxy_gap``: how much higher the optimized reward ranks
  it than the members do). The paper optimizes one reward model and consults auxiliary
  ones: with the aggregator ``first`` the run optimizes member 0 (the study's single proxy)
  and the gate reads all members. proxy_gap's mean then includes member 0 itself, which
  scales the gap by (M − 1)/M and leaves its ranking, so the top-fraction gate, unchanged.
- ``ref_reset_every``: the penalty's reference, a copy of the base policy at first, is reset
  to the current policy every K steps (after steps K, 2K, ...). Only the penalty moves: the
  KL of metrics.jsonl (evaluation) stays the KL to the base policy, so the gold-vs-KL
  frontier is comparable with every other run; train.jsonl's ``kl`` is the penalty's.
- ``diversity_bonus``: advantages of the samples above their group's mean reward are
  multiplied by their diversity (cosine distance of their token n-gram counts to the
  nearest other completion of the prompt) over the group's mean diversity.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from goodhartlab.core.gardo import (
    diversity_weights,
    member_disagreement,
    nearest_neighbour_distance,
    proxy_overestimation,
    uncertainty_gate,
)

__all__ = [
    "check_gardo_resume",
    "check_gardo_run",
    "diversity_amplified",
    "gate_kl_penalty",
    "ngram_counts",
    "penalty_reference",
    "reset_penalty_reference",
    "reset_reference_if_due",
]


def check_gardo_run(cfg: Any, pipeline: Any) -> None:
    """What can only be checked once the reward is known: the gate reads an ensemble."""
    if cfg.kl_gate is not None and not pipeline.is_ensemble:
        raise ValueError(
            f"kl_gate: {cfg.kl_gate!r} reads the uncertainty from the members of an ensemble; "
            f"the reward {pipeline.name!r} is a single model (use an Ensemble, or kl_gate=None)"
        )


def penalty_reference(cfg: Any, reference: nn.Module) -> nn.Module | None:
    """A frozen copy of the base policy for the KL penalty, when it is to be reset (else
    None: the penalty uses the base policy itself)."""
    if cfg.ref_reset_every is None:
        return None
    return copy.deepcopy(reference).eval().requires_grad_(False)


@torch.no_grad()
def reset_penalty_reference(target: nn.Module, policy: nn.Module) -> None:
    """The penalty's reference becomes the current policy (weights copied in place)."""
    into = target.state_dict()
    for name, p in policy.state_dict().items():
        into[name].copy_(p)


def reset_reference_if_due(run: Any, step: int) -> dict[str, float]:
    """Reset the penalty's reference to the policy at the start of steps 1, K + 1, 2K + 1, ...
    (after steps K, 2K, ...; the first is a no-op). Returns ``{"ref_reset": 0 or 1}`` when
    the reference moves, else ``{}``."""
    if run.kl_reference is None:
        return {}
    due = (step - 1) % run.cfg.ref_reset_every == 0
    if due:
        reset_penalty_reference(run.kl_reference, run.policy)
    return {"ref_reset": float(due)}


def check_gardo_resume(cfg: Any, start: int) -> None:
    """A resumed run with a moving reference must resume where the reference was just reset
    (at a multiple of K, which checkpoint_every is): it is then the checkpointed policy."""
    if cfg.ref_reset_every is not None and start % cfg.ref_reset_every:
        raise ValueError(
            f"ref_reset_every: the checkpoint at step {start} is not a multiple of "
            f"{cfg.ref_reset_every}, so the penalty's reference it ran against is not saved; "
            "resume from a checkpoint at a multiple of ref_reset_every"
        )


def gate_kl_penalty(
    cfg: Any, pipeline: Any, scored: Any, kl_seq: Tensor, stats: dict[str, float]
) -> tuple[Any, dict[str, float]]:
    """The pipeline's output with the KL penalty in the reward on the gated samples only.

    r_final = r_shaped − β · g · KL, g = ``core.gardo.uncertainty_gate`` of the uncertainty,
    β the penalty's. Returns that output and ``stats`` with the gate's: the fraction gated
    (``kl_gated_frac``), the mean uncertainty (``uncertainty``) and the mean KL of the gated
    and of the other samples (``kl_gated``, ``kl_ungated``; 0 where there are none: the log
    takes no NaN).
    """
    members = scored.r_members
    if cfg.kl_gate == "member_std":
        u = member_disagreement(members)
    else:
        u = proxy_overestimation(scored.r_proxy, members)
    gate = uncertainty_gate(u, cfg.kl_gate_fraction, cfg.kl_gate_threshold)
    kl = kl_seq.detach().cpu().to(scored.r_shaped.dtype)
    r_final = pipeline.kl_penalty.apply(scored.r_shaped, gate.to(kl.dtype) * kl)
    n_gated = int(gate.sum())
    stats = {
        **stats,
        "kl_gated_frac": n_gated / gate.numel(),
        "uncertainty": float(u.mean()),
        "kl_gated": float(kl[gate].sum()) / max(n_gated, 1),
        "kl_ungated": float(kl[~gate].sum()) / max(gate.numel() - n_gated, 1),
    }
    return dataclasses.replace(scored, r_final=r_final), stats


def ngram_counts(completion_ids: Tensor, num_tokens: Tensor, n: int) -> Tensor:
    """Each completion's counts of token n-grams, over the n-grams of the batch.

    Args:
        completion_ids: Shape: (B, T)
        num_tokens: tokens of each row before EOS. Shape: (B,)
        n: the n-gram order (a row shorter than n counts its whole token sequence once).

    Returns:
        Shape: (B, V), V the distinct n-grams of the batch (at least 1).
    """
    rows = []
    for ids, length in zip(completion_ids.tolist(), num_tokens.tolist(), strict=True):
        ids = ids[: int(length)]
        grams = [tuple(ids[t : t + n]) for t in range(len(ids) - n + 1)] or [tuple(ids)]
        rows.append(grams)
    vocab: dict[tuple, int] = {}
    for grams in rows:
        for g in grams:
            vocab.setdefault(g, len(vocab))
    counts = torch.zeros(len(rows), max(len(vocab), 1))
    for b, grams in enumerate(rows):
        for g in grams:
            counts[b, vocab[g]] += 1
    return counts


def diversity_amplified(
    cfg: Any, rollouts: Any, r_final: Tensor, advantages: Tensor, stats: dict[str, float]
) -> tuple[Tensor, dict[str, float]]:
    """Advantages × ``core.gardo.diversity_weights`` (diversity: the cosine distance of token
    n-gram counts to the nearest other completion of the prompt). Returns them and ``stats``
    with the mean and largest multiplier (``diversity_mult``, ``diversity_mult_max``) and the
    mean diversity (``diversity``)."""
    emb = ngram_counts(
        rollouts.completion_ids.cpu(), rollouts.num_tokens.cpu(), cfg.diversity_ngram
    )
    d = nearest_neighbour_distance(emb, cfg.group_size)
    m = diversity_weights(r_final.detach().cpu().float(), d, cfg.group_size)
    shape = (-1,) + (1,) * (advantages.ndim - 1)
    stats = {
        **stats,
        "diversity": float(d.mean()),
        "diversity_mult": float(m.mean()),
        "diversity_mult_max": float(m.max()),
    }
    return advantages * m.to(advantages).view(shape), stats
