"""A reward pipeline: source -> (aggregate) -> shape -> (KL penalty), the reward RL optimizes.

    r_proxy  = source(prompts, completions)                    Shape: (B,)
               (an Ensemble: aggregator(score_members(...)), members Shape: (M, B);
               with standardize_members, each member first z-scored on base-policy samples)
    r_shaped = shaping(r_proxy, context)                       core.shaping
    r_final  = r_shaped − β · KL                               core.advantages, optional

Every stage is checked: a source that returns the wrong number of scores, or a NaN / inf
score (also from a single ensemble member), raises ValueError naming the source, so a bad
reward never reaches an optimizer.

Shaping that needs reference rewards (PAR, LSC, centered; Fu et al. 2025, arXiv 2502.18770)
asks a ``reference_sampler`` for M completions of each prompt from the base policy the first
time it sees that prompt, scores them once, and caches the M scores per prompt. The sampler
is injected (the RL loop passes one that samples from the frozen base policy), so this
module needs no model code; it should be deterministic per prompt, so that a resumed run
rebuilds the same cache.

Step-level shaping (``step_clip``, ``step_delta``: Gao et al. 2024, arXiv 2410.15115) splits
each completion into sentences (:mod:`goodhartlab.rewards.steps`), scores every sentence
prefix with the source, and returns the step rewards beside their sum (``PipelineOutput.steps``)
so that a token-level algorithm (PPO) can put each on the last token of its sentence.

``standardize_members`` puts every member (the single proxy is one member) on the scale of
the base policy: z_m = (r_m − μ_m) / σ_m with μ_m, σ_m member m's mean and standard deviation
over ``reference_samples`` base-policy completions of each of the first
``standardize_prompts`` calibration prompts (``core.aggregate.standardize_members``, as
best-of-n does). Bradley-Terry leaves each member's offset arbitrary; without this WCO's
minimum is mostly the member with the lowest offset. The statistics are computed once, on
first use, from the same deterministic reference sampler.

``length_fit`` shaping (FiMi-RM, Zhao et al. 2025, arXiv 2505.12843) fits the proxy's length
bias f(ℓ) once, on first use, on the same calibration samples (``core.length_bias``), and
optimizes the residual r − f(ℓ).

A pairwise preference model (``rewards.pairwise``: a source with ``preference_matrix``) has
no per-completion score. In training (``__call__`` with ``group_size``) the reward of a
completion is its self-play payoff, its preference over the other completions of its group,
P̂(y_i ≻ π) = 1/(G − 1) Σ_{j ≠ i} P(y_i ≻ y_j) (``core.nash.win_rate_from_preferences``;
Nash-MP's extrapolation payoff: ``optimize.nash_mp``); its mean over a batch is exactly 1/2.
Everywhere else (``score_source``: the evaluations' ``proxy``) it is its win rate over the
base policy, P̂(y ≻ π0) = 1/M Σ_m P(y ≻ y0_m) against the M = ``reference_samples``
base-policy completions of its prompt (sampled once per prompt by the reference sampler,
cached), NLHF's win rate against the reference policy. It takes no shaping and no
standardization.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from goodhartlab.core import shaping as shaping_fns
from goodhartlab.core.advantages import AdaptiveKLController, kl_penalized_rewards
from goodhartlab.core.aggregate import AGGREGATORS, get_aggregator, standardize_members
from goodhartlab.core.length_bias import completion_lengths, fit_length_bias
from goodhartlab.core.nash import win_rate_from_preferences
from goodhartlab.core.shaping import SHAPINGS, ShapingContext
from goodhartlab.registry import name_in
from goodhartlab.rewards.steps import sentence_ends

__all__ = [
    "KLPenalty",
    "PipelineOutput",
    "ReferenceSampler",
    "RewardPipeline",
    "RewardPipelineConfig",
    "StepRewards",
    "source_name",
]

#: ``prompts -> M completions for each prompt`` sampled from the base policy.
ReferenceSampler = Callable[[Sequence[str]], list[list[str]]]


class RewardPipelineConfig(BaseModel):
    """How a proxy reward is turned into the reward the optimizer sees (before KL)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    aggregator: name_in(AGGREGATORS) = Field(
        "mean",
        description="Ensemble aggregator (goodhart list aggregator). Ignored for a single reward.",
    )
    aggregator_params: dict[str, float] = Field(
        default_factory=dict,
        description="Aggregator parameters (uwo: lam, mean_minus_std: k); missing ones take "
        "the entry's RL defaults (uwo λ = 0.1, Coste et al.'s PPO value), then its own.",
    )
    shaping: name_in(SHAPINGS) = Field(
        "none",
        description="Reward shaping (registry 'shaping'): none; par (mean σ(r − r_ref)); lsc "
        "(log σ(r − q-quantile of the references)); centered (r − mean r_ref); clip (to "
        "running μ ± σ); meanstd ((r − μ)/σ, running); minmax (running min/max to [0, 1]); "
        "ceil (min(r, c)); running_center (r − running mean); step_clip (Σ over sentence "
        "prefixes of min(r − η, 0)); step_delta (successive differences of sentence-prefix "
        "rewards); length_fit (r − f(length), f fitted on base-policy samples, FiMi-RM).",
    )
    shaping_params: dict[str, float] = Field(
        default_factory=dict,
        description="Shaping parameters (lsc: quantile, default 0.85; ceil: c, required; "
        "step_clip: eta, default 0; length_fit: dim, hidden, fit_steps, fit_lr).",
    )
    reference_samples: int = Field(
        10,
        ge=1,
        description="M: base-policy completions per prompt for par / lsc / centered, and per "
        "calibration prompt for standardize_members and length_fit.",
    )
    standardize_members: bool = Field(
        False,
        description="z-score each ensemble member (a single proxy: itself) on base-policy "
        "samples before aggregation and shaping (core.aggregate.standardize_members).",
    )
    standardize_prompts: int = Field(
        32,
        ge=1,
        description="Calibration prompts of standardize_members and length_fit (the first ones).",
    )

    @model_validator(mode="after")
    def _check(self) -> RewardPipelineConfig:
        AGGREGATORS.entry(self.aggregator).validate_params(
            self.resolved_aggregator_params(), where="aggregator_params"
        )
        SHAPINGS.entry(self.shaping).validate_params(self.shaping_params, where="shaping_params")
        return self

    def resolved_aggregator_params(self) -> dict[str, float]:
        """The aggregator's parameters with the entry's RL defaults filled in."""
        rl_defaults = AGGREGATORS.entry(self.aggregator).meta.get("rl_params", {})
        return {**rl_defaults, **self.aggregator_params}

    @property
    def shaping_needs(self) -> str | None:
        """What the shaping needs besides the rewards: "references", "moments", "steps",
        "length_bias", "calibration" or None."""
        return SHAPINGS.entry(self.shaping).meta.get("needs")


