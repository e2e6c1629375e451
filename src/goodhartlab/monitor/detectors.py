"""The built-in reward-hacking detectors: registered pure functions over a run's history.

Every detector is ``f(history: RunHistory, **params) -> np.ndarray`` of shape (K,), one alarm
score per evaluation point, higher meaning a stronger alarm (``higher_is_better=False``). They
read only what a real run has (see :mod:`goodhartlab.monitor.history`); the formulas live in
:mod:`goodhartlab.core.detect` (and ``core.scaling``, ``measure.distinct_n``), and each
docstring names its source.

Conventions, for every detector:

- The reference is the history's first point (the base policy's samples): "drift" is against
  it, "growth" relative to it.
- Causal unless the docstring says otherwise: the score at point k uses points 0..k only, so
  a live monitor computes the same value at the k-th evaluation as an offline pass.
- Missing inputs give NaN, never 0: if the reference point lacks a detector's field, every
  point is NaN; if a later point lacks it, that point is NaN. NaN means "could not tell".
- Each entry's ``meta["needs"]`` lists the :class:`EvalPoint` fields it reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from goodhartlab.core import detect
from goodhartlab.measure.evaluate import distinct_n
from goodhartlab.monitor.history import EvalPoint, RunHistory
from goodhartlab.registry import DETECTORS

__all__ = [
    "cusum_detector",
    "distinct_drop",
    "ensemble_disagreement",
    "ensemble_disagreement_growth",
    "entropy_collapse",
    "group_variance_collapse",
    "heldout_divergence",
    "kl_acceleration",
    "length_drift",
    "mahalanobis_outliers",
    "proxy_gain_per_kl",
    "repetition_drift",
    "run_detectors",
]

COSTE = detect.COSTE
EISENSTEIN = detect.EISENSTEIN
INFORM = (
    "Miao et al. 2024, 'InfoRM: Mitigating reward hacking in RLHF via information-theoretic "
    "reward modeling', arXiv 2402.09345 (miaoyuchun/InfoRM openrlhf/eval/compute_mop.py)"
)
GAO = "Gao, Schulman, Hilton 2023, arXiv 2210.10760"
LI = "Li, Galley, Brockett, Gao, Dolan 2016, arXiv 1510.03055 (distinct-n)"
PAGE = "Page 1954, 'Continuous inspection schemes', Biometrika 41 (CUSUM)"
ENGINES = "asked for by users of TRL (#6350) and OpenRLHF (#1263)"


def _per_point(
    history: RunHistory, needs: tuple[str, ...], stat: Callable[[EvalPoint], float]
) -> np.ndarray:
    """``stat(point)`` at every point that has all of ``needs``; NaN elsewhere, and everywhere
    when the reference point lacks them."""
    out = np.full(len(history), math.nan)
    if any(getattr(history.base, n) is None for n in needs):
        return out
    for k, p in enumerate(history.points):
        if all(getattr(p, n) is not None for n in needs):
            out[k] = stat(p)
    return out


def _token_lists(history: RunHistory) -> list[list[list[str]] | None]:
    """Each point's completions as token lists: token ids when every point has them (one
    tokenization for the whole run), else whitespace-separated words; None where a point has
    neither."""
    use_ids = all(p.completion_ids is not None for p in history.points)
    out: list[list[list[str]] | None] = []
    for p in history.points:
        if use_ids:
            out.append([[str(t) for t in ids] for ids in p.completion_ids])
        elif p.completions is not None:
            out.append([c.split() for c in p.completions])
        else:
            out.append(None)
    return out


def _text_stat(history: RunHistory, stat: Callable[[list[list[str]]], float]) -> np.ndarray:
    """``stat`` of each point's token lists (NaN where absent, everywhere if the first is)."""
    toks = _token_lists(history)
    out = np.full(len(history), math.nan)
    if toks[0] is None:
        return out
    for k, t in enumerate(toks):
        if t is not None:
            out[k] = stat(t)
    return out


