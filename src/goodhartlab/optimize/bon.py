"""The best-of-n overoptimization study: score a pool once, curves for every n and method.

Best-of-n needs no training: sample N completions per prompt from the base policy once
(:mod:`goodhartlab.optimize.pool`), score them once with gold and with every proxy and
ensemble member (:func:`score_pool`, cached beside the pool), and the unbiased estimator
(:func:`goodhartlab.core.bon.expected_best_of_n`) gives gold and proxy of best-of-n for
every n ≤ N and every way of picking — each single proxy, each ensemble aggregator
(:mod:`goodhartlab.core.aggregate`), each member, and the gold itself (the oracle) —
against KL_bon(n) (Gao, Schulman, Hilton 2023, arXiv 2210.10760; Coste et al. 2023,
arXiv 2310.02743).

:func:`run_bon_study` does all of it and writes a run directory (DESIGN.md)::

    out_dir/
      config.yaml  manifest.json  metrics.jsonl  summary.json  samples.jsonl
      plots/bon.png  plots/bon.svg
      pool/        samples/ (the pool) and scores/ (the reward caches), unless ``pool_dir``
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor, nn

from goodhartlab.artifacts import atomic_write_json, atomic_write_text
from goodhartlab.core.aggregate import get_aggregator, standardize_members
from goodhartlab.core.bon import expected_best_of_n
from goodhartlab.core.kl import bon_kl
from goodhartlab.core.scaling import fit_bon_law, overoptimization
from goodhartlab.core.stats import bootstrap_ci, bootstrap_means
from goodhartlab.models.fingerprint import fingerprint_files
from goodhartlab.models.loading import load_policy, local_model_dir
from goodhartlab.optimize.pool import (
    Pool,
    PoolError,
    build_pool,
    load_pool,
    pool_status,
)
from goodhartlab.rewards.ensemble import ensemble_member_dirs

__all__ = [
    "DEFAULT_AGGREGATORS",
    "METRICS_VERSION",
    "SCORES_FORMAT",
    "BonStudyConfig",
    "BonStudyResult",
    "MethodCurve",
    "PoolError",
    "RewardSource",
    "bon_curves",
    "default_ns",
    "ensemble_member_dirs",
    "picks_at_n",
    "reward_model_source",
    "run_bon_study",
    "score_pool",
    "scorer_source",
]

log = logging.getLogger(__name__)

#: Bump on any change of the score files' meaning or layout.
SCORES_FORMAT = "goodhart-scores/v1"
#: Bump on any change of what metrics.jsonl / summary.json fields mean.
METRICS_VERSION = "bon-study/v1"

#: Ensemble aggregators of the study and their parameters (Coste et al. 2023: λ = 0.5 for
#: best-of-n; Eisenstein et al. 2023: median, mean − 1 std).
DEFAULT_AGGREGATORS: dict[str, dict[str, float]] = {
    "mean": {},
    "wco": {},
    "uwo": {"lam": 0.5},
    "median": {},
    "mean_minus_std": {"k": 1.0},
}


# --------------------------------------------------------------------------------------
# Reward sources and the score cache
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardSource:
    """A reward to score a pool with, loaded only when its scores are not cached.

    ``key`` identifies exactly what produces the scores (for a reward model: a hash of its
    files; for a programmatic reward: its name and version): a changed key is rescored.
    ``load()`` returns an object with ``score(prompts, completions) -> Tensor[B]``.
    """

    name: str
    key: str
    load: Callable[[], Any] = field(repr=False, compare=False)


def reward_model_source(
    path_or_hub: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    name: str | None = None,
    trust_remote_code: bool = False,
) -> RewardSource:
    """A :class:`~goodhartlab.rewards.RewardModel` directory (or cached hub name) as a source.

    The cache key is a SHA-256 of every file of the model directory (weights, config,
    tokenizer, ``goodhart_rm.json``), so a retrained or edited model is rescored.
    """
    local = local_model_dir(path_or_hub)

    def load():
        from goodhartlab.rewards import RewardModel

        try:
            return RewardModel.from_pretrained(
                local, device=device, trust_remote_code=trust_remote_code
            )
        except ValueError as e:
            raise ValueError(f"reward model {path_or_hub}: {e}") from None

    return RewardSource(
        name=name or Path(str(path_or_hub)).name, key=f"rm:{fingerprint_files(local)}", load=load
    )


def scorer_source(scorer: Any, *, name: str | None = None, key: str | None = None) -> RewardSource:
    """Any ``score(prompts, completions) -> Tensor[B]`` object (a gold reward, a heuristic).

    The key defaults to ``"<module.Class>:<name>@<version>"`` from the scorer's class and
    its ``name`` and ``version`` attributes; a scorer without ``version`` needs an explicit ``key``
    (bump it whenever the scorer changes, or stale scores are reused).
    """
    if not callable(getattr(scorer, "score", None)):
        raise ValueError(f"{scorer!r}: expected an object with score(prompts, completions)")
    own_name = getattr(scorer, "name", None)
    label = name or own_name or type(scorer).__name__
    if key is None:
        version = getattr(scorer, "version", None)
        if version is None:
            raise ValueError(
                f"{label}: the scorer has no `version` attribute; pass key=... to cache its scores"
            )
        cls = type(scorer)
        key = f"{cls.__module__}.{cls.__qualname__}:{own_name or ''}@{version}"
    return RewardSource(name=str(label), key=str(key), load=lambda: scorer)


def _as_source(x: Any, *, device: str, name: str | None = None) -> RewardSource:
    if isinstance(x, RewardSource):
        return x
    if isinstance(x, str | os.PathLike):
        return reward_model_source(x, device=device, name=name)
    return scorer_source(x, name=name)


def _score_path(pool: Pool, source: RewardSource) -> Path:
    # Named by the key alone: one model given as a proxy and as an ensemble member (under
    # two names) is scored once.
    return (
        pool.path / "scores" / f"{hashlib.sha256(source.key.encode()).hexdigest()[:32]}.safetensors"
    )


def _read_scores(path: Path, pool: Pool, source: RewardSource) -> Tensor | None:
    """Cached scores, or None (and why, logged) when missing, stale or corrupt."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            scores = f.get_tensor("scores")
    except Exception as e:  # truncated or not a safetensors file
        log.warning("score cache %s is unreadable (%s); rescoring", path, e)
        return None
    expected = {"format": SCORES_FORMAT, "key": source.key, "pool": pool.digest}
    if any(meta.get(k) != v for k, v in expected.items()):
        log.info("score cache %s is for another pool or model; rescoring", path)
        return None
    if tuple(scores.shape) != (pool.num_prompts, pool.pool_size) or not bool(
        torch.isfinite(scores).all()
    ):
        log.warning(
            "score cache %s has shape %s or non-finite values; rescoring", path, tuple(scores.shape)
        )
        return None
    return scores


