"""Reward shaping: transform a proxy reward before it is optimized.

Fu et al. 2025, "Reward shaping to mitigate reward hacking in RLHF" (PAR), arXiv 2502.18770;
reference code PorUna-byte/PAR, ``trainers/reward_shaper.py``. ``par`` is their method; the
others are the baselines they compare against. Besides them: ``running_center`` (reward
centering, Naik et al. 2024) and the step-level ``step_clip`` / ``step_delta`` of Gao et al.
2024 (the formulas in :mod:`goodhartlab.core.step_rewards`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from goodhartlab.core.length_bias import FIMI_PAPER
from goodhartlab.core.step_rewards import clip_step_rewards, delta_step_rewards
from goodhartlab.registry import SHAPINGS, params_from_signature

__all__ = [
    "SHAPINGS",
    "RunningMoments",
    "ShapingContext",
    "base_quantile",
    "ceil",
    "centered",
    "clip_to_band",
    "log_sigmoid_centered",
    "meanstd",
    "minmax",
    "par",
    "running_center",
]

TensorLike = torch.Tensor | np.ndarray | float


def _as_rewards(r: TensorLike, name: str = "r") -> torch.Tensor:
    r = torch.as_tensor(r)
    if r.ndim != 1:
        raise ValueError(f"{name} must have shape (B,); got {tuple(r.shape)}")
    if not r.is_floating_point():
        r = r.to(torch.float64)
    return r


def _as_references(r: torch.Tensor, r_ref: TensorLike) -> torch.Tensor:
    r_ref = torch.as_tensor(r_ref)
    if r_ref.ndim != 2:
        raise ValueError(f"r_ref must have shape (B, M); got {tuple(r_ref.shape)}")
    if r_ref.shape[0] != r.shape[0]:
        raise ValueError(
            f"r_ref must have one row per reward: r has B = {r.shape[0]}, "
            f"r_ref has shape {tuple(r_ref.shape)}"
        )
    if r_ref.shape[1] == 0:
        raise ValueError("r_ref has no reference rewards (M = 0)")
    if not r_ref.is_floating_point():
        r_ref = r_ref.to(torch.float64)
    return r_ref


def par(r: TensorLike, r_ref: TensorLike) -> torch.Tensor:
    """Preference-as-reward (PAR): mean sigmoid of the reward relative to reference rewards.

        r_RL = (1/M) Σ_{m=1..M} σ(r − r_ref^m)

    with r_ref^m the proxy reward of the m-th reference response (sampled from the SFT
    policy) to the same prompt (Fu et al. 2025, arXiv 2502.18770; M = 10 by default there,
    M = 1 already works). Bounded in (0, 1), increasing in r, and a function of the centered
    reward, the three properties the paper asks of a shaped reward.

    Args:
        r: proxy reward of each response. Shape: (B,).
        r_ref: proxy rewards of M reference responses to the same prompt. Shape: (B, M).

    Returns:
        Shape: (B,).
    """
    r = _as_rewards(r)
    r_ref = _as_references(r, r_ref)
    return torch.sigmoid(r.unsqueeze(1) - r_ref).mean(dim=1)


def centered(r: TensorLike, r_ref: TensorLike) -> torch.Tensor:
    """Reward minus the mean reference reward: r − (1/M) Σ_m r_ref^m.

    (Baseline "centered" in Fu et al. 2025, arXiv 2502.18770.)

    Args:
        r: proxy reward of each response. Shape: (B,).
        r_ref: proxy rewards of M reference responses to the same prompt. Shape: (B, M).

    Returns:
        Shape: (B,).
    """
    r = _as_rewards(r)
    r_ref = _as_references(r, r_ref)
    return r - r_ref.mean(dim=1)


def log_sigmoid_centered(r: TensorLike, r_ref: TensorLike, quantile: float = 0.85) -> torch.Tensor:
    """Log-sigmoid centered (LSC) reward: log σ(r − q), q a quantile of the reference rewards.

        q = μ_ref + Φ⁻¹(quantile) · σ_ref,    r_RL = log σ(r − q)

    q is the ``quantile`` of a normal distribution fitted to each prompt's M reference
    rewards (baseline "LSC" in Fu et al. 2025, arXiv 2502.18770, from Wang et al. 2024,
    "Transforming and combining rewards for aligning large language models",
    arXiv 2402.00742). The fit is maximum likelihood: σ_ref is the population standard
    deviation (ddof = 0). The reference code adds 1e-5 to σ; we do not.

    Args:
        r: proxy reward of each response. Shape: (B,).
        r_ref: proxy rewards of M reference responses to the same prompt. Shape: (B, M).
        quantile: level of the quantile, in (0, 1).

    Returns:
        Shape: (B,), ≤ 0.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1); got {quantile!r}")
    r = _as_rewards(r)
    r_ref = _as_references(r, r_ref)
    z = torch.special.ndtri(torch.tensor(quantile, dtype=torch.float64)).to(r.dtype)
    q = r_ref.mean(dim=1) + z * r_ref.std(dim=1, correction=0)
    return torch.nn.functional.logsigmoid(r - q)