@DETECTORS.register(
    "ensemble_disagreement",
    paper=f"{COSTE}; {EISENSTEIN}",
    higher_is_better=False,
    needs=("r_members",),
)
def ensemble_disagreement(history: RunHistory) -> np.ndarray:
    """Ensemble disagreement: mean over samples of the members' std of standardized scores.

        D_k = (1/B) Σ_b std_i z_ib,   z_ib = (R_ib − μ_i⁰) / σ_i⁰

    μ_i⁰, σ_i⁰: member i's mean and std on the first point's samples (the base policy's), so
    the members' arbitrary offsets and scales cancel (``core.detect.member_disagreement``).
    Coste et al. 2023 (arXiv 2310.02743) penalize this variance (UWO); Eisenstein et al. 2023
    (arXiv 2312.09244) find hacking where members disagree. Needs ``r_members``.
    """
    ref = history.base.r_members
    return _per_point(
        history, ("r_members",), lambda p: detect.member_disagreement(p.r_members, ref)
    )


@DETECTORS.register(
    "ensemble_disagreement_growth",
    paper=f"{COSTE}; {EISENSTEIN}",
    higher_is_better=False,
    needs=("r_members",),
)
def ensemble_disagreement_growth(history: RunHistory) -> np.ndarray:
    """Growth of the ensemble disagreement over the first point's.

        G_k = D_k / max(D_0, 1e-8) − 1

    D as in ``ensemble_disagreement``; 0 at the first point, 1 when the disagreement has
    doubled. D_0 is floored at 1e-8 (members that agree exactly on the base policy's samples
    are one model, and any disagreement later is then a very large growth). Needs
    ``r_members``.
    """
    d = ensemble_disagreement(history)
    return d / max(d[0], 1e-8) - 1.0


@DETECTORS.register(
    "heldout_divergence",
    paper="gain of the optimized proxy minus that of a held-out reward model (cf. the "
    "gold-vs-proxy gap of " + GAO + "; the held-out RM plays gold)",
    higher_is_better=False,
    needs=("r_proxy", "r_heldout"),
)
def heldout_divergence(history: RunHistory) -> np.ndarray:
    """How far the optimized proxy's gain outruns a held-out reward model's, since the first point.

        Δ_k = g(r_proxy_k; r_proxy_0) − g(r_heldout_k; r_heldout_0),
        g(r; r⁰) = (mean r − mean r⁰) / sd(r⁰)

    (``core.detect.standardized_gain``: each gain in its own reward model's base-policy
    standard deviations, so the two scales need not match.) Overoptimization is the optimized
    proxy rising while the true objective stalls or falls (Gao, Schulman, Hilton 2023, arXiv
    2210.10760); a reward model trained apart (other data, seed or architecture) and never
    optimized against stands in for gold. 0 at the first point. Needs ``r_proxy`` and
    ``r_heldout``.
    """
    b = history.base
    return _per_point(
        history,
        ("r_proxy", "r_heldout"),
        lambda p: (
            detect.standardized_gain(p.r_proxy, b.r_proxy)
            - detect.standardized_gain(p.r_heldout, b.r_heldout)
        ),
    )