def _write_scores(path: Path, scores: Tensor, pool: Pool, source: RewardSource) -> None:
    import tempfile

    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        meta = {
            "format": SCORES_FORMAT,
            "key": source.key,
            "pool": pool.digest,
            "name": source.name,
        }
        save_file({"scores": scores.contiguous()}, tmp, metadata=meta)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def score_pool(
    pool: Pool,
    source: RewardSource | Any,
    *,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = False,
) -> Tensor:
    """Rewards of every completion of the pool, computed once and cached beside the pool.

    The cache file ``pool_dir/scores/<hash of key>.safetensors`` records the source's name
    and key and the pool's digest; a file for another key or pool, or one that is truncated
    or corrupt, is recomputed (the scorer is loaded only then). Written atomically.

    Args:
        pool: a complete pool (``load_pool`` / ``build_pool``).
        source: a :class:`RewardSource`, a reward-model directory, or a scorer with
            ``score`` and ``version``.
        batch_size: items per ``score`` call (reward models batch inside it as well).

    Returns:
        Float32 rewards. Shape: (P, N).
    """
    source = _as_source(source, device=device)
    path = _score_path(pool, source)
    cached = _read_scores(path, pool, source)
    if cached is not None:
        return cached
    scorer = source.load()
    prompts, completions = pool.flat()
    parts = []
    from tqdm.auto import tqdm

    for lo in tqdm(
        range(0, len(prompts), batch_size), desc=f"scoring {source.name}", disable=not progress
    ):
        r = torch.as_tensor(
            scorer.score(prompts[lo : lo + batch_size], completions[lo : lo + batch_size])
        )
        if r.shape != (min(batch_size, len(prompts) - lo),):
            raise ValueError(
                f"{source.name}: score returned shape {tuple(r.shape)} for a batch of {len(prompts[lo : lo + batch_size])}"
            )
        parts.append(r.detach().float().cpu())
    scores = torch.cat(parts).reshape(pool.num_prompts, pool.pool_size)
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"{source.name}: scores contain NaN or ±inf")
    _write_scores(path, scores, pool, source)
    return scores


# --------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------


def default_ns(pool_size: int) -> list[int]:
    """1, 2, 4, … up to N, and N itself."""
    if pool_size < 1:
        raise ValueError(f"pool_size: expected >= 1, got {pool_size}")
    ns = [1 << k for k in range(int(math.log2(pool_size)) + 1)]
    return ns if ns[-1] == pool_size else [*ns, pool_size]


