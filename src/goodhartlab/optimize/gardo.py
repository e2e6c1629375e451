"""GARDO in the RL loop (He et al. 2025, arXiv 2512.24138; formulas in ``core.gardo``).

Switches of ``RLConfig``, each usable alone (so they can be ablated):

- ``kl_gate``: the KL penalty in the reward applies only to the most uncertain samples of
  the batch (``kl_gate_fraction`` of them, or those above ``kl_gate_threshold``; with
  ``kl_gate_adaptive`` the fraction follows the batch's uncertainty, by the released code's
  controller ``core.gardo.adapted_gate_fraction``); the
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
- ``ref_reset_kl``: the reference code's trigger instead of the fixed schedule: the
  reference is reset at the start of a step when the previous step's penalized samples (the
  gated ones, or all without a gate) had a mean KL to it above ``ref_reset_kl``, and at the
  latest ``ref_reset_every`` steps after the last reset (when given). The released code
  (``scripts/train_sd3_grpo_gardo.py``, commit 1cc77fb): the KL loss on the gated samples
  (l. 982-984), averaged over the micro-batches of an optimizer step, above ``kl_thres``
  sets a flag (l. 1042-1043); at the next epoch, after sampling, the reference is copied
  from the policy if the flag is set or more than ``reset_freq`` epochs have passed since
  the last copy (l. 788-798; ``config/gardo.py``: ``reset_freq = 15``, ``kl_thres = 3e-4``,
  "set according to specific tasks"); no minimum interval. Ours differs in three ways: the
  KL is the sequence KL estimate of the penalty (nats per completion, measured when the
  batch is sampled, i.e. the code's first optimizer step of an epoch), not the code's
  per-dimension Gaussian KL of the denoising steps; the cap is "at the latest K steps
  after" (so ``ref_reset_every`` means at most K steps against one reference with or
  without the trigger; the code's ``reset_freq = 15`` with its ``>`` is K = 16); and the
  code's threshold adaptation is left out (commented out in the SD3 and Flux GRPO scripts;
  only ``train_sd3_nft_gardo.py`` l. 777-780 moves it, between bounds that cross).
  Resets then fall on any step, so the checkpoint carries the reference's weights, the
  last reset step and the pending trigger.
- ``diversity_bonus``: advantages of the samples above their group's mean reward are
  multiplied by their diversity (cosine distance of their token n-gram counts to the
  nearest other completion of the prompt) over the group's mean diversity.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from goodhartlab.core.gardo import (
    adapted_gate_fraction,
    diversity_weights,
    mean_nonnegative_uncertainty,
    member_disagreement,
    nearest_neighbour_distance,
    proxy_overestimation,
    uncertainty_gate,
)

__all__ = [
    "GardoState",
    "adapt_gate_fraction",
    "check_gardo_resume",
    "check_gardo_run",
    "diversity_amplified",
    "gardo_state",
    "gate_kl_penalty",
    "ngram_counts",
    "note_penalized_kl",
    "penalty_reference",
    "reset_penalty_reference",
    "reset_reference_if_due",
]


@dataclass
class GardoState:
    """What GARDO carries from step to step besides the reference's weights (checkpointed).

    ``fraction``: the gate fraction of the last step (kl_gate_adaptive); ``signals``: the
    last W uncertainty signals (``core.gardo.mean_nonnegative_uncertainty``), oldest first;
    ``last_reset``: the step at whose start the reference was last set to the policy (1: the
    copy of π0 the run starts with); ``reset_pending``: the last step's penalized KL
    exceeded ``ref_reset_kl``, so the next step starts with a reset.
    """

    fraction: float
    signals: list[float] = field(default_factory=list)
    last_reset: int = 1
    reset_pending: bool = False

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fraction = float(state["fraction"])
        self.signals = [float(x) for x in state["signals"]]
        self.last_reset = int(state["last_reset"])
        self.reset_pending = bool(state["reset_pending"])


def gardo_state(cfg: Any) -> GardoState | None:
    """The state of a run with an adaptive fraction or a KL-triggered reset, else None."""
    if not cfg.kl_gate_adaptive and cfg.ref_reset_kl is None:
        return None
    return GardoState(fraction=cfg.kl_gate_fraction)


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
    if cfg.ref_reset_every is None and cfg.ref_reset_kl is None:
        return None
    return copy.deepcopy(reference).eval().requires_grad_(False)


@torch.no_grad()
def reset_penalty_reference(target: nn.Module, policy: nn.Module) -> None:
    """The penalty's reference becomes the current policy (weights copied in place)."""
    into = target.state_dict()
    for name, p in policy.state_dict().items():
        into[name].copy_(p)


