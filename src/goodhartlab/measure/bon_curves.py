"""Best-of-n curves from a scored pool: gold and proxy of every way of picking, against KL.

Given the gold and proxy rewards of N samples per prompt (:mod:`goodhartlab.optimize.scores`),
the unbiased estimator (:func:`goodhartlab.core.bon.expected_best_of_n`) gives gold and proxy
of best-of-n for every n ≤ N and every way of picking — each single proxy, each ensemble
aggregator (:mod:`goodhartlab.core.aggregate`), each member, and the gold itself (the
oracle) — against KL_bon(n) (Gao, Schulman, Hilton 2023, arXiv 2210.10760; Coste et al. 2023,
arXiv 2310.02743), with bootstrap intervals over prompts, the fitted law and the drop from
the peak (:class:`MethodCurve`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from goodhartlab.core.aggregate import get_aggregator, standardize_members
from goodhartlab.core.bon import expected_best_of_n
from goodhartlab.core.kl import bon_kl
from goodhartlab.core.scaling import fit_bon_law, overoptimization, peak_drop_intervals
from goodhartlab.core.stats import bootstrap_ci

__all__ = [
    "DEFAULT_AGGREGATORS",
    "MethodCurve",
    "bon_curves",
    "default_ns",
    "member_aggregates",
    "picking_rewards",
]

#: Ensemble aggregators of the study and their parameters (Coste et al. 2023: λ = 0.5 for
#: best-of-n; Eisenstein et al. 2023: median, mean − 1 std).
DEFAULT_AGGREGATORS: dict[str, dict[str, float]] = {
    "mean": {},
    "wco": {},
    "uwo": {"lam": 0.5},
    "median": {},
    "mean_minus_std": {"k": 1.0},
}


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
        ci = peak_drop_intervals(gold_rel, n_boot, alpha, seed)
        summary["drop_lo"], summary["drop_hi"] = ci.lo, ci.hi
        summary["drop_paired_lo"], summary["drop_paired_hi"] = ci.paired_lo, ci.paired_hi
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
        for agg, r in member_aggregates(r_members, aggregators, standardize).items():
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


def member_aggregates(
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


def picking_rewards(
    r_proxies: Mapping[str, Tensor],
    r_ensembles: Mapping[str, Tensor],
    aggregators: Mapping[str, Mapping[str, float]],
    standardize: bool = True,
) -> dict[str, Tensor]:
    """The reward each non-member method picks by. Shape: (P, N) each."""
    out = dict(r_proxies)
    for ens, r_members in r_ensembles.items():
        for agg, r in member_aggregates(r_members, aggregators, standardize).items():
            out[f"{ens}/{agg}"] = r
    return out
