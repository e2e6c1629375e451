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

Each built-in detector also has an incremental form, its entry's ``meta["incremental"]``: a
:class:`DetectorStream` fed the run's history one point longer at each call, which returns
the batch form's score at the newest point (``run_detector(history, name)[-1]``, to 1e-12)
in time that does not grow with the run, keeping what it needs of the points before (the
reference point's statistics, a running CUSUM, the KL rates). A live monitor
(:class:`~goodhartlab.monitor.live.Monitor`) feeds them through :class:`DetectorStreams`, which
opens each (detector, parameters) once and reruns the batch form for a detector registered
without an incremental form (a plug-in). A stream is ``causal`` when the scores it returned
at earlier points are still the batch form's on the longer history (``proxy_gain_per_kl`` is
not: its first k points are scored in-sample once the k-th has arrived); a CUSUM over a
signal that is not reruns its batch form.
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
    "DetectorStream",
    "DetectorStreams",
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


class DetectorStream:
    """A detector's incremental form (its entry's ``meta["incremental"]``).

    Built as ``cls(streams, **params)`` (``streams``: the :class:`DetectorStreams` that opens
    it, for the streams of other detectors it reads) and fed every prefix of a run in turn:
    ``update(history)`` returns ``f(history, **params)[-1]``, the batch form's score at the
    newest point, having seen each shorter prefix before.
    """

    causal: bool = True
    """The scores returned at earlier points are still the batch form's on the longer history."""

    def update(self, history: RunHistory) -> float:
        raise NotImplementedError


class _Fed:
    """One open stream: fed each prefix once, however many readers ask for its score."""

    def __init__(self, name: str, stream: DetectorStream):
        self.name, self.stream, self.fed, self.value = name, stream, 0, math.nan

    @property
    def causal(self) -> bool:
        return self.stream.causal

    def update(self, history: RunHistory) -> float:
        if len(history) == self.fed:
            return self.value
        if len(history) != self.fed + 1:
            raise ValueError(
                f"detector {self.name!r}: its stream got a history of {len(history)} points "
                f"after one of {self.fed}; feed every prefix of the run in turn"
            )
        self.value = float(self.stream.update(history))
        self.fed += 1
        return self.value


class _BatchStream(DetectorStream):
    """A detector without an incremental form: its batch form over the whole history."""

    causal = False  # unknown

    def __init__(self, name: str, params: Mapping[str, Any]):
        self.name, self.params = name, params

    def update(self, history: RunHistory) -> float:
        return float(run_detector(history, self.name, self.params)[-1])


class DetectorStreams:
    """The incremental forms of detectors over one run, each (name, params) opened once.

    >>> streams = DetectorStreams()
    >>> h = RunHistory([EvalPoint(step=0, completions=["a b", "a b c d"])])
    >>> streams.score(h, "length_drift"), streams.score(h.append(EvalPoint(
    ...     step=1, completions=["a b c d e", "a b c d e f g"])), "length_drift")
    (0.0, 3.0)

    Call :meth:`score` with every prefix of the run in turn (a longer one each call, the same
    one again for another detector); the score is ``run_detector(history, name, params)[-1]``.
    """

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], _Fed] = {}

    def stream(self, name: str, params: Mapping[str, Any] | None = None) -> _Fed:
        """The open stream of ``name`` with ``params`` (checked against its entry)."""
        entry = DETECTORS.entry(name)
        checked = entry.validate_params(params, where=f"detector {name}")
        key = (name, repr(checked))
        if key not in self._open:
            factory = entry.meta.get("incremental")
            stream = (
                _BatchStream(name, dict(checked))
                if factory is None
                else factory(self, **dict(checked))
            )
            self._open[key] = _Fed(name, stream)
        return self._open[key]

    def score(
        self, history: RunHistory, name: str, params: Mapping[str, Any] | None = None
    ) -> float:
        """The score of ``name`` at the newest point of ``history``."""
        return self.stream(name, params).update(history)


