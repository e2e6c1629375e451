"""The best-of-n overoptimization study: score a pool once, curves for every n and method.

Best-of-n needs no training: sample N completions per prompt from the base policy once
(:mod:`goodhartlab.optimize.pool`), score them once with gold and with every proxy and
ensemble member (:func:`goodhartlab.optimize.scores.score_pool`, cached beside the pool),
and the unbiased estimator (:func:`goodhartlab.core.bon.expected_best_of_n`, through
:func:`goodhartlab.measure.bon_curves.bon_curves`) gives gold and proxy of best-of-n for
every n ≤ N and every way of picking — each single proxy, each ensemble aggregator
(:mod:`goodhartlab.core.aggregate`), each member, and the gold itself (the oracle) —
against KL_bon(n) (Gao, Schulman, Hilton 2023, arXiv 2210.10760; Coste et al. 2023,
arXiv 2310.02743).

:func:`run_bon_study` does all of it and writes a run directory (DESIGN.md)::

    out_dir/
      config.yaml  manifest.json  metrics.jsonl  summary.json  samples.jsonl
      plots/bon.png  plots/bon.svg  (with a ``plot`` callback)
      pool/        samples/ (the pool) and scores/ (the reward caches), unless ``pool_dir``
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor, nn

from goodhartlab.artifacts import atomic_write_json, atomic_write_text
from goodhartlab.core.aggregate import get_aggregator
from goodhartlab.measure.bon_curves import (
    DEFAULT_AGGREGATORS,
    MethodCurve,
    bon_curves,
    picking_rewards,
)
from goodhartlab.models.loading import load_policy
from goodhartlab.models.prompts import without_chat_template
from goodhartlab.optimize.pool import Pool, build_pool
from goodhartlab.optimize.rundir import RunDir
from goodhartlab.optimize.scores import RewardSource, as_reward_source, score_pool
from goodhartlab.rewards.ensemble import ensemble_member_dirs

__all__ = ["METRICS_VERSION", "BonStudyConfig", "BonStudyResult", "run_bon_study"]

#: Bump on any change of what metrics.jsonl / summary.json fields mean.
METRICS_VERSION = "bon-study/v1"


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
    chat_template: bool = Field(
        True,
        description="Prompts go through the tokenizer's chat template when it has one (an "
        "instruct policy, as TRL feeds conversational data); false: raw prompts.",
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


def _study_prompts(prompts: Sequence[str], count: int | None) -> list[str]:
    """The study's prompts: the first ``count`` (all when None), at least one."""
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts: expected at least one prompt, got none")
    if count is not None:
        if count > len(prompts):
            raise ValueError(f"prompts_count: asked for {count} prompts, only {len(prompts)} given")
        prompts = prompts[:count]
    return prompts


def _sources(gold, proxies, ensembles, device: str):
    """(gold, {proxy: source}, {ensemble: [member sources]}): what the pool is scored with."""
    proxies = _named(proxies, "proxy")
    ensembles = _named(ensembles, "ensemble")
    if not proxies and not ensembles:
        raise ValueError("expected at least one proxy or ensemble to pick with")
    proxy_sources = {k: as_reward_source(v, device=device, name=k) for k, v in proxies.items()}
    ensemble_sources: dict[str, list[RewardSource]] = {}
    for name, members in ensembles.items():
        if isinstance(members, str | os.PathLike):
            members = ensemble_member_dirs(members)
        members = list(members)
        if not members:
            raise ValueError(f"ensembles[{name!r}]: expected at least one member")
        ensemble_sources[name] = [
            as_reward_source(m, device=device, name=f"{name}.member{i}")
            for i, m in enumerate(members)
        ]
    return as_reward_source(gold, device=device, name="gold"), proxy_sources, ensemble_sources