@dataclass(frozen=True)
class MethodCurve:
    """Best-of-n gold and proxy of one way of picking, for every n of the grid.

    Gold and proxy are relative to the base policy (best-of-1), per prompt, so both are 0
    at n = 1; ``*_lo`` / ``*_hi`` are percentile bootstrap intervals over prompts.
    All arrays have shape (K,).
    """

    method: str
    """"<proxy>", "<ensemble>/<aggregator>", "<ensemble>/member<i>" or "oracle"."""
    kind: str
    """"single", "aggregate", "member" or "oracle" (picks by gold itself)."""
    params: dict[str, float]
    n: np.ndarray
    kl: np.ndarray
    """KL_bon(n) = log n − (n − 1)/n, nats: an upper bound on the true KL (core.kl.bon_kl)."""
    d: np.ndarray
    """sqrt(kl)."""
    gold: np.ndarray
    gold_lo: np.ndarray
    gold_hi: np.ndarray
    proxy: np.ndarray
    proxy_lo: np.ndarray
    proxy_hi: np.ndarray
    gold_abs: np.ndarray
    """Gold not shifted (the base policy's mean gold + ``gold``)."""
    length: np.ndarray | None
    """Expected tokens of the picked completion (None without token counts)."""
    summary: dict[str, Any]

    def records(self) -> list[dict[str, Any]]:
        """One metrics.jsonl object per n."""
        out = []
        for k in range(len(self.n)):
            rec = {
                "method": self.method,
                "kind": self.kind,
                "n": int(self.n[k]),
                "kl": float(self.kl[k]),
                "d": float(self.d[k]),
                "gold": float(self.gold[k]),
                "gold_lo": float(self.gold_lo[k]),
                "gold_hi": float(self.gold_hi[k]),
                "proxy": float(self.proxy[k]),
                "proxy_lo": float(self.proxy_lo[k]),
                "proxy_hi": float(self.proxy_hi[k]),
                "gold_abs": float(self.gold_abs[k]),
            }
            if self.length is not None:
                rec["length"] = float(self.length[k])
            if self.params:
                rec["params"] = dict(self.params)
            out.append(rec)
        return out


def _method_curve(
    method: str,
    kind: str,
    params: dict[str, float],
    r_pick: Tensor,
    r_gold: Tensor,
    ns: list[int],
    lengths: Tensor | None,
    n_boot: int,
    alpha: float,
    seed: int,
) -> MethodCurve:
    grid = sorted({1, *ns})
    at = [grid.index(n) for n in ns]
    # r_pick of shape (M, P, N): M proxies used one at a time; the curve is the average of
    # their best-of-n curves per prompt (the expected single proxy over training seeds).
    picks = r_pick if r_pick.ndim == 3 else r_pick[None]
    per_pick = [expected_best_of_n(r, r_gold, grid) for r in picks]
    gold_pp = np.mean([c.gold_per_prompt.numpy() for c in per_pick], axis=0)
    proxy_pp = np.mean([c.proxy_per_prompt.numpy() for c in per_pick], axis=0)
    # Relative to best-of-1 (the base policy's mean) of the same prompt: 0 at n = 1 exactly.
    gold_rel = (gold_pp - gold_pp[:, :1])[:, at]
    proxy_rel = (proxy_pp - proxy_pp[:, :1])[:, at]
    gold, proxy = gold_rel.mean(axis=0), proxy_rel.mean(axis=0)
    base_gold = float(gold_pp[:, 0].mean())
    n_arr = np.asarray(ns, dtype=np.int64)
    kl = bon_kl(n_arr).numpy()
    d = np.sqrt(kl)
    n_prompts = gold_rel.shape[0]
    if n_prompts >= 2:
        g_lo, g_hi = (x.numpy() for x in bootstrap_ci(gold_rel, n_boot, alpha, seed))
        p_lo, p_hi = (x.numpy() for x in bootstrap_ci(proxy_rel, n_boot, alpha, seed))
    else:  # one prompt: no resampling over prompts possible
        g_lo = g_hi = p_lo = p_hi = np.full(len(ns), np.nan)
    length = None
    if lengths is not None:
        length = np.mean([expected_best_of_n(r, lengths, ns).gold.numpy() for r in picks], 0)

    oo = overoptimization(d, gold)
    k_peak = int(np.argmax(gold))
    summary: dict[str, Any] = {
        "method": method,
        "kind": kind,
        **({"params": dict(params)} if params else {}),
        "base_gold": base_gold,
        "gold_peak": oo.gold_peak,
        "n_peak": int(n_arr[k_peak]),
        "d_peak": oo.d_peak,
        "gold_final": oo.gold_final,
        "n_final": int(n_arr[-1]),
        "proxy_final": float(proxy[-1]),
        "drop": oo.gold_peak - oo.gold_final,
        "drop_fraction": oo.drop,
        "overoptimization_definition": oo.definition,
    }
    if n_prompts >= 2:
        q = [alpha / 2, 1 - alpha / 2]
        # The peak is found again in every resample, so the interval includes the
        # uncertainty of where the peak is (this statistic is >= 0 by construction).
        boot = bootstrap_means(gold_rel, n_boot, seed).numpy()
        drops = boot.max(axis=1) - boot[:, -1]
        summary["drop_lo"], summary["drop_hi"] = (float(x) for x in np.quantile(drops, q))
        # With the peak's n fixed at the observed one: a paired difference over prompts,
        # which can be negative; its interval excluding 0 is the stricter test.
        diff = gold_rel[:, [k_peak]] - gold_rel[:, [-1]]
        lo, hi = bootstrap_ci(diff, n_boot, alpha, seed)
        summary["drop_paired_lo"], summary["drop_paired_hi"] = float(lo[0]), float(hi[0])
    try:
        fit = fit_bon_law(d, gold)
        summary.update(
            alpha=fit.alpha,
            beta=fit.beta,
            r2=fit.r2,
            fit_d_peak=fit.d_peak,
            fit_gold_peak=fit.gold_peak,
        )
    except ValueError as e:  # too few points (N < 4)
        summary.update(alpha=math.nan, beta=math.nan, r2=math.nan, fit_error=str(e))
    return MethodCurve(
        method=method,
        kind=kind,
        params=dict(params),
        n=n_arr,
        kl=kl,
        d=d,
        gold=gold,
        gold_lo=np.asarray(g_lo),
        gold_hi=np.asarray(g_hi),
        proxy=proxy,
        proxy_lo=np.asarray(p_lo),
        proxy_hi=np.asarray(p_hi),
        gold_abs=gold + base_gold,
        length=length,
        summary=summary,
    )