def ceil(r: TensorLike, c: TensorLike) -> torch.Tensor:
    """Reward capped from above: min(r, c).

    (Baseline "ceil" in Fu et al. 2025, arXiv 2502.18770.)

    Args:
        r: proxy reward. Shape: (B,).
        c: the cap. Shape: () or (B,).

    Returns:
        Shape: (B,).
    """
    r = _as_rewards(r)
    c = torch.as_tensor(c, dtype=r.dtype)
    if c.ndim > 1 or (c.ndim == 1 and c.shape != r.shape):
        raise ValueError(
            f"c must be a scalar or have shape (B,) = {tuple(r.shape)}; got {tuple(c.shape)}"
        )
    return torch.minimum(r, c)


def base_quantile(r_base: TensorLike, q: float) -> torch.Tensor:
    """The q-quantile of the proxy's rewards on base-policy samples: a cap for ``ceil``
    expressed in the proxy's own distribution, c = Q_q(r_base) (linear interpolation between
    order statistics, ``torch.quantile``'s default).

    Fu et al. 2025 (arXiv 2502.18770) cap their reward model at absolute values (3, 4 and 5,
    ``--reward_ceil`` in PorUna-byte/PAR); an absolute value means nothing across proxies, so
    the cap is set at a quantile of the base policy's rewards: the policy earns nothing for
    pushing the proxy past where the top (1 − q) of base samples already are.

    Args:
        r_base: proxy rewards of base-policy samples. Shape: (N,), N ≥ 1.
        q: the quantile, in (0, 1].

    Returns:
        Shape: ().
    """
    r_base = _as_rewards(r_base, "r_base").reshape(-1)
    if r_base.numel() == 0:
        raise ValueError("r_base: expected at least one base-policy reward")
    if not 0 < q <= 1:
        raise ValueError(f"q: expected a quantile in (0, 1], got {q}")
    return torch.quantile(r_base.double(), q).to(r_base.dtype)


def clip_to_band(r: TensorLike, mu: TensorLike, sigma: TensorLike) -> torch.Tensor:
    """Reward clipped to one standard deviation around a mean: clip(r, μ − σ, μ + σ).

    (Baseline "clip" in Fu et al. 2025, arXiv 2502.18770, where μ and σ are running
    statistics of the reward: pass ``state.mean`` and ``state.std`` of a ``RunningMoments``.)

    Args:
        r: proxy reward. Shape: (B,).
        mu: centre μ. Shape: () or (B,).
        sigma: half-width σ ≥ 0. Shape: () or (B,).

    Returns:
        Shape: (B,).
    """
    r = _as_rewards(r)
    mu = torch.as_tensor(mu, dtype=r.dtype)
    sigma = torch.as_tensor(sigma, dtype=r.dtype)
    for name, v in (("mu", mu), ("sigma", sigma)):
        if v.ndim > 1 or (v.ndim == 1 and v.shape != r.shape):
            raise ValueError(
                f"{name} must be a scalar or have shape (B,) = {tuple(r.shape)}; got {tuple(v.shape)}"
            )
    if bool((sigma < 0).any()):
        raise ValueError(f"sigma must be ≥ 0; got {sigma.tolist()}")
    return torch.clamp(r, mu - sigma, mu + sigma)