def reset_reference_if_due(run: Any, step: int) -> dict[str, float]:
    """Reset the penalty's reference to the policy at the start of a step, when due.

    Fixed schedule (``ref_reset_every`` alone): steps K + 1, 2K + 1, ... (after steps K,
    2K, ...). KL trigger (``ref_reset_kl``): a step after one whose penalized KL exceeded the
    threshold (``note_penalized_kl``), or K steps after the last reset with
    ``ref_reset_every`` = K. Never step 1: it starts a new run (a resumed one starts after
    its checkpoint), whose reference is a copy of π0 and so already the policy, and a copy
    there would be a no-op logged as a reset. Returns ``{"ref_reset": 0 or 1}`` when the
    reference can move, else ``{}``."""
    if run.kl_reference is None:
        return {}
    cfg, state = run.cfg, run.gardo
    if cfg.ref_reset_kl is None:
        due = step > 1 and (step - 1) % cfg.ref_reset_every == 0
    else:
        capped = cfg.ref_reset_every is not None and step - state.last_reset >= cfg.ref_reset_every
        due = step > 1 and (state.reset_pending or capped)
    if due:
        reset_penalty_reference(run.kl_reference, run.policy)
        if state is not None:
            state.last_reset, state.reset_pending = step, False
    return {"ref_reset": float(due)}


def note_penalized_kl(run: Any, kl_seq: Tensor, stats: dict[str, float]) -> dict[str, float]:
    """With ``ref_reset_kl``: whether the next step starts with a reset, from this step's
    mean KL of the penalized samples (``kl_gated`` with a gate, else the batch's mean; the
    released code's KL loss is on the gated samples only, 0 when none is gated). Returns
    ``stats`` with ``kl_penalized`` and ``ref_reset_due`` (0 or 1)."""
    if run.cfg.ref_reset_kl is None:
        return stats
    kl = stats["kl_gated"] if run.cfg.kl_gate is not None else float(kl_seq.mean())
    run.gardo.reset_pending = kl > run.cfg.ref_reset_kl
    return {**stats, "kl_penalized": kl, "ref_reset_due": float(run.gardo.reset_pending)}


def check_gardo_resume(cfg: Any, start: int) -> None:
    """A resumed run with a reference on the fixed schedule must resume where the reference
    was just reset (at a multiple of K, which checkpoint_every is): it is then the
    checkpointed policy. (With the KL trigger the checkpoint holds the reference itself.)"""
    if cfg.ref_reset_kl is None and cfg.ref_reset_every is not None and start % cfg.ref_reset_every:
        raise ValueError(
            f"ref_reset_every: the checkpoint at step {start} is not a multiple of "
            f"{cfg.ref_reset_every}, so the penalty's reference it ran against is not saved; "
            "resume from a checkpoint at a multiple of ref_reset_every"
        )


def adapt_gate_fraction(cfg: Any, state: GardoState, u: Tensor) -> dict[str, float]:
    """Move the gate fraction by this batch's uncertainty (``core.gardo.adapted_gate_fraction``)
    and add its signal to the history (the last ``kl_gate_window``). Returns the signal
    (``gate_signal``)."""
    signal = mean_nonnegative_uncertainty(u)
    state.fraction = adapted_gate_fraction(
        state.fraction,
        signal,
        torch.tensor(state.signals, dtype=torch.float64),
        rate=cfg.kl_gate_adapt_rate,
        low=cfg.kl_gate_fraction_min,
        high=cfg.kl_gate_fraction_max,
    )
    state.signals = [*state.signals, signal][-cfg.kl_gate_window :]
    return {"gate_signal": signal}


def gate_kl_penalty(
    run: Any, scored: Any, kl_seq: Tensor, stats: dict[str, float]
) -> tuple[Any, dict[str, float]]:
    """The pipeline's output with the KL penalty in the reward on the gated samples only.

    r_final = r_shaped − β · g · KL, g = ``core.gardo.uncertainty_gate`` of the uncertainty,
    β the penalty's; with ``kl_gate_adaptive`` the fraction is first adapted to the batch
    (:func:`adapt_gate_fraction`). Returns that output and ``stats`` with the gate's: the
    fraction asked for (``kl_gate_fraction``, with a fraction gate) and the fraction gated
    (``kl_gated_frac``), the mean uncertainty (``uncertainty``) and the mean KL of the gated
    and of the other samples (``kl_gated``, ``kl_ungated``; 0 where there are none: the log
    takes no NaN).
    """
    cfg, members = run.cfg, scored.r_members
    if cfg.kl_gate == "member_std":
        u = member_disagreement(members)
    else:
        u = proxy_overestimation(scored.r_proxy, members)
    fraction = cfg.kl_gate_fraction
    if cfg.kl_gate_adaptive:
        stats = {**stats, **adapt_gate_fraction(cfg, run.gardo, u)}
        fraction = run.gardo.fraction
    if cfg.kl_gate_threshold is None:
        stats = {**stats, "kl_gate_fraction": fraction}
    gate = uncertainty_gate(u, fraction, cfg.kl_gate_threshold)
    kl = kl_seq.detach().cpu().to(scored.r_shaped.dtype)
    r_final = run.pipeline.kl_penalty.apply(scored.r_shaped, gate.to(kl.dtype) * kl)
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