def bon_curves(
    r_gold: Tensor,
    proxies: Mapping[str, Tensor] | None = None,
    ensembles: Mapping[str, Tensor] | None = None,
    ns: Sequence[int] | None = None,
    *,
    aggregators: Mapping[str, Mapping[str, float]] | None = None,
    lengths: Tensor | None = None,
    include_members: bool = True,
    oracle: bool = True,
    standardize: bool = True,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> list[MethodCurve]:
    """Best-of-n curves of every single proxy, every aggregator of every ensemble, the oracle.

    Args:
        r_gold: gold reward of each pool sample. Shape: (P, N).
        proxies: name -> proxy reward. Shape: (P, N) each.
        ensembles: name -> member rewards. Shape: (M, P, N) each.
        ns: values of n, each in 1..N (default: 1, 2, 4, …, N).
        aggregators: name -> parameters, names from ``core.aggregate.AGGREGATORS``
            (default ``DEFAULT_AGGREGATORS``: mean, wco, uwo λ=0.5, median, mean_minus_std).
        lengths: tokens of each sample, for the expected length of the pick. Shape: (P, N).
        include_members: also a curve per ensemble member (as a single proxy), and
            ``<ensemble>/members_avg``: the members' single-proxy curves averaged per prompt
            (the expected single proxy over training seeds, as Coste et al. 2023 report it).
        oracle: also best-of-n picked by gold itself (the ceiling).
        standardize: aggregate members after ``core.aggregate.standardize_members`` over the
            whole pool (the base policy's samples), so that seeds' arbitrary Bradley-Terry
            offsets do not decide WCO's minimum or UWO's variance. Aggregate proxy scores are
            then in standard units. Single proxies and members are unaffected (best-of-n is
            invariant to a member's offset and scale).
        n_boot, alpha, seed: bootstrap over prompts (``core.stats.bootstrap_ci``).

    Returns:
        One :class:`MethodCurve` per method, in the order above.
    """
    r_gold = torch.as_tensor(r_gold)
    if r_gold.ndim != 2:
        raise ValueError(f"r_gold: expected shape (P, N), got {tuple(r_gold.shape)}")
    n_prompts, pool_size = r_gold.shape
    if n_prompts == 0 or pool_size == 0:
        raise ValueError(
            f"r_gold: expected P >= 1 prompts and N >= 1 samples, got {tuple(r_gold.shape)}"
        )
    ns = default_ns(pool_size) if ns is None else [int(n) for n in ns]
    if not ns:
        raise ValueError("ns: expected at least one n")
    bad = [n for n in ns if n < 1 or n > pool_size]
    if bad:
        raise ValueError(f"ns: every n must be in 1..N = {pool_size} (the pool size); got {bad}")
    if sorted(set(ns)) != ns:
        raise ValueError(f"ns: expected strictly increasing values, got {ns}")
    aggregators = DEFAULT_AGGREGATORS if aggregators is None else aggregators
    args = dict(ns=ns, lengths=lengths, n_boot=n_boot, alpha=alpha, seed=seed)

    def check(name: str, r: Tensor, shape: tuple[int, ...]) -> Tensor:
        r = torch.as_tensor(r)
        if tuple(r.shape) != shape:
            raise ValueError(f"{name}: expected shape {shape}, got {tuple(r.shape)}")
        return r

    curves = []
    for name, r in (proxies or {}).items():
        r = check(f"proxies[{name!r}]", r, (n_prompts, pool_size))
        curves.append(_method_curve(name, "single", {}, r, r_gold, **args))
    for ens, r_members in (ensembles or {}).items():
        r_members = torch.as_tensor(r_members)
        if r_members.ndim != 3 or tuple(r_members.shape[1:]) != (n_prompts, pool_size):
            raise ValueError(
                f"ensembles[{ens!r}]: expected shape (M, {n_prompts}, {pool_size}), "
                f"got {tuple(r_members.shape)}"
            )
        for agg, r in _aggregates(r_members, aggregators, standardize).items():
            curves.append(
                _method_curve(
                    f"{ens}/{agg}", "aggregate", dict(aggregators[agg]), r, r_gold, **args
                )
            )
        if include_members:
            for i in range(r_members.shape[0]):
                curves.append(
                    _method_curve(f"{ens}/member{i}", "member", {}, r_members[i], r_gold, **args)
                )
            # Coste et al. (2023) report a single reward model averaged over training seeds:
            # one member's curve depends on the luck of its seed, the average does not.
            curves.append(
                _method_curve(f"{ens}/members_avg", "members_avg", {}, r_members, r_gold, **args)
            )
    if oracle:
        curves.append(_method_curve("oracle", "oracle", {}, r_gold, r_gold, **args))
    return curves


# --------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------


class BonStudyConfig(BaseModel):
    """Settings of a best-of-n study (pool, scoring, curves)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pool_size: int = Field(512, ge=1, description="N: completions sampled per prompt.")
    prompts_count: int | None = Field(
        None, ge=1, description="P: use the first P prompts (None: all of them)."
    )
    ns: list[int] | None = Field(
        None, description="Values of n, each in 1..pool_size (None: 1, 2, 4, …, N)."
    )
    max_new_tokens: int | None = Field(
        None, ge=1, description="Completion budget (None: the testbed's, else 64)."
    )
    temperature: float = Field(1.0, ge=0, description="Sampling temperature (0: greedy).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold.")
    seed: int = Field(0, description="Seeds the pool and the bootstrap.")
    batch_size: int = Field(
        256, ge=1, description="Rows sampled together (part of the pool's identity)."
    )
    chunk_size: int = Field(
        1024, ge=1, description="Rows per pool chunk file (the unit of resumption)."
    )
    score_batch_size: int = Field(256, ge=1, description="Completions per reward-model call.")
    add_special_tokens: bool = Field(
        False, description="Tokenize prompts with special tokens (BOS)."
    )
    aggregators: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_AGGREGATORS.items()},
        description="Ensemble aggregators (core.aggregate names) and their parameters.",
    )
    include_members: bool = Field(True, description="Also a curve per ensemble member.")
    standardize_members: bool = Field(
        True,
        description="Standardize each member over the pool before aggregating (removes the "
        "arbitrary Bradley-Terry offset of each seed; see core.aggregate.standardize_members).",
    )
    oracle: bool = Field(True, description="Also best-of-n picked by gold (the ceiling).")
    n_boot: int = Field(1000, ge=1, description="Bootstrap resamples over prompts.")
    alpha: float = Field(0.05, gt=0, lt=1, description="1 − confidence of the intervals.")
    samples_prompts: int = Field(
        5, ge=0, description="Prompts whose best-of-N picks go to samples.jsonl."
    )
    device: str = Field("cpu", description="cpu, cuda, cuda:1, …")

    @field_validator("ns")
    @classmethod
    def _ns_valid(cls, v: list[int] | None) -> list[int] | None:
        if v is not None:
            if not v:
                raise ValueError("expected at least one n")
            if any(n < 1 for n in v):
                raise ValueError(f"every n must be >= 1, got {v}")
            v = sorted(set(v))
        return v

    @field_validator("aggregators")
    @classmethod
    def _aggregators_valid(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for name, params in v.items():
            get_aggregator(name, **params)  # ValueError naming the aggregator or parameter
        return v

    @model_validator(mode="after")
    def _ns_within_pool(self) -> BonStudyConfig:
        if self.ns is not None and max(self.ns) > self.pool_size:
            raise ValueError(
                f"ns: n = {max(self.ns)} is larger than pool_size N = {self.pool_size}; "
                "best-of-n needs n <= N samples per prompt"
            )
        return self


@dataclass(frozen=True)
class BonStudyResult:
    curves: list[MethodCurve]
    summary: dict[str, Any]
    """The contents of summary.json."""
    out_dir: Path
    pool: Pool


def _json_safe(obj: Any) -> Any:
    """NaN and ±inf become null (strict JSON): an undefined value, e.g. an unbounded peak."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("goodhart-lab", "torch", "transformers", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


def _named(items, kind: str) -> dict[str, Any]:
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    items = list(items)
    labels = []
    for i, x in enumerate(items):
        if isinstance(x, RewardSource):
            labels.append(x.name)
        elif isinstance(x, str | os.PathLike):
            labels.append(Path(x).name or f"{kind}{i}")
        elif isinstance(x, Sequence) and x and isinstance(x[0], str | os.PathLike) and len(x) == 1:
            labels.append(Path(x[0]).name)
        else:
            labels.append(f"{kind}{i}")
    return dict(zip(_unique_names(labels), items, strict=True))


def run_bon_study(
    out_dir: str | os.PathLike,
    *,
    policy: str | os.PathLike | nn.Module,
    prompts: Sequence[str],
    gold: Any,
    proxies: Sequence[Any] | Mapping[str, Any] | None = None,
    ensembles: Sequence[Any] | Mapping[str, Any] | None = None,
    tokenizer=None,
    config: BonStudyConfig | None = None,
    pool_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> BonStudyResult:
    """Best-of-n study: build (or resume) the pool, score it, curves, fits, files, plot.

    Everything is resumable: the pool resumes at its first missing chunk, and scores
    cached beside the pool are reused when the reward and the pool are unchanged, so
    rerunning the same call after an interruption (or with one more proxy) only does the
    missing work.

    Args:
        out_dir: the run directory (created; files in it are replaced atomically).
        policy: the base policy: a directory, a cached hub name, or a causal-LM module
            (then pass ``tokenizer``).
        prompts: prompts to sample from; the first ``config.prompts_count`` are used.
        gold: the gold reward: a scorer with ``score`` and ``version`` (a testbed's gold),
            a reward-model directory, or a :class:`RewardSource`.
        proxies: single proxies: reward-model directories (or sources), a list (named by
            directory name) or a name -> source mapping.
        ensembles: each a list of member directories, or an ensemble directory written by
            ``train_ensemble`` (``ensemble.json``); a list or a name -> members mapping.
        tokenizer: the policy's tokenizer (default: loaded from the policy directory).
        config: :class:`BonStudyConfig`.
        pool_dir: where the pool and its score caches live (default ``out_dir/pool``); share
            one between studies to score new proxies without resampling.
        progress: progress bars.

    Returns:
        :class:`BonStudyResult` with the curves and the summary.
    """
    config = config or BonStudyConfig()
    out_dir = Path(out_dir)
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts: expected at least one prompt, got none")
    if config.prompts_count is not None:
        if config.prompts_count > len(prompts):
            raise ValueError(
                f"prompts_count: asked for {config.prompts_count} prompts, only {len(prompts)} given"
            )
        prompts = prompts[: config.prompts_count]
    proxies = _named(proxies, "proxy")
    ensembles = _named(ensembles, "ensemble")
    if not proxies and not ensembles:
        raise ValueError("expected at least one proxy or ensemble to pick with")
    device = config.device
    proxy_sources = {k: _as_source(v, device=device, name=k) for k, v in proxies.items()}
    ensemble_sources: dict[str, list[RewardSource]] = {}
    for name, members in ensembles.items():
        if isinstance(members, str | os.PathLike):
            members = ensemble_member_dirs(members)
        members = list(members)
        if not members:
            raise ValueError(f"ensembles[{name!r}]: expected at least one member")
        ensemble_sources[name] = [
            _as_source(m, device=device, name=f"{name}.member{i}") for i, m in enumerate(members)
        ]
    gold_source = _as_source(gold, device=device, name="gold")

    started = dt.datetime.now(dt.UTC).isoformat()
    t0 = time.perf_counter()
    manifest = {
        "study": "bon",
        "metrics_version": METRICS_VERSION,
        "versions": _versions(),
        "seed": config.seed,
        "host": platform.node(),
        "start": started,
        "status": "running",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "manifest.json", manifest)

    model, tokenizer, policy_id = load_policy(policy, tokenizer, device=device)
    policy_name = policy_id["name"]
    # The pool's policy key as pools have always recorded it.
    policy_key = (
        policy_id["fingerprint"]
        if isinstance(policy, nn.Module)
        else f"files:{policy_id['fingerprint']}"
    )
    max_new_tokens = config.max_new_tokens or 64
    import yaml

    resolved = {
        "study": "bon",
        "config": config.model_dump(),
        "max_new_tokens": max_new_tokens,
        "policy": policy_name,
        "prompts": len(prompts),
        "gold": {"name": gold_source.name, "key": gold_source.key},
        "proxies": {k: s.key for k, s in proxy_sources.items()},
        "ensembles": {k: [s.key for s in v] for k, v in ensemble_sources.items()},
        "pool_dir": str(pool_dir or out_dir / "pool"),
    }
    atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))

    timings = {}
    try:
        t = time.perf_counter()
        pool = build_pool(
            Path(pool_dir) if pool_dir is not None else out_dir / "pool",
            model,
            tokenizer,
            prompts,
            config.pool_size,
            max_new_tokens=max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            seed=config.seed,
            chunk_size=config.chunk_size,
            batch_size=config.batch_size,
            add_special_tokens=config.add_special_tokens,
            policy_fingerprint=policy_key,
            progress=progress,
        )
        timings["pool_s"] = time.perf_counter() - t
        del model

        t = time.perf_counter()
        kw = dict(batch_size=config.score_batch_size, device=device, progress=progress)
        r_gold = score_pool(pool, gold_source, **kw)
        r_proxies = {k: score_pool(pool, s, **kw) for k, s in proxy_sources.items()}
        r_ensembles = {
            k: torch.stack([score_pool(pool, s, **kw) for s in v])
            for k, v in ensemble_sources.items()
        }
        timings["score_s"] = time.perf_counter() - t

        t = time.perf_counter()
        curves = bon_curves(
            r_gold,
            r_proxies,
            r_ensembles,
            config.ns,
            aggregators=config.aggregators,
            lengths=torch.from_numpy(pool.num_tokens),
            include_members=config.include_members,
            oracle=config.oracle,
            standardize=config.standardize_members,
            n_boot=config.n_boot,
            alpha=config.alpha,
            seed=config.seed,
        )
        timings["curves_s"] = time.perf_counter() - t

        records = [_json_safe(rec) for c in curves for rec in c.records()]
        atomic_write_text(
            out_dir / "metrics.jsonl",
            "".join(json.dumps(r, allow_nan=False) + "\n" for r in records),
        )
        summary = {
            "metrics_version": METRICS_VERSION,
            "gold": {"name": gold_source.name, "key": gold_source.key},
            "prompts": pool.num_prompts,
            "pool_size": pool.pool_size,
            "kl": "analytic best-of-n bound log n − (n − 1)/n (an upper bound on the KL)",
            "gold_relative_to": "the base policy's mean gold per prompt (0 at n = 1)",
            "confidence": 1 - config.alpha,
            "methods": {c.method: c.summary for c in curves},
        }
        summary = _json_safe(summary)
        atomic_write_json(out_dir / "summary.json", summary)
        picks = _picking_rewards(
            r_proxies, r_ensembles, config.aggregators, config.standardize_members
        )
        _write_samples(out_dir / "samples.jsonl", pool, r_gold, picks, config.samples_prompts)

        from goodhartlab.report.plots import plot_bon_curves

        plot_bon_curves(
            records,
            out_dir / "plots" / "bon",
            title=f"best-of-n, P = {pool.num_prompts} prompts, N = {pool.pool_size}",
        )
    except BaseException as e:
        manifest.update(
            status="failed",
            error=f"{type(e).__name__}: {e}",
            end=dt.datetime.now(dt.UTC).isoformat(),
        )
        atomic_write_json(out_dir / "manifest.json", manifest)
        raise
    timings["total_s"] = time.perf_counter() - t0
    manifest.update(status="complete", end=dt.datetime.now(dt.UTC).isoformat(), timings=timings)
    atomic_write_json(out_dir / "manifest.json", manifest)
    return BonStudyResult(curves=curves, summary=summary, out_dir=out_dir, pool=pool)