def _check_pairwise_config(name: str, config: RewardPipelineConfig) -> None:
    """A pairwise preference model takes no shaping and no member standardization."""
    if config.shaping != "none":
        raise ValueError(
            f"reward.shaping: reward source {name!r} is a pairwise preference model, whose "
            f"payoff is a preference; it takes no shaping (expected 'none', got "
            f"{config.shaping!r})"
        )
    if config.standardize_members:
        raise ValueError(
            f"reward.standardize_members: reward source {name!r} is a pairwise preference "
            "model (no member scores to standardize); expected false"
        )


class KLPenalty:
    """Sequence-level KL penalty in the reward, r − β · KL, with a fixed or adaptive β.

    Fixed: β = ``coef``. Adaptive (``target`` given): Ziegler et al. 2019's controller
    (:class:`goodhartlab.core.advantages.AdaptiveKLController`), updated by :meth:`update`
    after every batch with the batch's mean KL.
    """

    def __init__(self, coef: float, target: float | None = None, horizon: int = 10_000):
        if not coef >= 0.0:
            raise ValueError(f"kl_coef: expected >= 0, got {coef}")
        self._coef = float(coef)
        self.controller = (
            AdaptiveKLController(coef=float(coef), target=float(target), horizon=int(horizon))
            if target is not None
            else None
        )

    @property
    def coef(self) -> float:
        """The current β."""
        return self.controller.coef if self.controller is not None else self._coef

    def apply(self, r: Tensor, kl: Tensor) -> Tensor:
        """r − β · kl. Shapes: (B,), (B,) -> (B,)."""
        return kl_penalized_rewards(r, kl, self.coef)

    def update(self, kl_mean: float, n_samples: int) -> float:
        """Adapt β to the measured mean KL of ``n_samples`` completions (no-op if fixed)."""
        if self.controller is not None:
            self.controller.update(kl_mean, n_samples)
        return self.coef

    def state_dict(self) -> dict[str, Any]:
        return {"coef": self.coef}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.controller is not None:
            self.controller.coef = float(state["coef"])
        else:
            self._coef = float(state["coef"])