def _score_all(pool: Pool, gold_source, proxy_sources, ensemble_sources, **kw):
    """Gold (P, N), each proxy (P, N) and each ensemble's members (M, P, N) on the pool
    (from the score caches where they exist)."""
    r_gold = score_pool(pool, gold_source, **kw)
    r_proxies = {k: score_pool(pool, s, **kw) for k, s in proxy_sources.items()}
    r_ensembles = {
        k: torch.stack([score_pool(pool, s, **kw) for s in v]) for k, v in ensemble_sources.items()
    }
    return r_gold, r_proxies, r_ensembles


def _write_results(
    out_dir: Path, curves, pool: Pool, gold_source, config, r_gold, r_proxies, r_ensembles, plot
) -> dict[str, Any]:
    """metrics.jsonl, summary.json, samples.jsonl and the plot; returns the summary."""
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
    picks = picking_rewards(r_proxies, r_ensembles, config.aggregators, config.standardize_members)
    _write_samples(out_dir / "samples.jsonl", pool, r_gold, picks, config.samples_prompts)

    if plot is not None:
        plot(
            records,
            out_dir / "plots" / "bon",
            title=f"best-of-n, P = {pool.num_prompts} prompts, N = {pool.pool_size}",
        )
    return summary


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
    plot: Callable[..., Any] | None = None,
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
        plot: draws the curves, called as ``plot(records, out_dir / "plots" / "bon",
            title=...)`` with the metrics.jsonl records (e.g.
            ``goodhartlab.report.plots.plot_bon_curves``, which writes ``bon.png`` and
            ``bon.svg``); None: no plot. A callback, so that the loops do not import the
            report layer above them.
        progress: progress bars.

    Returns:
        :class:`BonStudyResult` with the curves and the summary.
    """
    config = config or BonStudyConfig()
    out_dir = Path(out_dir)
    prompts = _study_prompts(prompts, config.prompts_count)
    device = config.device
    gold_source, proxy_sources, ensemble_sources = _sources(gold, proxies, ensembles, device)

    t0 = time.perf_counter()
    model, tokenizer, policy_id = load_policy(policy, tokenizer, device=device)
    if not config.chat_template:
        tokenizer = without_chat_template(tokenizer)
    policy_name = policy_id["name"]
    # The pool's policy key as pools have always recorded it.
    policy_key = (
        policy_id["fingerprint"]
        if isinstance(policy, nn.Module)
        else f"files:{policy_id['fingerprint']}"
    )
    max_new_tokens = config.max_new_tokens or 64
    resolved = {
        "study": "bon",
        "config": config.model_dump(mode="json"),
        "max_new_tokens": max_new_tokens,
        "policy": policy_name,
        "prompts": len(prompts),
        "gold": {"name": gold_source.name, "key": gold_source.key},
        "proxies": {k: s.key for k, s in proxy_sources.items()},
        "ensembles": {k: [s.key for s in v] for k, v in ensemble_sources.items()},
        "pool_dir": str(pool_dir or out_dir / "pool"),
    }
    # The pool first: one of other settings in the directory is refused before the run
    # directory is taken over, so the finished run's config.yaml and manifest stay as they are.
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
    timings = {"pool_s": time.perf_counter() - t}
    del model
    rundir = RunDir.open(
        out_dir,
        kind="bon",
        config=resolved,
        resume=False,
        replace=True,
        seed=config.seed,
        metrics_version=METRICS_VERSION,
    )
    try:
        t = time.perf_counter()
        kw = dict(batch_size=config.score_batch_size, device=device, progress=progress)
        r_gold, r_proxies, r_ensembles = _score_all(
            pool, gold_source, proxy_sources, ensemble_sources, **kw
        )
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

        summary = _write_results(
            out_dir, curves, pool, gold_source, config, r_gold, r_proxies, r_ensembles, plot
        )
    except BaseException as e:
        rundir.fail(e)
        raise
    timings["total_s"] = time.perf_counter() - t0
    rundir.finish(timings=timings)
    return BonStudyResult(curves=curves, summary=summary, out_dir=out_dir, pool=pool)


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