def _aggregates(
    r_members: Tensor, aggregators: Mapping[str, Mapping[str, float]], standardize: bool
) -> dict[str, Tensor]:
    """An ensemble's reward under each aggregator. (M, P, N) -> name -> (P, N)."""
    flat = r_members.reshape(r_members.shape[0], -1)  # (M, P·N)
    if standardize:
        flat = standardize_members(flat)  # once per ensemble, shared by every aggregator
    return {
        agg: get_aggregator(agg, **params)(flat).reshape(r_members.shape[1:])
        for agg, params in aggregators.items()
    }


def _picking_rewards(
    r_proxies: Mapping[str, Tensor],
    r_ensembles: Mapping[str, Tensor],
    aggregators: Mapping[str, Mapping[str, float]],
    standardize: bool = True,
) -> dict[str, Tensor]:
    """The reward each non-member method picks by. Shape: (P, N) each."""
    out = dict(r_proxies)
    for ens, r_members in r_ensembles.items():
        for agg, r in _aggregates(r_members, aggregators, standardize).items():
            out[f"{ens}/{agg}"] = r
    return out


def _write_samples(
    path: Path, pool: Pool, r_gold: Tensor, picks: Mapping[str, Tensor], n_prompts: int
) -> None:
    """The best-of-N completion of each method for the first prompts, with its scores."""
    lines = []
    for p in range(min(n_prompts, pool.num_prompts)):
        j0 = 0  # sample 0 is a plain base-policy sample
        lines.append(
            {
                "prompt": pool.prompts[p],
                "method": "base",
                "completion": pool.completions[p][j0],
                "gold": float(r_gold[p, j0]),
            }
        )
        for method, r in picks.items():
            j = int(torch.argmax(r[p]))
            lines.append(
                {
                    "prompt": pool.prompts[p],
                    "method": method,
                    "n": pool.pool_size,
                    "completion": pool.completions[p][j],
                    "gold": float(r_gold[p, j]),
                    "proxy": float(r[p, j]),
                }
            )
        j = int(torch.argmax(r_gold[p]))
        lines.append(
            {
                "prompt": pool.prompts[p],
                "method": "oracle",
                "n": pool.pool_size,
                "completion": pool.completions[p][j],
                "gold": float(r_gold[p, j]),
            }
        )
    atomic_write_text(path, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))