def minmax(r: TensorLike, lo: TensorLike, hi: TensorLike) -> torch.Tensor:
    """Reward rescaled so that ``lo`` maps to 0 and ``hi`` to 1: (r − lo) / (hi − lo).

    (Baseline "minmax" in Fu et al. 2025, arXiv 2502.18770, with lo, hi the running minimum
    and maximum: ``state.min`` and ``state.max`` of a ``RunningMoments``.) Not clipped:
    rewards outside [lo, hi] map outside [0, 1].

    Args:
        r: proxy reward. Shape: (B,).
        lo: the value mapped to 0. Shape: () or (B,).
        hi: the value mapped to 1, > lo. Shape: () or (B,).

    Returns:
        Shape: (B,).
    """
    r = _as_rewards(r)
    lo = torch.as_tensor(lo, dtype=r.dtype)
    hi = torch.as_tensor(hi, dtype=r.dtype)
    for name, v in (("lo", lo), ("hi", hi)):
        if v.ndim > 1 or (v.ndim == 1 and v.shape != r.shape):
            raise ValueError(
                f"{name} must be a scalar or have shape (B,) = {tuple(r.shape)}; got {tuple(v.shape)}"
            )
    if not bool((hi > lo).all()):
        raise ValueError(f"hi must be > lo; got lo={lo.tolist()}, hi={hi.tolist()}")
    return (r - lo) / (hi - lo)


@dataclass(frozen=True)
class RunningMoments:
    """Running count, mean, sum of squared deviations (M2), minimum and maximum of rewards.

    Immutable: ``update`` returns a new state, so the caller owns it (no hidden globals).
    Batches are merged with the parallel update of Chan, Golub, LeVeque 1979 ("Updating
    formulae and a pairwise algorithm for computing sample variances"):

        δ = μ_b − μ,  n' = n + n_b,  μ' = μ + δ n_b / n',  M2' = M2 + M2_b + δ² n n_b / n'
    """

    count: int = 0
    """Number of rewards seen."""
    mean: float = 0.0
    """Their mean (0 when count = 0)."""
    m2: float = 0.0
    """Σ (r − mean)² over the rewards seen."""
    min: float = math.inf
    """Smallest reward seen (+inf when count = 0)."""
    max: float = -math.inf
    """Largest reward seen (−inf when count = 0)."""

    @property
    def var(self) -> float:
        """Population variance M2 / count (0 when count < 2)."""
        return self.m2 / self.count if self.count > 1 else 0.0

    @property
    def std(self) -> float:
        """Population standard deviation."""
        return math.sqrt(self.var)

    def update(self, r: TensorLike) -> RunningMoments:
        """The state after also seeing the batch ``r``. Shape of ``r``: (B,)."""
        r = _as_rewards(r).to(torch.float64)
        if r.numel() == 0:
            return self
        if bool(torch.isnan(r).any()):
            raise ValueError("r contains NaN")
        n_b = r.numel()
        mean_b = float(r.mean())
        m2_b = float((r - mean_b).square().sum())
        n_new = self.count + n_b
        delta = mean_b - self.mean
        return RunningMoments(
            count=n_new,
            mean=self.mean + delta * n_b / n_new,
            m2=self.m2 + m2_b + delta * delta * self.count * n_b / n_new,
            min=min(self.min, float(r.min())),
            max=max(self.max, float(r.max())),
        )


def running_center(r: TensorLike, state: RunningMoments) -> torch.Tensor:
    """Reward centering: the reward minus the running mean of every reward seen, r − r̄.

        r̄_t = (1/n_t) Σ_{i ≤ n_t} r_i,    r_RL = r − r̄_t

    Naik, Wan, Tomar, Sutton 2024, "Reward centering", arXiv 2405.09999 (there r̄ is an
    exponential moving average with step size β; ours is the β_t = 1/n_t special case, the
    mean of everything seen, updated with the batch first as ``meanstd``). This is the RL-side
    counterpart of TRL's ``center_rewards_coefficient``, which is a reward-model training term
    (c · (r_c + r_r)², Eisenstein et al. 2023; ``core.losses.bradley_terry_loss``). Under GRPO
    and RLOO it changes nothing: the same r̄ is subtracted from every row of a batch and the
    group baseline removes it; it acts through PPO's value model.

    Args:
        r: proxy reward. Shape: (B,).
        state: running statistics, with count ≥ 1.

    Returns:
        Shape: (B,).
    """
    r = _as_rewards(r)
    if not isinstance(state, RunningMoments):
        raise ValueError(f"state must be a RunningMoments; got {type(state).__name__}")
    if state.count == 0:
        raise ValueError("state has seen no rewards (count = 0); call state.update(r) first")
    return r - state.mean