@dataclass(frozen=True)
class StepRewards:
    """The step-level rewards of a batch (sentences as steps), row-aligned with it."""

    r_steps: Tensor
    """The proxy's score of every sentence prefix (after standardization). Shape: (B, K)"""
    rewards: Tensor
    """The shaping's reward of each step; their row sums are ``r_shaped``. Shape: (B, K)"""
    mask: Tensor
    """1 on each row's steps (left-aligned). Shape: (B, K)"""
    ends: list[list[int]]
    """Character offset just past each step in its completion (rewards.steps)."""


@dataclass(frozen=True)
class PipelineOutput:
    """The rewards at each stage of the pipeline, for one batch."""

    r_proxy: Tensor
    """The source's reward (aggregated over members for an ensemble). Shape: (B,)"""
    r_members: Tensor | None
    """Each ensemble member's reward, or None for a single reward. Shape: (M, B)"""
    r_shaped: Tensor
    """After shaping. Shape: (B,)"""
    r_final: Tensor
    """After the KL penalty: what the optimizer sees. Shape: (B,)"""
    kl_coef: float
    """β used for this batch (0 when there is no penalty)."""
    steps: StepRewards | None = None
    """The step rewards, for step-level shaping; else None."""


def source_name(source: Any) -> str:
    """A label for a reward source in error messages."""
    name = getattr(source, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(source, "__name__", None) or type(source).__name__


def _checked(values: Any, n: int, what: str, prompts: Sequence[str], completions: Sequence[str]):
    try:
        r = torch.as_tensor(values, dtype=torch.float32).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(
            f"{what}: expected {n} numbers, got {type(values).__name__} ({e})"
        ) from None
    if r.ndim != 1 or r.shape[0] != n:
        raise ValueError(
            f"{what}: expected {n} scores (one per completion, shape ({n},)), got shape "
            f"{tuple(r.shape)}"
        )
    bad = (~torch.isfinite(r)).nonzero()
    if bad.numel():
        i = int(bad[0, 0])
        raise ValueError(
            f"{what}: returned {r[i].item()} for item {i} (prompt {prompts[i]!r:.60}, "
            f"completion {completions[i]!r:.60}); {bad.numel()} of {n} scores are not finite. "
            "A NaN or infinite reward must not reach the optimizer."
        )
    return r


class RewardPipeline:
    """Source -> shaping -> optional KL penalty.

    Args:
        source: a ``RewardModel``, an ``Ensemble`` (scored through ``score_members`` and the
            configured aggregator), a ``ProgrammaticReward``, or any callable
            ``f(prompts, completions) -> Tensor[B]`` (or a list of B floats).
        config: :class:`RewardPipelineConfig`.
        reference_sampler: ``prompts -> M completions each`` from the base policy; required
            for par / lsc / centered shaping and for ``standardize_members``.
        kl_penalty: a :class:`KLPenalty`, or None for no penalty.
        calibration_prompts: the prompts whose base-policy samples standardize the members
            (the first ``standardize_prompts`` are used); required for
            ``standardize_members``.
    """

    def __init__(
        self,
        source: Any,
        config: RewardPipelineConfig | None = None,
        *,
        reference_sampler: ReferenceSampler | None = None,
        kl_penalty: KLPenalty | None = None,
        calibration_prompts: Sequence[str] | None = None,
    ):
        self.source = source
        self.config = config or RewardPipelineConfig()
        self.name = source_name(source)
        self.is_ensemble = callable(getattr(source, "score_members", None))
        self.is_pairwise = callable(getattr(source, "preference_matrix", None))
        if self.is_pairwise:
            _check_pairwise_config(self.name, self.config)
        elif not self.is_ensemble and not (
            callable(getattr(source, "score", None)) or callable(source)
        ):
            raise ValueError(
                f"reward source {self.name!r}: expected a callable score(prompts, completions)"
            )
        self._aggregate = get_aggregator(
            self.config.aggregator, **self.config.resolved_aggregator_params()
        )
        self._shape = SHAPINGS[self.config.shaping]
        self._shaping_params = (
            SHAPINGS.entry(self.config.shaping)
            .validate_params(self.config.shaping_params)
            .model_dump()
        )
        if self.config.shaping_needs == "references" and reference_sampler is None:
            raise ValueError(
                f"shaping {self.config.shaping!r} needs a reference_sampler (M base-policy "
                "completions per prompt)"
            )
        if self.config.standardize_members and (
            reference_sampler is None or not calibration_prompts
        ):
            raise ValueError(
                "standardize_members needs a reference_sampler and calibration_prompts (the "
                "members are standardized on base-policy samples of those prompts)"
            )
        if self.config.shaping_needs in ("length_bias", "calibration") and (
            reference_sampler is None or not calibration_prompts
        ):
            what = {
                "length_bias": "the length bias is fitted on",
                "calibration": "the shaping reads the proxy's rewards of",
            }[self.config.shaping_needs]
            raise ValueError(
                f"shaping {self.config.shaping!r} needs a reference_sampler and "
                f"calibration_prompts ({what} base-policy samples of those prompts)"
            )
        self.reference_sampler = reference_sampler
        self.kl_penalty = kl_penalty
        self.calibration_prompts = list(calibration_prompts or [])[
            : self.config.standardize_prompts
        ]
        self.moments = shaping_fns.RunningMoments()
        self._references: dict[str, Tensor] = {}
        self._reference_completions: dict[str, list[str]] = {}
        self._calibration: Tensor | None = None
        self._calibration_samples: tuple[list[str], list[str]] | None = None
        self._calibration_rewards: Tensor | None = None
        self._length_fit: Any = None
        self.length_bias_report: Any = None
        """``core.length_bias.LengthBiasReport`` of the length_fit shaping's fit (else None)."""

    # -- the source -----------------------------------------------------------------------

    def _raw_members(self, prompts: list[str], completions: list[str]) -> Tensor:
        """Every member's checked score, unstandardized (a single source: M = 1). (M, B)"""
        n = len(prompts)
        if self.is_ensemble:
            members = self.source.score_members(prompts, completions)
            members = torch.as_tensor(members, dtype=torch.float32).detach().cpu()
            if members.ndim != 2 or members.shape[1] != n:
                raise ValueError(
                    f"reward source {self.name!r}: score_members returned shape "
                    f"{tuple(members.shape)}, expected (M, {n})"
                )
            for m in range(members.shape[0]):
                _checked(
                    members[m], n, f"reward source {self.name!r} member {m}", prompts, completions
                )
            return members
        fn = self.source.score if callable(getattr(self.source, "score", None)) else self.source
        r = _checked(
            fn(prompts, completions), n, f"reward source {self.name!r}", prompts, completions
        )
        return r.unsqueeze(0)

    def calibration_scores(self) -> Tensor:
        """Every member's raw scores on the base-policy samples of the calibration prompts
        (sampled and scored once). Shape: (M, N · reference_samples)"""
        if self._calibration is None:
            self._calibration = self._raw_members(*self.calibration_samples())
        return self._calibration

    def calibration_samples(self) -> tuple[list[str], list[str]]:
        """The base-policy samples of the calibration prompts, flat: (prompts, completions),
        each of length N · reference_samples (sampled once)."""
        if self._calibration_samples is None:
            refs = self.reference_sampler(self.calibration_prompts)
            flat_p = [p for p, cs in zip(self.calibration_prompts, refs, strict=True) for _ in cs]
            self._calibration_samples = (flat_p, [c for cs in refs for c in cs])
        return self._calibration_samples

    def calibration_rewards(self) -> Tensor:
        """The proxy reward (as ``score_source`` returns it: standardized and aggregated) of
        the base-policy samples of the calibration prompts, scored once. Shape: (N,)"""
        if self._calibration_rewards is None:
            self._calibration_rewards = self.score_source(*self.calibration_samples())[0]
        return self._calibration_rewards

    def length_bias(self, completions: Sequence[str]) -> Tensor:
        """FiMi-RM's fitted length bias f(ℓ) of each completion (``core.length_bias``), f
        fitted on first use to the proxy (as ``score_source`` returns it: standardized and
        aggregated) on the calibration samples. Shape: (B,)"""
        if self._length_fit is None:
            _, cal_c = self.calibration_samples()
            p = self._shaping_params
            self._length_fit, self.length_bias_report = fit_length_bias(
                completion_lengths(cal_c),
                self.calibration_rewards(),
                dim=p["dim"],
                hidden=p["hidden"],
                steps=p["fit_steps"],
                lr=p["fit_lr"],
            )
        with torch.no_grad():
            return self._length_fit(completion_lengths(completions))

    def score_source(
        self, prompts: Sequence[str], completions: Sequence[str]
    ) -> tuple[Tensor, Tensor | None]:
        """The proxy reward and, for an ensemble, every member's. Shapes: (B,), (M, B) | None.

        With ``standardize_members`` the members (or the single source) are standardized on
        the base policy's samples first. Pure but for the calibration scores, computed once
        (use it for evaluation).
        """
        prompts, completions = list(prompts), list(completions)
        n = len(prompts)
        if len(completions) != n:
            raise ValueError(
                f"prompts and completions: expected the same length, got {n} and {len(completions)}"
            )
        if self.is_pairwise:
            return self.win_rate_over_base(prompts, completions), None
        members = self._raw_members(prompts, completions)
        if self.config.standardize_members:
            members = standardize_members(members, self.calibration_scores())
        if not self.is_ensemble:
            return members[0], None
        r = _checked(
            self._aggregate(members),
            n,
            f"reward source {self.name!r} ({self.config.aggregator})",
            prompts,
            completions,
        )
        return r, members

    # -- a pairwise preference model -----------------------------------------------------

    def win_rate_over_base(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        """A pairwise source's P̂(y ≻ π0) = 1/M Σ_m P(y ≻ y0_m) of each completion against
        the M base-policy references of its prompt (module docstring). Shape: (B,)"""
        if self.reference_sampler is None:
            raise ValueError(
                f"reward source {self.name!r} is a pairwise preference model: its score of a "
                "completion is its win rate over base-policy samples, which needs a "
                "reference_sampler (the RL loop passes one)"
            )
        new = list(dict.fromkeys(p for p in prompts if p not in self._reference_completions))
        if new:
            refs = self.reference_sampler(new)
            for p, cs in zip(new, refs, strict=True):
                self._reference_completions[p] = list(cs)
        refs = [self._reference_completions[p] for p in prompts]
        m = len(refs[0]) if refs else 0
        if any(len(r) != m for r in refs) or (refs and m == 0):
            raise ValueError("reference_sampler: expected the same number (>= 1) for every prompt")
        pref = self.source.preference(
            [p for p in prompts for _ in range(m)],
            [c for c in completions for _ in range(m)],
            [y for r in refs for y in r],
        )
        pref = torch.as_tensor(pref, dtype=torch.float64).reshape(len(prompts), 1, m)
        r = win_rate_from_preferences(pref, self_play=False)
        return _checked(r, len(prompts), f"reward source {self.name!r}", prompts, completions)

    def self_play_payoff(
        self, prompts: Sequence[str], completions: Sequence[str], group_size: int | None
    ) -> Tensor:
        """A pairwise source's P̂(y_i ≻ π) = 1/(G − 1) Σ_{j ≠ i} P(y_i ≻ y_j) over the other
        completions of its group (G contiguous rows per prompt). Shape: (B·G,)"""
        if group_size is None:
            raise ValueError(
                f"group_size: reward source {self.name!r} is a pairwise preference model; the "
                "reward of a completion in training is its preference over the other "
                "completions of its group, so the batch's group size is needed"
            )
        G, n = int(group_size), len(prompts)
        if G < 2 or n % G:
            raise ValueError(f"group_size: expected G >= 2 dividing the {n} rows, got {G}")
        heads = list(prompts[::G])
        if any(prompts[b * G + i] != heads[b] for b in range(n // G) for i in range(G)):
            raise ValueError("prompts: expected G contiguous rows of each prompt (its group)")
        pref = self.source.preference_matrix(heads, list(completions), G)
        r = win_rate_from_preferences(torch.as_tensor(pref, dtype=torch.float64), self_play=True)
        return _checked(r, n, f"reward source {self.name!r}", prompts, completions)

    # -- shaping --------------------------------------------------------------------------

    def reference_rewards(self, prompts: Sequence[str]) -> Tensor:
        """The M cached reference rewards of each prompt (sampled and scored on first use).

        Each prompt's references are scored in their own call, so a score never depends on
        which other prompts were new in the same batch. Shape: (B, M)
        """
        if self.reference_sampler is None:
            raise ValueError("reference rewards need a reference_sampler")
        new = list(dict.fromkeys(p for p in prompts if p not in self._references))
        if new:
            refs = self.reference_sampler(new)
            m = self.config.reference_samples
            if len(refs) != len(new) or any(len(c) != m for c in refs):
                raise ValueError(
                    f"reference_sampler: expected {m} completions for each of {len(new)} prompts"
                )
            for p, cs in zip(new, refs, strict=True):
                self._references[p], _ = self.score_source([p] * m, cs)
        return torch.stack([self._references[p] for p in prompts])

    def step_scores(
        self, prompts: Sequence[str], completions: Sequence[str], r_proxy: Tensor
    ) -> tuple[Tensor, Tensor, list[list[int]]]:
        """The proxy's score of every sentence prefix of each completion (the last prefix is
        the completion: its score is ``r_proxy``), left-aligned with a mask, and the
        sentences' end offsets. Shapes: (B, K), (B, K), B lists."""
        ends = [sentence_ends(c) for c in completions]
        flat_p, flat_c = [], []
        for p, c, e in zip(prompts, completions, ends, strict=True):
            flat_p += [p] * (len(e) - 1)
            flat_c += [c[:k] for k in e[:-1]]
        inner = self.score_source(flat_p, flat_c)[0] if flat_c else torch.zeros(0)
        width = max(len(e) for e in ends)
        r_steps = torch.zeros(len(completions), width, dtype=r_proxy.dtype)
        mask = torch.zeros(len(completions), width, dtype=torch.bool)
        i = 0
        for b, e in enumerate(ends):
            k = len(e) - 1
            r_steps[b, :k] = inner[i : i + k].to(r_proxy.dtype)
            r_steps[b, k] = r_proxy[b]
            mask[b, : k + 1] = True
            i += k
        return r_steps, mask, ends

    def shape(
        self, prompts: Sequence[str], r: Tensor, completions: Sequence[str] | None = None
    ) -> Tensor:
        """Apply the configured shaping (updating running statistics). Shape: (B,) -> (B,).

        Step-level shaping needs the ``completions``."""
        return self._shape_with_steps(prompts, r, completions)[0]

    def _shape_with_steps(
        self, prompts: Sequence[str], r: Tensor, completions: Sequence[str] | None
    ) -> tuple[Tensor, StepRewards | None]:
        needs = self.config.shaping_needs
        context = ShapingContext()
        if needs == "steps":
            if completions is None:
                raise ValueError(f"shaping {self.config.shaping!r} needs the completions")
            r_steps, mask, ends = self.step_scores(prompts, completions, r)
            context = ShapingContext(r_steps=r_steps, step_mask=mask)
            step_fn = SHAPINGS.entry(self.config.shaping).meta["step_rewards"]
            steps = StepRewards(r_steps, step_fn(r_steps, mask, **self._shaping_params), mask, ends)
            return self._shape(r, context, **self._shaping_params), steps
        if needs == "references":
            context = ShapingContext(r_ref=self.reference_rewards(prompts))
        elif needs == "length_bias":
            if completions is None:
                raise ValueError(f"shaping {self.config.shaping!r} needs the completions")
            context = ShapingContext(length_bias=self.length_bias(completions))
        elif needs == "calibration":
            context = ShapingContext(r_base=self.calibration_rewards())
        elif needs == "moments":
            # As the PAR reference code: update the running statistics with the batch first.
            self.moments = self.moments.update(r)
            context = ShapingContext(moments=self.moments)
        return self._shape(r, context, **self._shaping_params), None

    # -- all stages -----------------------------------------------------------------------

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        *,
        kl: Tensor | None = None,
        group_size: int | None = None,
    ) -> PipelineOutput:
        """Score, shape and penalize one batch.

        Args:
            prompts: Shape: (B,)
            completions: Shape: (B,)
            kl: sequence KL(π ‖ π_ref) of each completion in nats (k1 on the sampled
                tokens), required when there is a KL penalty. Shape: (B,)
            group_size: G, completions per prompt in contiguous groups; a pairwise source's
                reward is the self-play payoff over the group (required for one; ignored
                otherwise).
        """
        if self.is_pairwise:
            r_proxy, r_members = self.self_play_payoff(prompts, completions, group_size), None
        else:
            r_proxy, r_members = self.score_source(prompts, completions)
        r_shaped, steps = self._shape_with_steps(prompts, r_proxy, completions)
        _checked(
            r_shaped, len(prompts), f"shaped reward ({self.config.shaping})", prompts, completions
        )
        coef = 0.0
        r_final = r_shaped
        if self.kl_penalty is not None:
            if kl is None:
                raise ValueError("kl: required when the pipeline has a KL penalty")
            coef = self.kl_penalty.coef
            r_final = self.kl_penalty.apply(
                r_shaped, torch.as_tensor(kl).detach().cpu().to(r_shaped.dtype)
            )
        return PipelineOutput(r_proxy, r_members, r_shaped, r_final, coef, steps)

    def state_dict(self) -> dict[str, Any]:
        """The state a resumed run needs (running moments, the adaptive β), JSON-able."""
        state: dict[str, Any] = {"moments": dataclasses.asdict(self.moments)}
        if self.kl_penalty is not None:
            state["kl_penalty"] = self.kl_penalty.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.moments = shaping_fns.RunningMoments(**state["moments"])
        if self.kl_penalty is not None:
            self.kl_penalty.load_state_dict(state["kl_penalty"])

    def __repr__(self) -> str:
        agg = f", aggregator={self.config.aggregator}" if self.is_ensemble else ""
        return f"RewardPipeline({self.name!r}{agg}, shaping={self.config.shaping})"
