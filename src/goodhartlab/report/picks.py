"""Best-of-n picks of a finished study, for the report: the completion each method picks.

Read from the study's pool and its cached scores (:mod:`goodhartlab.optimize.scores`);
nothing is sampled or scored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from goodhartlab.measure.bon_curves import picking_rewards
from goodhartlab.optimize.pool import PoolError, load_pool, pool_status
from goodhartlab.optimize.scores import RewardSource, cached_scores

__all__ = ["picks_at_n"]


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
        out_dir: the run directory of :func:`goodhartlab.optimize.bon.run_bon_study`.
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
        return cached_scores(pool, RewardSource(name, key, load=lambda: None))

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
    picks = picking_rewards(
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