def meanstd(r: TensorLike, state: RunningMoments) -> torch.Tensor:
    """Reward standardized with running statistics: (r − μ) / σ.

    (Baseline "meanstd" in Fu et al. 2025, arXiv 2502.18770.) As in the reference code,
    update the state with the batch first, then standardize:
    ``state = state.update(r); r_rl = meanstd(r, state)``; and σ = 0 (fewer than two
    rewards seen, or all equal) divides by 1 instead.

    Args:
        r: proxy reward. Shape: (B,).
        state: running statistics, with count ≥ 1.

    Returns:
        Shape: (B,).
    """
    r = _as_rewards(r)
    if not isinstance(state, RunningMoments):
        raise ValueError(f"state must be a RunningMoments; got {type(state).__name__}")
    if state.count == 0:
        raise ValueError("state has seen no rewards (count = 0); call state.update(r) first")
    std = state.std
    return (r - state.mean) / (std if std > 0 else 1.0)


# --------------------------------------------------------------------------------------
# The registry: each shaping as f(r, context, **params)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapingContext:
    """What a shaping may need besides the batch's rewards (entry meta ``needs``)."""

    r_ref: torch.Tensor | None = None
    """Rewards of M base-policy responses to each prompt (``needs="references"``). Shape: (B, M)."""
    moments: RunningMoments | None = None
    """Running statistics, already updated with this batch (``needs="moments"``)."""
    r_steps: torch.Tensor | None = None
    """The proxy's score of every step prefix of each completion (``needs="steps"``).
    Shape: (B, K)."""
    step_mask: torch.Tensor | None = None
    """1 on each row's steps (left-aligned), 0 on padding (``needs="steps"``). Shape: (B, K)."""
    r_base: torch.Tensor | None = None
    """The proxy's rewards on the base-policy samples of the calibration prompts, scored once
    (``needs="calibration"``). Shape: (N,)."""
    length_bias: torch.Tensor | None = None
    """The fitted length bias f(ℓ) of each completion (``needs="length_bias"``: FiMi-RM's fit
    on base-policy samples, ``core.length_bias.fit_length_bias``). Shape: (B,)."""


PAR_PAPER = "Fu et al. 2025, arXiv 2502.18770"


@SHAPINGS.register("none", description="No shaping: the proxy reward as it is.")
def _none(r: TensorLike, context: ShapingContext) -> torch.Tensor:
    return _as_rewards(r)


@SHAPINGS.register("par", paper=PAR_PAPER, needs="references")
def _par(r: TensorLike, context: ShapingContext) -> torch.Tensor:
    """PAR: mean σ(r − r_ref) over M reference responses."""
    return par(r, context.r_ref)


@SHAPINGS.register("centered", paper=PAR_PAPER, needs="references")
def _centered(r: TensorLike, context: ShapingContext) -> torch.Tensor:
    """r − mean r_ref over M reference responses."""
    return centered(r, context.r_ref)


@SHAPINGS.register(
    "lsc",
    paper=PAR_PAPER,
    needs="references",
    params=params_from_signature(
        log_sigmoid_centered, {"quantile": "q of the reference quantile"}, "LSCParams"
    ),
)
def _lsc(r: TensorLike, context: ShapingContext, quantile: float) -> torch.Tensor:
    """log σ(r − q-quantile of r_ref)."""
    return log_sigmoid_centered(r, context.r_ref, quantile)


class CeilParams(BaseModel):
    """The parameter of ceil shaping."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    c: float = Field(..., allow_inf_nan=False, description="the cap (required), e.g. c: 2.0")


@SHAPINGS.register("ceil", paper=PAR_PAPER, params=CeilParams)
def _ceil(r: TensorLike, context: ShapingContext, c: float) -> torch.Tensor:
    """min(r, c): the reward capped."""
    return ceil(r, c)


class CeilBaseParams(BaseModel):
    """The parameter of ceil_base shaping."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    quantile: float = Field(
        ...,
        gt=0,
        le=1,
        description="q (required): the cap is the q-quantile of the proxy on base-policy "
        "samples, e.g. quantile: 0.9",
    )


