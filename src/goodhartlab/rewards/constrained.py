"""Constrained RLHF in the RL loop: μ-PPO's and ξ-PPO's Lagrangian over component proxies.

The reward source of the run is an ensemble whose members are component reward models
(``experiments.proxies.train_component_proxies``), and the pipeline's members r_k (Shape:
(K, B); standardized first with ``standardize_members``) are the constraints. Every step
(:meth:`ConstrainedReward.apply`), with μ = squash(λ) the current multipliers
(``core.constrained``):

    r_shaped = Σ_k μ_k r_k,    β_eff = (K − Σ_k μ_k) · β,    r_final = r_shaped − β_eff · KL

so the objective is the KL reward −β · KL, weighted as the reference code weights it, and an
algorithm that puts the KL per token (PPO) gets β_eff. Then one dual-ascent step on λ with
the batch means of r_k against the thresholds θ_k (the proxy points,
``core.constrained.proxy_point``, in the members' units). Under GRPO the group normalization
makes the scale of the mixture irrelevant; the relative weights are what the multipliers set.

NM-PPO (``search="nelder_mead"``, the paper's single-run threshold search; reference code
``NelderMeadTrainer`` in ``rl4lms/envs/text_generation/training_utils.py``): θ is the current
point of a Nelder-Mead search (``core.nelder_mead``, scipy's algorithm driven ask/tell);
every ``search_every`` steps (:meth:`ConstrainedReward.observe_gold`, after that step's
evaluation) the evaluation's mean gold at θ is told to the search, which minimizes −gold, and θ
becomes the next point asked for; the policy and the multipliers carry on. The reference code
trains a fixed number of iterations per point too (n_iters / 10), minimizes −(evaluation
score), starts from a random simplex and returns early once every constraint is within 5 % of
its threshold; here the simplex is θ0 and θ0 + scale · e_k and every stretch is search_every
steps. This is the one mitigation that sees gold during training (as the paper's NM-PPO sees
the evaluation score); its result is an upper reference, not a proxy-only method.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from goodhartlab.core.constrained import ConstraintKind, dual_ascent_step, multipliers
from goodhartlab.core.nelder_mead import NelderMeadAskTell, initial_simplex

__all__ = ["ConstrainedConfig", "ConstrainedReward"]


class ConstrainedConfig(BaseModel):
    """μ-PPO / ξ-PPO (Moskovitz et al. 2023, arXiv 2310.04373; ``kind`` "ge" / "eq"): component
    proxies held at (ξ) or above (μ) thresholds by Lagrange multipliers, the KL reward as the
    objective."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    thresholds: list[float] = Field(
        ...,
        min_length=1,
        description="θ_k, one per member of the reward ensemble (the component proxies), in "
        "the members' units as the pipeline gives them (standardized with "
        "standardize_members): each component's proxy point.",
    )
    kind: ConstraintKind = Field(
        "ge",
        description="ge: E[r_k] >= θ_k (μ-PPO; multipliers σ(λ) in (0, 1)); eq: E[r_k] = θ_k, "
        "every component at its threshold (ξ-PPO; multipliers tanh(λ) in (−1, 1), negative "
        "for a component above its threshold; the reference code's equality_constraints). "
        "Both take the KL reward as the objective (core.constrained).",
    )
    multiplier_lr: float = Field(
        0.1, gt=0, description="Learning rate of the multipliers' dual ascent (reference: 0.1)."
    )
    momentum: float = Field(
        0.1, ge=0, lt=1, description="SGD momentum of the dual ascent (reference: 0.1)."
    )
    init: float = Field(0.0, description="λ_k at the start (μ = 0.5 for ge, 0 for eq).")
    search: Literal["none", "nelder_mead"] = Field(
        "none",
        description="none: the thresholds stay as given. nelder_mead: NM-PPO (Moskovitz et al. "
        "2023), a Nelder-Mead search over θ within the run: thresholds is the first vertex, "
        "every search_every steps the evaluation's mean gold at the current θ is told to the "
        "search (it minimizes −gold) and θ moves to the next point it asks for. This method "
        "sees gold during training (as the paper's NM-PPO sees the evaluation score).",
    )
    search_every: int = Field(
        10,
        ge=1,
        description="Steps trained at each θ before its gold is reported (nelder_mead); a "
        "multiple of eval_every, since the gold reported is the evaluation's.",
    )
    search_scale: float = Field(
        0.5,
        gt=0,
        description="The initial simplex: thresholds and thresholds + search_scale · e_k, one "
        "vertex per component (in the members' standardized units).",
    )
    search_adaptive: bool = Field(
        False,
        description="Gao & Han 2012's dimension-dependent Nelder-Mead coefficients (scipy's "
        "adaptive) instead of the standard 1, 2, 1/2, 1/2 (the reference code's).",
    )