def _per_point(
    history: RunHistory, needs: tuple[str, ...], stat: Callable[[EvalPoint, EvalPoint], float]
) -> np.ndarray:
    """``stat(point, base)`` at every point that has all of ``needs``; NaN elsewhere, and
    everywhere when the reference point lacks them."""
    out = np.full(len(history), math.nan)
    if any(getattr(history.base, n) is None for n in needs):
        return out
    for k, p in enumerate(history.points):
        if all(getattr(p, n) is not None for n in needs):
            out[k] = stat(p, history.base)
    return out


class _PerPointStream(DetectorStream):
    """The incremental form of a ``_per_point`` detector: ``stat(newest, base)``."""

    def __init__(self, needs: tuple[str, ...], stat: Callable[[EvalPoint, EvalPoint], float]):
        self.needs, self.stat = needs, stat

    def update(self, history: RunHistory) -> float:
        base, p = history.base, history.points[-1]
        if any(getattr(base, n) is None or getattr(p, n) is None for n in self.needs):
            return math.nan
        return self.stat(p, base)


def _tokens_of(p: EvalPoint, use_ids: bool) -> list[list[str]] | None:
    if use_ids:
        return [[str(t) for t in ids] for ids in p.completion_ids]
    if p.completions is not None:
        return [c.split() for c in p.completions]
    return None


def _token_lists(history: RunHistory) -> list[list[list[str]] | None]:
    """Each point's completions as token lists: token ids when every point has them (one
    tokenization for the whole run), else whitespace-separated words; None where a point has
    neither. (Not causal where ids stop: the earlier points are then re-read as words.)"""
    use_ids = all(p.completion_ids is not None for p in history.points)
    return [_tokens_of(p, use_ids) for p in history.points]


class _TokenStream(DetectorStream):
    """The incremental form of a detector over ``_token_lists``: ``stat(newest, base)`` of
    the newest point's and the base's tokens, ``reference(base)`` kept per tokenization."""

    def __init__(
        self,
        stat: Callable[[list[list[str]], Any], float],
        reference: Callable[[list[list[str]]], Any] = lambda t: t,
        check: Callable[[], Any] = lambda: None,
    ):
        check()  # the parameters, as the batch form checks them
        self.stat, self.reference = stat, reference
        self.use_ids = True
        self.ref: Any = None

    def update(self, history: RunHistory) -> float:
        p = history.points[-1]
        if self.use_ids and p.completion_ids is None:
            # Every earlier point is re-read as words from now on, as the batch form does.
            self.use_ids, self.ref = False, None
            self.causal = len(history) == 1
        if self.ref is None:
            base = _tokens_of(history.base, self.use_ids)
            self.ref = (None,) if base is None else (self.reference(base),)
        toks = _tokens_of(p, self.use_ids)
        if self.ref[0] is None or toks is None:
            return math.nan
        return self.stat(toks, self.ref[0])


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


def _disagreement(p: EvalPoint, base: EvalPoint) -> float:
    return detect.member_disagreement(p.r_members, base.r_members)


@DETECTORS.register(
    "ensemble_disagreement",
    paper=f"{COSTE}; {EISENSTEIN}",
    higher_is_better=False,
    needs=("r_members",),
    incremental=lambda streams: _PerPointStream(("r_members",), _disagreement),
)
def ensemble_disagreement(history: RunHistory) -> np.ndarray:
    """Ensemble disagreement: mean over samples of the members' std of standardized scores.

        D_k = (1/B) Σ_b std_i z_ib,   z_ib = (R_ib − μ_i⁰) / σ_i⁰

    μ_i⁰, σ_i⁰: member i's mean and std on the first point's samples (the base policy's), so
    the members' arbitrary offsets and scales cancel (``core.detect.member_disagreement``).
    Coste et al. 2023 (arXiv 2310.02743) penalize this variance (UWO); Eisenstein et al. 2023
    (arXiv 2312.09244) find hacking where members disagree. Needs ``r_members``.
    """
    return _per_point(history, ("r_members",), _disagreement)


def _growth(d, d0):
    return d / max(d0, 1e-8) - 1.0


class _GrowthStream(DetectorStream):
    def __init__(self, streams: DetectorStreams):
        self.d = streams.stream("ensemble_disagreement")

    def update(self, history: RunHistory) -> float:
        d = self.d.update(history)
        if len(history) == 1:
            self.d0 = d
        return _growth(d, self.d0)