@SHAPINGS.register(
    "ceil_base",
    paper=PAR_PAPER,
    needs="calibration",
    params=CeilBaseParams,
    description="min(r, Q_q(r_base)): ceil with its cap at the q-quantile of the proxy on "
    "base-policy samples of the calibration prompts",
)
def _ceil_base(r: TensorLike, context: ShapingContext, quantile: float) -> torch.Tensor:
    return ceil(r, base_quantile(context.r_base, quantile))


@SHAPINGS.register("clip", paper=PAR_PAPER, needs="moments")
def _clip(r: TensorLike, context: ShapingContext) -> torch.Tensor:
    """Clipped to the running band μ ± σ."""
    return clip_to_band(r, context.moments.mean, context.moments.std)


@SHAPINGS.register("meanstd", paper=PAR_PAPER, needs="moments")
def _meanstd(r: TensorLike, context: ShapingContext) -> torch.Tensor:
    """(r − μ) / σ with running statistics."""
    return meanstd(r, context.moments)


@SHAPINGS.register("minmax", paper=PAR_PAPER, needs="moments")
def _minmax(r: TensorLike, context: ShapingContext) -> torch.Tensor:
    """Running min / max mapped to [0, 1] (r − min while max = min)."""
    lo, hi = context.moments.min, context.moments.max
    return minmax(r, lo, hi) if hi > lo else _as_rewards(r) - lo


@SHAPINGS.register(
    "running_center",
    paper="Naik et al. 2024, arXiv 2405.09999",
    needs="moments",
    description="r − running mean of all rewards seen (reward centering; a no-op under GRPO / "
    "RLOO, whose group baseline removes it)",
)
def _running_center(r: TensorLike, context: ShapingContext) -> torch.Tensor:
    return running_center(r, context.moments)


GAO_PAPER = "Gao et al. 2024, arXiv 2410.15115"


class StepClipParams(BaseModel):
    """The parameter of step_clip shaping."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    eta: float = Field(
        0.0,
        allow_inf_nan=False,
        description="η: a step prefix scored above η earns 0, one below it r − η (the proxy's "
        "units; with standardize: true, base-policy standard deviations)",
    )


@SHAPINGS.register(
    "step_clip",
    paper=GAO_PAPER,
    needs="steps",
    params=StepClipParams,
    step_rewards=clip_step_rewards,
    description="Σ_k min(r(prefix_k) − η, 0) over sentence prefixes (Clip; return ≤ 0)",
)
def _step_clip(r: TensorLike, context: ShapingContext, eta: float) -> torch.Tensor:
    return clip_step_rewards(context.r_steps, context.step_mask, eta).sum(dim=1)


@SHAPINGS.register(
    "step_delta",
    paper=GAO_PAPER,
    needs="steps",
    step_rewards=delta_step_rewards,
    description="r(prefix_k) − r(prefix_k+1) per sentence, r of the whole at the end (Delta; "
    "the return from step k is r(prefix_k), so GRPO / RLOO optimize the first sentence's score)",
)
def _step_delta(r: TensorLike, context: ShapingContext) -> torch.Tensor:
    return delta_step_rewards(context.r_steps, context.step_mask).sum(dim=1)


class LengthFitParams(BaseModel):
    """The fitting model of length_fit shaping (FiMi-RM, ``core.length_bias``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    dim: int = Field(16, ge=2, multiple_of=2, description="d of the sinusoidal length encoding")
    hidden: int = Field(32, ge=1, description="width of the fitting model's residual blocks")
    fit_steps: int = Field(500, ge=1, description="full-batch Adam steps of the fit")
    fit_lr: float = Field(1e-2, gt=0, allow_inf_nan=False, description="Adam's learning rate")


@SHAPINGS.register(
    "length_fit",
    paper=FIMI_PAPER,
    needs="length_bias",
    params=LengthFitParams,
    description="r − f(ℓ): the proxy minus its length bias f, fitted once on base-policy "
    "samples of the calibration prompts (FiMi-RM; ℓ in words)",
)
def _length_fit(
    r: TensorLike, context: ShapingContext, dim: int, hidden: int, fit_steps: int, fit_lr: float
) -> torch.Tensor:
    r = _as_rewards(r)
    bias = context.length_bias
    if bias is None or bias.shape != r.shape:
        raise ValueError(
            f"length_fit: expected the length bias of each completion, shape {tuple(r.shape)}; "
            f"got {None if bias is None else tuple(bias.shape)}"
        )
    return r - bias.to(r.dtype)