class ConstrainedReward:
    """The multipliers of one run and the Lagrangian reward they give (state: λ, momentum)."""

    def __init__(self, config: ConstrainedConfig):
        self.config = config
        k = len(config.thresholds)
        self.theta = torch.tensor(config.thresholds, dtype=torch.float64)
        self.lam = torch.full((k,), float(config.init), dtype=torch.float64)
        self.velocity: Tensor | None = None
        self.last_stats: dict[str, float] = {}
        self.search: NelderMeadAskTell | None = None
        """NM-PPO's search over θ (``config.search``), else None."""
        if config.search == "nelder_mead":
            self.search = NelderMeadAskTell(
                initial_simplex(self.theta.numpy(), config.search_scale),
                adaptive=config.search_adaptive,
            )
            self.theta = torch.from_numpy(self.search.ask())

    @property
    def mu(self) -> Tensor:
        """The current multipliers. Shape: (K,)"""
        return multipliers(self.lam, self.config.kind)

    def apply(self, scored: Any, kl: Tensor | None) -> Any:
        """The pipeline's output with the Lagrangian reward (``r_shaped``, ``r_final``,
        ``kl_coef``); then one dual-ascent step.

        Args:
            scored: the pipeline's ``PipelineOutput`` of the batch (``r_members``: (K, B)).
            kl: the sequence KL of each completion when the pipeline penalizes it (else None,
                and the objective is 0). Shape: (B,)
        """
        members = scored.r_members
        k = self.theta.shape[0]
        if members is None or members.shape[0] != k:
            got = "a single reward" if members is None else f"{members.shape[0]} members"
            raise ValueError(
                f"constrained.thresholds: {k} thresholds need an ensemble of {k} component "
                f"proxies; the reward has {got}"
            )
        mu = self.mu
        r = members.to(torch.float64)
        r_shaped = (mu @ r).to(scored.r_shaped.dtype)
        kl_coef = float(k - mu.sum()) * scored.kl_coef
        r_final = (
            r_shaped if kl is None else r_shaped - kl_coef * kl.detach().cpu().to(r_shaped.dtype)
        )
        v = r.mean(dim=1)
        self.lam, self.velocity = dual_ascent_step(
            self.lam, v, self.theta, lr=self.config.multiplier_lr, kind=self.config.kind,
            momentum=self.config.momentum, velocity=self.velocity,
        )  # fmt: skip
        self.last_stats = {
            **{f"mu_{i}": float(mu[i]) for i in range(k)},
            **{f"constraint_{i}": float(v[i] - self.theta[i]) for i in range(k)},
            **({f"theta_{i}": float(self.theta[i]) for i in range(k)} if self.search else {}),
        }
        return dataclasses.replace(scored, r_shaped=r_shaped, r_final=r_final, kl_coef=kl_coef)

    def observe_gold(self, step: int, gold: float) -> dict[str, float]:
        """NM-PPO: after an evaluation, report its mean gold at the current θ to the search
        when ``step`` ends a stretch of ``search_every`` steps, and move θ to the next point.

        Returns:
            For the evaluation's line: the θ trained under up to ``step`` and the number of
            values the search has been told ({} without a search).
        """
        if self.search is None:
            return {}
        line = {f"theta_{i}": float(t) for i, t in enumerate(self.theta)}
        if step > 0 and step % self.config.search_every == 0:
            self.search.tell(-gold)
            self.theta = torch.from_numpy(self.search.ask())
        line["search_evals"] = len(self.search.history)
        return line

    def state_dict(self) -> dict[str, Any]:
        return {
            "lam": self.lam.tolist(),
            "velocity": None if self.velocity is None else self.velocity.tolist(),
            "search": None if self.search is None else self.search.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lam = torch.tensor(state["lam"], dtype=torch.float64)
        v = state.get("velocity")
        self.velocity = None if v is None else torch.tensor(v, dtype=torch.float64)
        if self.search is not None:  # replayed: scipy's search is deterministic in its values
            self.search.load_state_dict(state["search"])
            self.theta = torch.from_numpy(self.search.ask())