def picks_at_n(
    out_dir: str | os.PathLike,
    ns: Mapping[str, Sequence[int]],
    prompts: int = 2,
) -> list[dict[str, Any]]:
    """The completion each method picks with best-of-n, for chosen n, from a finished study.

    One realization of best-of-n per prompt: the argmax of the method's picking reward over
    the first n samples of the pool (the samples are i.i.d., so the first n are a best-of-n
    draw, and the picks are nested: n = 1 is sample 0, the base policy's sample, for every
    method). Reads ``out_dir``'s pool and cached scores; nothing is sampled or scored.

    Args:
        out_dir: the run directory of :func:`run_bon_study`.
        ns: method -> the n to show (methods as in metrics.jsonl: a proxy's name,
            ``<ensemble>/<aggregator>``, ``oracle``; members are not picking methods).
        prompts: how many prompts, from the first.

    Returns:
        One object per (prompt, method, n): ``prompt``, ``prompt_index``, ``method``, ``n``,
        ``sample`` (its index in the pool), ``completion``, ``gold`` (absolute) and ``proxy``
        (the picking reward; absent for the oracle). Empty when the pool or a score cache
        is missing (e.g. a copied run directory).
    """
    import yaml

    out_dir = Path(out_dir)
    try:
        resolved = yaml.safe_load((out_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return []
    pool_dir = Path(resolved.get("pool_dir") or out_dir / "pool")
    if pool_status(pool_dir) is not None:  # the recorded path may be relative to elsewhere
        pool_dir = out_dir / "pool"
    try:
        pool = load_pool(pool_dir)
    except PoolError:
        return []

    def scores(name: str, key: str) -> Tensor | None:
        source = RewardSource(name, key, load=lambda: None)
        return _read_scores(_score_path(pool, source), pool, source)

    r_gold = scores("gold", resolved["gold"]["key"])
    r_proxies = {k: scores(k, key) for k, key in resolved.get("proxies", {}).items()}
    r_members = {
        k: [scores(f"{k}.member{i}", key) for i, key in enumerate(keys)]
        for k, keys in resolved.get("ensembles", {}).items()
    }
    if (
        r_gold is None
        or any(r is None for r in r_proxies.values())
        or any(r is None for rs in r_members.values() for r in rs)
    ):
        return []
    picks = _picking_rewards(
        r_proxies,
        {k: torch.stack(rs) for k, rs in r_members.items()},
        resolved["config"]["aggregators"],
        # runs written before the option existed aggregated raw member scores
        resolved["config"].get("standardize_members", False),
    )
    picks["oracle"] = r_gold
    out = []
    for p in range(min(prompts, pool.num_prompts)):
        for method, method_ns in ns.items():
            if method not in picks:
                continue
            r = picks[method]
            for n in method_ns:
                if not 1 <= n <= pool.pool_size:
                    raise ValueError(f"ns[{method!r}]: n must be in 1..{pool.pool_size}, got {n}")
                j = int(torch.argmax(r[p, :n]))
                line = {
                    "prompt": pool.prompts[p],
                    "prompt_index": p,
                    "method": method,
                    "n": int(n),
                    "sample": j,
                    "completion": pool.completions[p][j],
                    "gold": float(r_gold[p, j]),
                }
                if method != "oracle":
                    line["proxy"] = float(r[p, j])
                out.append(line)
    return out