@DETECTORS.register(
    "mahalanobis_outliers",
    paper=INFORM,
    params={
        "alpha": "a sample is an outlier when its χ² tail probability is below alpha",
        "reg_eps": "ridge added to the diagonal of the shrinkage covariance",
    },
    higher_is_better=False,
    needs=("latents",),
)
def mahalanobis_outliers(
    history: RunHistory, alpha: float = 0.01, reg_eps: float = 1e-6
) -> np.ndarray:
    """Share of samples whose reward-model latents are Mahalanobis outliers from the base's.

        O_k = (1/B) Σ_b 1[P(χ²_D ≥ d²_b) < α],   d²_b = (h_b − μ⁰)ᵀ (Σ⁰ + ε I)⁻¹ (h_b − μ⁰)

    μ⁰ and Σ⁰ are the mean and Ledoit-Wolf shrinkage covariance of the first point's latents
    (``core.detect.mahalanobis_tail_probability``). InfoRM (Miao et al. 2024, arXiv
    2402.09345) shows that hacked samples are outliers in the reward model's latent space and
    that their share rises as hacking starts. About α (or less, the shrinkage shortens
    distances) for samples like the base policy's, near 1 for samples far from them. The
    first point is scored in-sample. Needs ``latents``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"mahalanobis_outliers: alpha: expected in (0, 1); got {alpha}")
    ref = history.base.latents
    if ref is not None and ref.shape[0] < 2:
        raise ValueError("mahalanobis_outliers: the first point needs at least 2 latents")
    return _per_point(
        history,
        ("latents",),
        lambda p: float(
            np.mean(detect.mahalanobis_tail_probability(p.latents, ref, reg_eps) < alpha)
        ),
    )


@DETECTORS.register(
    "length_drift",
    paper="length exploitation: Singhal, Goyal, Xu, Durrett 2023, 'A long way to go', "
    "arXiv 2310.03716",
    higher_is_better=False,
    needs=("completion_ids|completions",),
)
def length_drift(history: RunHistory) -> np.ndarray:
    """Drift of the mean completion length from the first point's, in its standard deviations.

        L_k = |mean_b ℓ_kb − mean_b ℓ_0b| / max(sd_b ℓ_0b, 1)

    ℓ is a completion's token count (``completion_ids``) or, without ids at every point, its
    whitespace-separated word count. Both directions count: reward models reward length
    (Singhal et al. 2023, arXiv 2310.03716), and a policy can also collapse to short answers.
    The floor of 1 token keeps a base policy with equal lengths from making every change
    infinite. Needs ``completion_ids`` or ``completions``.
    """
    toks = _token_lists(history)
    out = np.full(len(history), math.nan)
    if toks[0] is None:
        return out
    l0 = np.array([len(t) for t in toks[0]], dtype=np.float64)
    mu0, sd0 = l0.mean(), max(float(l0.std()), 1.0)
    for k, t in enumerate(toks):
        if t is not None:
            out[k] = abs(np.mean([len(x) for x in t]) - mu0) / sd0
    return out


def _repetition(toks: list[list[str]], n: int) -> float:
    # 1 − distinct-n of one completion: the fraction of its n-grams that repeat an earlier one.
    rates = [1.0 - distinct_n([" ".join(t)], n) for t in toks if len(t) >= n]
    return float(np.mean(rates)) if rates else math.nan


@DETECTORS.register(
    "repetition_drift",
    paper="repetition as a reward hack: Gao, Schulman, Hilton 2023, arXiv 2210.10760; "
    "n-gram repetition rate as in Welleck et al. 2020, arXiv 1908.04319",
    params={"n": "n-gram order"},
    higher_is_better=False,
    needs=("completion_ids|completions",),
)
def repetition_drift(history: RunHistory, n: int = 3) -> np.ndarray:
    """Rise of the within-completion repeated-n-gram rate over the first point's.

        rep(y) = 1 − |distinct n-grams of y| / |n-grams of y|,
        R_k = mean_{b: |y_kb| ≥ n} rep(y_kb) − mean_{b: |y_0b| ≥ n} rep(y_0b)

    (the sequence-level repetition of Welleck et al. 2020, arXiv 1908.04319, from
    ``measure.distinct_n`` on one completion). Completions shorter than n tokens have no n-gram
    and are left out; a point where none has n tokens is NaN. Tokens as in ``length_drift``.
    Needs ``completion_ids`` or ``completions``.
    """
    if n < 1:
        raise ValueError(f"repetition_drift: n: expected >= 1; got {n}")
    rep = _text_stat(history, lambda toks: _repetition(toks, n))
    return rep - rep[0]


@DETECTORS.register(
    "distinct_drop",
    paper=LI,
    params={"n": "n-gram order"},
    higher_is_better=False,
    needs=("completion_ids|completions",),
)
def distinct_drop(history: RunHistory, n: int = 2) -> np.ndarray:
    """Fall of distinct-n across a point's completions below the first point's.

        Δ_k = distinct-n(Y_0) − distinct-n(Y_k),
        distinct-n(Y) = |distinct n-grams in Y| / |n-grams in Y|

    (Li et al. 2016, arXiv 1510.03055; ``measure.distinct_n``.) A policy that collapses onto
    a few completions loses diversity across samples. Distinct-n falls with the number of
    samples, so both points are scored on their first min(B_0, B_k) completions. Tokens as in
    ``length_drift``; NaN where a point's completions hold no n-gram. Needs
    ``completion_ids`` or ``completions``.
    """
    if n < 1:
        raise ValueError(f"distinct_drop: n: expected >= 1; got {n}")
    toks = _token_lists(history)
    out = np.full(len(history), math.nan)
    if toks[0] is None:
        return out

    def dist(t: list[list[str]]) -> float:
        if not any(len(x) >= n for x in t):
            return math.nan
        return distinct_n([" ".join(x) for x in t], n)

    for k, tk in enumerate(toks):
        if tk is not None:
            m = min(len(toks[0]), len(tk))
            out[k] = dist(toks[0][:m]) - dist(tk[:m])
    return out


@DETECTORS.register(
    "proxy_gain_per_kl",
    paper=GAO,
    params={"k": "number of early points the law is fitted on (>= 2)"},
    higher_is_better=False,
    needs=("r_proxy", "kl|logp+logp_ref"),
)
def proxy_gain_per_kl(history: RunHistory, k: int = 5) -> np.ndarray:
    """Proxy gain against what the run's first k points predict, in residual standard errors.

        d_j = sqrt(max(KL_j, 0)),   g_j = mean r_proxy_j − mean r_proxy_0,
        fit g ≈ d (α − β log d) on the first k points (g ≈ α d with fewer than 3 usable),
        e_j = (g_j − ĝ(d_j)) / max(RMS in-sample residual, sd(r_proxy_0) / sqrt(B_0))

    (``core.detect.early_law_residuals``; the RL law of Gao, Schulman, Hilton 2023, arXiv
    2210.10760.) e ≫ 0: the proxy gains more per unit of KL than the early run predicts, the
    jump of a found exploit. Not causal within the first k points (they are scored in-sample
    against the fit to all k); causal after. Points without KL or proxy are NaN and left out
    of the fit; fewer than k usable points: all NaN. Needs ``r_proxy`` and ``kl`` (or
    ``logp`` and ``logp_ref``).
    """
    if k < 2:
        raise ValueError(f"proxy_gain_per_kl: k: expected >= 2; got {k}")
    out = np.full(len(history), math.nan)
    b = history.base
    kl = history.kl()
    ok = np.array([p.r_proxy is not None for p in history.points]) & np.isfinite(kl)
    if b.r_proxy is None or not ok[0] or ok.sum() < k:
        return out
    idx = np.flatnonzero(ok)
    gain = np.array([history.points[i].r_proxy.mean() - b.r_proxy.mean() for i in idx])
    d = np.sqrt(np.maximum(kl[idx], 0.0))
    se0 = max(float(b.r_proxy.std()) / math.sqrt(b.r_proxy.size), 1e-8)
    out[idx] = detect.early_law_residuals(d, gain, k, se0).residual
    return out


@DETECTORS.register(
    "kl_acceleration",
    paper=ENGINES,
    higher_is_better=False,
    needs=("kl|logp+logp_ref",),
)
def kl_acceleration(history: RunHistory) -> np.ndarray:
    """Speed-up of the KL rate between consecutive evaluations, relative to the mean rate so far.

        v_k = ΔKL_k / Δstep_k,   a_k = (v_k − v_{k−1}) / mean_{j ≤ k} |v_j|

    (``core.detect.kl_acceleration``.) NaN at the first two points, and, as the difference
    needs its neighbours, wherever KL is unknown at the point or one of the two before it.
    Needs ``kl`` (or ``logp`` and ``logp_ref``).
    """
    kl = history.kl()
    out = np.full(len(history), math.nan)
    ok = np.flatnonzero(np.isfinite(kl))
    if ok.size >= 3 and ok[0] == 0:
        a = detect.kl_acceleration(kl[ok], history.steps[ok])
        # A gap among the points before k makes the difference span it: keep only contiguous.
        contiguous = np.r_[False, False, (ok[2:] - ok[:-2]) == 2]
        out[ok[contiguous]] = a[contiguous]
    return out


@DETECTORS.register(
    "entropy_collapse",
    paper="Cui et al. 2025, 'The entropy mechanism of reinforcement learning for reasoning "
    "language models', arXiv 2505.22617",
    higher_is_better=False,
    needs=("logp",),
)
def entropy_collapse(history: RunHistory) -> np.ndarray:
    """Relative fall of the policy's per-token entropy below the first point's: 1 − Ĥ_k / Ĥ_0.

        Ĥ = −Σ_b Σ_t log π(y_bt) / Σ_b T_b      (``core.detect.token_entropy``)

    0 at the first point, 1 when the policy has become deterministic on its own samples.
    NaN where a point has no token, and everywhere when Ĥ_0 = 0 (nothing to collapse). Needs
    ``logp``.
    """
    h = _per_point(history, ("logp",), lambda p: detect.token_entropy(p.logp))
    if not h[0] > 0:
        return np.full(len(history), math.nan)
    return 1.0 - h / h[0]


@DETECTORS.register(
    "group_variance_collapse",
    paper="group-normalized advantages vanish with the within-group spread (Shao et al. "
    "2024, GRPO, arXiv 2402.03300); rewardspy's variance-collapse check",
    higher_is_better=False,
    needs=("r_groups",),
)
def group_variance_collapse(history: RunHistory) -> np.ndarray:
    """Relative fall of the within-group reward spread below the first point's: 1 − s_k / s_0.

        s = (1/G) Σ_g std_j r_gj      (``core.detect.mean_within_group_std``)

    0 at the first point, 1 when every group's samples get the same reward (GRPO's
    advantages are then all 0). NaN everywhere when s_0 = 0. Needs ``r_groups``.
    """
    s = _per_point(history, ("r_groups",), lambda p: detect.mean_within_group_std(p.r_groups))
    if not s[0] > 0:
        return np.full(len(history), math.nan)
    return 1.0 - s / s[0]


@DETECTORS.register(
    "cusum",
    paper=PAGE,
    params={
        "signal": "the detector whose scores are monitored (a name in this registry)",
        "k": "points in the reference window (>= 2)",
        "drift": "allowance per point, in reference standard deviations",
        "signal_params": "parameters of the signal detector",
    },
    higher_is_better=False,
    needs=("those of the signal",),
)
def cusum_detector(
    history: RunHistory,
    signal: str,
    k: int = 5,
    drift: float = 0.5,
    signal_params: dict[str, Any] | None = None,
) -> np.ndarray:
    """Page's one-sided CUSUM of another detector's scores, standardized on its first k.

        z_t = (x_t − μ_w) / σ_w,   S_t = max(0, S_{t−1} + z_t − drift)

    x the scores of detector ``signal`` (e.g. ``ensemble_disagreement``), μ_w and σ_w their
    mean and sd over the first k finite points (``core.detect.cusum``; Page 1954). NaN in the
    reference window and wherever the signal never had k finite values; a sustained rise of
    the signal makes S grow, noise around the reference level keeps it near 0. An alarm is
    S above a threshold (4-5 in reference standard deviations is the textbook choice).
    """
    if signal == "cusum" and not signal_params:
        raise ValueError("cusum: signal 'cusum' needs signal_params naming its own signal")
    x = run_detector(history, signal, signal_params)
    return detect.cusum(x, k=k, drift=drift)


def run_detector(
    history: RunHistory, name: str, params: Mapping[str, Any] | None = None
) -> np.ndarray:
    """The scores of the detector ``name`` with ``params`` (checked against its entry)."""
    entry = DETECTORS.entry(name)
    checked = entry.validate_params(params, where=f"detector {name}")
    scores = np.asarray(entry.obj(history, **dict(checked)), dtype=np.float64)
    if scores.shape != (len(history),):
        raise ValueError(
            f"detector {name!r} returned shape {scores.shape}; expected ({len(history)},), one "
            "score per evaluation point"
        )
    return scores


def run_detectors(history: RunHistory, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Every detector in ``names`` (default: each registered one that needs no parameter)
    with its default parameters: ``{name: scores (K,)}``."""
    if names is None:
        names = [
            e.name
            for e in DETECTORS.entries()
            if not any(f.is_required() for f in e.params.model_fields.values())
        ]
    return {name: run_detector(history, name) for name in names}