@DETECTORS.register(
    "ensemble_disagreement_growth",
    paper=f"{COSTE}; {EISENSTEIN}",
    higher_is_better=False,
    needs=("r_members",),
    incremental=_GrowthStream,
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
    return _growth(d, d[0])


def _heldout_gap(p: EvalPoint, b: EvalPoint) -> float:
    return detect.standardized_gain(p.r_proxy, b.r_proxy) - detect.standardized_gain(
        p.r_heldout, b.r_heldout
    )


@DETECTORS.register(
    "heldout_divergence",
    paper="gain of the optimized proxy minus that of a held-out reward model (cf. the "
    "gold-vs-proxy gap of " + GAO + "; the held-out RM plays gold)",
    higher_is_better=False,
    needs=("r_proxy", "r_heldout"),
    incremental=lambda streams: _PerPointStream(("r_proxy", "r_heldout"), _heldout_gap),
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
    return _per_point(history, ("r_proxy", "r_heldout"), _heldout_gap)


def _latent_reference(history: RunHistory, alpha: float, reg_eps: float):
    """The base's (μ, Σ* + εI), or None without latents; checks the parameters."""
    if not 0 < alpha < 1:
        raise ValueError(f"mahalanobis_outliers: alpha: expected in (0, 1); got {alpha}")
    ref = history.base.latents
    if ref is None:
        return None
    if ref.shape[0] < 2:
        raise ValueError("mahalanobis_outliers: the first point needs at least 2 latents")
    return detect.shrinkage_reference(ref, reg_eps)


def _outlier_share(latents: np.ndarray, reference, alpha: float) -> float:
    return float(np.mean(detect.tail_probability_against(latents, reference) < alpha))


class _MahalanobisStream(DetectorStream):
    def __init__(self, streams: DetectorStreams, alpha: float = 0.01, reg_eps: float = 1e-6):
        self.alpha, self.reg_eps = alpha, reg_eps

    def update(self, history: RunHistory) -> float:
        if len(history) == 1:
            self.reference = _latent_reference(history, self.alpha, self.reg_eps)
        p = history.points[-1]
        if self.reference is None or p.latents is None:
            return math.nan
        return _outlier_share(p.latents, self.reference, self.alpha)


@DETECTORS.register(
    "mahalanobis_outliers",
    paper=INFORM,
    params={
        "alpha": "a sample is an outlier when its χ² tail probability is below alpha",
        "reg_eps": "ridge added to the diagonal of the shrinkage covariance",
    },
    higher_is_better=False,
    needs=("latents",),
    incremental=_MahalanobisStream,
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
    reference = _latent_reference(history, alpha, reg_eps)
    return _per_point(
        history, ("latents",), lambda p, b: _outlier_share(p.latents, reference, alpha)
    )


def _length_reference(t0: list[list[str]]) -> tuple[float, float]:
    l0 = np.array([len(t) for t in t0], dtype=np.float64)
    return l0.mean(), max(float(l0.std()), 1.0)


def _length_drift(t: list[list[str]], ref: tuple[float, float]) -> float:
    mu0, sd0 = ref
    return abs(np.mean([len(x) for x in t]) - mu0) / sd0


@DETECTORS.register(
    "length_drift",
    paper="length exploitation: Singhal, Goyal, Xu, Durrett 2023, 'A long way to go', "
    "arXiv 2310.03716",
    higher_is_better=False,
    needs=("completion_ids|completions",),
    incremental=lambda streams: _TokenStream(_length_drift, _length_reference),
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
    ref = _length_reference(toks[0])
    for k, t in enumerate(toks):
        if t is not None:
            out[k] = _length_drift(t, ref)
    return out


def _order(detector: str, n: int) -> int:
    if n < 1:
        raise ValueError(f"{detector}: n: expected >= 1; got {n}")
    return n


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
    incremental=lambda streams, n: _TokenStream(
        lambda t, rep0: _repetition(t, n) - rep0,
        lambda t0: _repetition(t0, n),
        check=lambda: _order("repetition_drift", n),
    ),
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
    _order("repetition_drift", n)
    rep = _text_stat(history, lambda toks: _repetition(toks, n))
    return rep - rep[0]


@DETECTORS.register(
    "distinct_drop",
    paper=LI,
    params={"n": "n-gram order"},
    higher_is_better=False,
    needs=("completion_ids|completions",),
    incremental=lambda streams, n: _TokenStream(
        lambda t, t0: _distinct_drop(t0, t, n), check=lambda: _order("distinct_drop", n)
    ),
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
    _order("distinct_drop", n)
    toks = _token_lists(history)
    out = np.full(len(history), math.nan)
    if toks[0] is None:
        return out
    for k, tk in enumerate(toks):
        if tk is not None:
            out[k] = _distinct_drop(toks[0], tk, n)
    return out


def _distinct(t: list[list[str]], n: int) -> float:
    if not any(len(x) >= n for x in t):
        return math.nan
    return distinct_n([" ".join(x) for x in t], n)


def _distinct_drop(t0: list[list[str]], tk: list[list[str]], n: int) -> float:
    m = min(len(t0), len(tk))
    return _distinct(t0[:m], n) - _distinct(tk[:m], n)


class _GainPerKlStream(DetectorStream):
    """Keeps d and the gain of every usable point; refits the first k of them at each point,
    on the same arrays as the batch form (the fit is a small least squares)."""

    causal = False  # the first k points are scored in-sample once the k-th has arrived

    def __init__(self, streams: DetectorStreams, k: int):
        if k < 2:
            raise ValueError(f"proxy_gain_per_kl: k: expected >= 2; got {k}")
        self.k = k
        self.kl: list[float] = []
        self.gain: list[float] = []

    def update(self, history: RunHistory) -> float:
        b, p = history.base, history.points[-1]
        kl = p.kl_estimate()
        if len(history) == 1:
            self.usable_base = b.r_proxy is not None and math.isfinite(kl)
            if self.usable_base:
                self.se0 = max(float(b.r_proxy.std()) / math.sqrt(b.r_proxy.size), 1e-8)
        if not self.usable_base or p.r_proxy is None or not math.isfinite(kl):
            return math.nan
        self.kl.append(kl)
        self.gain.append(p.r_proxy.mean() - b.r_proxy.mean())
        if len(self.kl) < self.k:
            return math.nan
        d = np.sqrt(np.maximum(np.array(self.kl), 0.0))
        return float(
            detect.early_law_residuals(d, np.array(self.gain), self.k, self.se0).residual[-1]
        )


@DETECTORS.register(
    "proxy_gain_per_kl",
    paper=GAO,
    params={"k": "number of early points the law is fitted on (>= 2)"},
    higher_is_better=False,
    needs=("r_proxy", "kl|logp+logp_ref"),
    incremental=_GainPerKlStream,
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


class _KlAccelerationStream(DetectorStream):
    """Keeps the KL rates between consecutive points with a known KL."""

    def __init__(self, streams: DetectorStreams):
        self.known: list[int] = []  # indices of the points with a finite KL
        self.rates: list[float] = []

    def update(self, history: RunHistory) -> float:
        i, p = len(history) - 1, history.points[-1]
        kl = p.kl_estimate()
        if not math.isfinite(kl):
            return math.nan
        if self.known:
            self.rates.append((kl - self.kl) / (float(p.step) - float(self.step)))
        self.known.append(i)
        self.kl, self.step = kl, p.step
        # As the batch form: the base's KL known, and the two points before this one too.
        if len(self.known) < 3 or self.known[0] != 0 or self.known[-3] != i - 2:
            return math.nan
        return detect.kl_rate_acceleration(np.array(self.rates))


@DETECTORS.register(
    "kl_acceleration",
    paper=ENGINES,
    higher_is_better=False,
    needs=("kl|logp+logp_ref",),
    incremental=_KlAccelerationStream,
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


def _collapse(x, x0):
    return 1.0 - x / x0


class _CollapseStream(DetectorStream):
    """1 − stat(newest) / stat(base), NaN everywhere unless stat(base) > 0."""

    def __init__(self, field: str, stat: Callable[[Any], float]):
        self.field, self.stat = field, stat

    def update(self, history: RunHistory) -> float:
        if len(history) == 1:
            v0 = getattr(history.base, self.field)
            self.x0 = math.nan if v0 is None else self.stat(v0)
        v = getattr(history.points[-1], self.field)
        if not self.x0 > 0 or v is None:
            return math.nan
        return _collapse(self.stat(v), self.x0)


@DETECTORS.register(
    "entropy_collapse",
    paper="Cui et al. 2025, 'The entropy mechanism of reinforcement learning for reasoning "
    "language models', arXiv 2505.22617",
    higher_is_better=False,
    needs=("logp",),
    incremental=lambda streams: _CollapseStream("logp", detect.token_entropy),
)
def entropy_collapse(history: RunHistory) -> np.ndarray:
    """Relative fall of the policy's per-token entropy below the first point's: 1 − Ĥ_k / Ĥ_0.

        Ĥ = −Σ_b Σ_t log π(y_bt) / Σ_b T_b      (``core.detect.token_entropy``)

    0 at the first point, 1 when the policy has become deterministic on its own samples.
    NaN where a point has no token, and everywhere when Ĥ_0 = 0 (nothing to collapse). Needs
    ``logp``.
    """
    h = _per_point(history, ("logp",), lambda p, b: detect.token_entropy(p.logp))
    if not h[0] > 0:
        return np.full(len(history), math.nan)
    return _collapse(h, h[0])


@DETECTORS.register(
    "group_variance_collapse",
    paper="group-normalized advantages vanish with the within-group spread (Shao et al. "
    "2024, GRPO, arXiv 2402.03300); rewardspy's variance-collapse check",
    higher_is_better=False,
    needs=("r_groups",),
    incremental=lambda streams: _CollapseStream("r_groups", detect.mean_within_group_std),
)
def group_variance_collapse(history: RunHistory) -> np.ndarray:
    """Relative fall of the within-group reward spread below the first point's: 1 − s_k / s_0.

        s = (1/G) Σ_g std_j r_gj      (``core.detect.mean_within_group_std``)

    0 at the first point, 1 when every group's samples get the same reward (GRPO's
    advantages are then all 0). NaN everywhere when s_0 = 0. Needs ``r_groups``.
    """
    s = _per_point(history, ("r_groups",), lambda p, b: detect.mean_within_group_std(p.r_groups))
    if not s[0] > 0:
        return np.full(len(history), math.nan)
    return _collapse(s, s[0])


class _CusumStream(DetectorStream):
    """A running CUSUM over the signal's stream; the batch form over a signal that is not
    causal (the signal's earlier scores change, and the CUSUM with them)."""

    def __init__(
        self,
        streams: DetectorStreams,
        signal: str,
        k: int,
        drift: float,
        signal_params: dict[str, Any] | None,
    ):
        _check_cusum_signal(signal, signal_params)
        detect.check_cusum_params(k, drift)
        self.params = {"signal": signal, "k": k, "drift": drift, "signal_params": signal_params}
        self.signal = streams.stream(signal, signal_params)
        self.window: list[float] = []
        self.s = math.nan

    @property
    def causal(self) -> bool:
        return self.signal.causal

    def update(self, history: RunHistory) -> float:
        x = self.signal.update(history)
        if not self.signal.causal:
            return float(run_detector(history, "cusum", self.params)[-1])
        k = self.params["k"]
        if len(self.window) < k:
            if math.isfinite(x):
                self.window.append(x)
                if len(self.window) == k:
                    self.mu, self.sd = detect.cusum_reference(np.array(self.window))
                    self.s = 0.0
            return math.nan
        if math.isfinite(x):
            self.s = detect.cusum_step(self.s, x, self.mu, self.sd, self.params["drift"])
        return self.s


def _check_cusum_signal(signal: str, signal_params: Mapping[str, Any] | None) -> None:
    if signal == "cusum" and not signal_params:
        raise ValueError("cusum: signal 'cusum' needs signal_params naming its own signal")


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
    incremental=_CusumStream,
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
    _check_cusum_signal(signal, signal_params)
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
