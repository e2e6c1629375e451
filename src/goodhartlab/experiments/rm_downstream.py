"""``goodhart rm-downstream``: which reward-model benchmark predicts downstream gold?

Issue 15, item 3. Over proxies of varied quality on toy_text,

* the default study's proxies (its 5-member pretrain-seed ensemble, 6,000 pairs at 25 %
  noise, small backbones; built into the cache if missing), and
* proxies trained here on the first ``n`` of the study's pairs, relabelled at noise ``q``,
  from the backbone of each size toy_text offers (``grid``: ``n x q`` or ``n x q @ size``),
  with the study's recipe (cached under the testbed's ``rm-downstream/``),

it measures every benchmark score: accuracy on the last 1,000 of the study's pairs (never
trained on by the grid) against the noise-free labels (``clean_acc``) and the noisy ones
(``noisy_acc``); the toy_text reward benchmark (``goodhart reward-bench``): its total, each
section, each subset, ECE and Brier over its rows, the reward-length Spearman (``rho_len``);
and ensemble disagreement (:func:`disagreement`): each proxy with ``siblings`` more reward
models trained on the same pairs from the same backbone with other fine-tune seeds
(Eisenstein et al. 2023's fine-tune ensembles), ``core.detect.member_disagreement`` of the
members' scores on the base policy's samples (``disagreement``) and on the proxy's own
best-of-pool pick of each prompt (``disagreement_top``), both standardized on the base
policy's samples.

Downstream gold: best-of-n at each ``ns`` on one shared pool (unbiased estimator,
``core.bon``) and, with ``rl_steps``, the final gold of GRPO runs (8 x 8 rollouts, lr 1e-4,
KL 0.01), one per ``rl_seeds``, averaged over the seeds (``rl_gold``; the seed spread beside
it), on ``rl_proxies`` of the proxies (default 12) spread evenly over the list. Then Spearman
and Kendall (tau-b) correlations of every score with every downstream gold across the proxies
that have it, with percentile bootstrap intervals over proxies
(``core.rm_metrics.rank_correlation_interval``). Results record ``DOWNSTREAM_VERSION``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from goodhartlab.artifacts import atomic_write_json, atomic_write_text

__all__ = [
    "DOWNSTREAM_VERSION",
    "ProxySpec",
    "correlations",
    "disagreement",
    "format_correlations",
    "parse_grid",
    "relabelled",
    "rl_proxy_indices",
    "run_rm_downstream",
    "seed_summary",
    "summarize",
]

DOWNSTREAM_VERSION = "rm-downstream/v2"

#: The trained proxies of the default run: pair counts x label-noise rates, on the small
#: backbone unless ``@size`` says otherwise.
DEFAULT_GRID = ("50x0.1", "150x0.05", "150x0.4", "500x0.05", "500x0.4", "1500x0.05",
                "1500x0.4", "4000x0.0", "4000x0.05", "4000x0.4",
                "150x0.05@medium", "1500x0.05@medium", "4000x0.4@medium",
                "150x0.05@large", "1500x0.05@large", "4000x0.4@large")  # fmt: skip
#: Reward models besides each proxy in its disagreement ensemble (fine-tune seeds).
DEFAULT_SIBLINGS = 2
#: The seeds of each proxy's RL runs; ``rl_gold`` is their mean.
DEFAULT_RL_SEEDS = (0, 1, 2)
#: How many proxies get RL runs by default (spread evenly over the list; ``rl_proxies``):
#: 12 x 3 seeds keeps the default run inside 30 minutes of one core (BENCHMARKS.md).
DEFAULT_RL_PROXIES = 12
#: Sibling j of a proxy trained with seed s is trained with seed s + j * SIBLING_SEED_STEP.
SIBLING_SEED_STEP = 1000
HELD_OUT_PAIRS = 1000
#: Row keys that are not benchmark measures (the downstream gold and bookkeeping).
_NOT_MEASURES = ("proxy", "size", "seconds", "cpu_seconds", "bon_gold_", "rl_")


@dataclass(frozen=True)
class ProxySpec:
    """A proxy to train: the first ``pairs`` training pairs, relabelled at ``noise``, from the
    backbone of ``size``."""

    pairs: int
    noise: float
    size: str = "small"

    @property
    def name(self) -> str:
        size = "" if self.size == "small" else f"{self.size}-"
        return f"trained-{size}n{self.pairs}-noise{self.noise:g}"


def parse_grid(
    items: Sequence[str], max_pairs: int | None = None, sizes: Sequence[str] | None = None
) -> list[ProxySpec]:
    """``["500x0.05", "1500x0.4@large", ...]`` -> specs; each bad item named (``--grid``)."""
    out = []
    for item in items:
        body, _, size = item.partition("@")
        try:
            n_text, q_text = body.split("x")
            spec = ProxySpec(int(n_text), float(q_text), size or "small")
        except ValueError:
            raise ValueError(
                f"--grid: {item!r}: expected PAIRSxNOISE or PAIRSxNOISE@SIZE, e.g. 500x0.05"
            ) from None
        if spec.pairs < 2 or (max_pairs is not None and spec.pairs > max_pairs):
            limit = f" and at most {max_pairs} (the training pairs)" if max_pairs else ""
            raise ValueError(f"--grid: {item!r}: pairs must be at least 2{limit}")
        if not 0 <= spec.noise < 0.5:
            raise ValueError(f"--grid: {item!r}: noise must be in [0, 0.5)")
        if sizes is not None and spec.size not in sizes:
            raise ValueError(f"--grid: {item!r}: size must be one of {', '.join(sizes)}")
        out.append(spec)
    return out


def _swapped(pair):
    return pair.model_copy(update={
        "chosen": pair.rejected, "rejected": pair.chosen,
        "gold_chosen": pair.gold_rejected, "gold_rejected": pair.gold_chosen,
    })  # fmt: skip


def relabelled(pairs: Sequence, noise: float, seed: int) -> list:
    """The pairs with their recorded flips (``meta["flipped"]``) undone and a fresh ``noise``
    fraction flipped (each pair independently), ``meta["flipped"]`` set to match."""
    rng = np.random.default_rng(seed)
    out = []
    for pair in pairs:
        clean = _swapped(pair) if pair.meta.get("flipped") else pair
        flip = bool(rng.random() < noise)
        labelled = _swapped(clean) if flip else clean
        out.append(labelled.model_copy(update={"meta": {**labelled.meta, "flipped": flip}}))
    return out


def disagreement(r_members: np.ndarray, n_prompts: int) -> dict[str, float]:
    """Ensemble disagreement of a proxy and its siblings on the base policy's samples.

    ``core.detect.member_disagreement`` (Coste et al. 2023, arXiv 2310.02743; Eisenstein et
    al. 2023, arXiv 2312.09244): each member standardized on all the base-policy samples,
    then the mean over items of the members' population standard deviation,

        disagreement      = D(all samples),
        disagreement_top  = D(the sample member 0 (the proxy) scores highest, per prompt),

    the second where best-of-n optimization goes. Fewer than 2 members: NaN.

    Args:
        r_members: scores of the proxy (row 0) and its siblings on the pool, prompt-major.
            Shape: (M, P * N).
        n_prompts: P.
    """
    from goodhartlab.core.detect import member_disagreement

    r = np.asarray(r_members, dtype=np.float64)
    assert r.ndim == 2 and r.shape[1] % n_prompts == 0, (r.shape, n_prompts)
    if r.shape[0] < 2:
        return {"disagreement": math.nan, "disagreement_top": math.nan}
    per_prompt = r.shape[1] // n_prompts
    top = np.argmax(r[0].reshape(n_prompts, per_prompt), axis=1)
    top += per_prompt * np.arange(n_prompts)
    return {
        "disagreement": member_disagreement(r, r),
        "disagreement_top": member_disagreement(r[:, top], r),
    }


def seed_summary(values: Sequence[float]) -> dict[str, float]:
    """Mean over seeds, the sample standard deviation (ddof 1) and the Student-t 95 %
    interval of the mean (``core.stats.t_interval``; NaN with one seed)."""
    from goodhartlab.core.stats import t_interval

    x = np.asarray(values, dtype=np.float64)
    assert x.ndim == 1 and x.size >= 1, x.shape
    lo, hi = t_interval(x)
    sd = float(x.std(ddof=1)) if x.size > 1 else math.nan
    return {"mean": float(x.mean()), "sd": sd, "lo": lo, "hi": hi}


def rl_proxy_indices(n_proxies: int, rl_proxies: int | None) -> list[int]:
    """The proxies that get RL runs: all (None), else ``rl_proxies`` spread evenly over the
    list (first and last included), chosen by position only (no score, no gold)."""
    if rl_proxies is None or rl_proxies >= n_proxies:
        return list(range(n_proxies))
    return sorted(set(np.linspace(0, n_proxies - 1, rl_proxies).round().astype(int).tolist()))


def correlations(
    measures: dict[str, np.ndarray], targets: dict[str, np.ndarray], n_boot: int, seed: int = 0
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``[measure][target][spearman|kendall] = {estimate, lo, hi}`` over the reward models
    whose target is finite (RL gold may be measured on a subset); measures that are constant
    or undefined for some model are left out."""
    from goodhartlab.core.rm_metrics import rank_correlation_interval

    out: dict = {}
    for m, x in measures.items():
        if not np.isfinite(x).all() or np.ptp(x) == 0:
            continue
        for t, y in targets.items():
            keep = np.isfinite(y)
            out.setdefault(m, {})[t] = {
                method: dict(zip(("estimate", "lo", "hi"),
                                 rank_correlation_interval(x[keep], y[keep], method, n_boot,
                                                           seed=seed),
                                 strict=True))
                for method in ("spearman", "kendall")
            }  # fmt: skip
    return out


def format_correlations(result: dict[str, Any]) -> str:
    """The table ``goodhart rm-downstream`` prints: Spearman [95 % interval] / Kendall of
    every measure with every target, strongest (with the first target) first."""
    corr = result["correlations"]
    targets = list(next(iter(corr.values())))
    order = sorted(corr, key=lambda m: -abs(corr[m][targets[0]]["spearman"]["estimate"]))
    width = max(len(m) for m in order)

    def num(x: float | None) -> str:
        return "  nan" if x is None or not math.isfinite(x) else f"{x:+.2f}"

    lines = [f"{'measure':{width}s}  " + "  ".join(f"{t:>29s}" for t in targets)]
    for m in order:
        cells = []
        for t in targets:
            s, k = corr[m][t]["spearman"], corr[m][t]["kendall"]["estimate"]
            cells.append(f"{num(s['estimate'])} [{num(s['lo'])}, {num(s['hi'])}] / {num(k)}")
        lines.append(f"{m:{width}s}  " + "  ".join(c.rjust(29) for c in cells))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# The study, step by step
# --------------------------------------------------------------------------------------


@dataclass
class _World:
    """What every proxy is measured on: the testbed, the study's pairs, the reward bench and
    the shared best-of-n pool with its gold."""

    tb: Any
    study: Any
    pairs_path: Path
    held_out: list
    train_pool: list
    bench_rows: Any
    sections: Any
    bench_name: str
    pool_prompts: list[str]
    pool_completions: list[str]
    gold: np.ndarray  # Shape: (P, N).


@dataclass
class _Proxy:
    """A reward model under study and its siblings (the same pairs, backbone and recipe,
    other fine-tune seeds)."""

    name: str
    size: str
    model: Any
    siblings: list


def _check_settings(out: Path, ns: Sequence[int], pool_size: int, **positive: int) -> list[int]:
    """Refuse bad settings before anything is built; the sorted, distinct ``ns``."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} is a file; expected a directory")
    ns = sorted(set(int(n) for n in ns))
    if not ns or ns[0] < 1 or ns[-1] > pool_size:
        raise ValueError(f"--ns: expected values in [1, --pool-size = {pool_size}], got {ns}")
    for flag, value in positive.items():
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')}: expected >= 1, got {value}")
    return ns


def _build_world(study, out: Path, per_subset: int, prompts: int, pool_size: int) -> _World:
    """The testbed, the study's pairs (the last 1,000 held out), the reward bench, and the
    pool of ``pool_size`` base-policy samples on each of ``prompts`` held-out prompts."""
    from goodhartlab.data import read_pairs
    from goodhartlab.data.bench_rows import bench_rows_from_records
    from goodhartlab.experiments.proxies import preference_pairs
    from goodhartlab.experiments.study import make_testbed
    from goodhartlab.measure.rm_eval import SectionMap
    from goodhartlab.optimize.pool import build_pool
    from goodhartlab.testbeds.toy_text.reward_bench import build_reward_bench, section_map

    p = study.proxies
    tb = make_testbed(study, progress=False)
    pairs_path = Path(preference_pairs(tb, Path(tb.root) / "proxies", pairs=p.pairs,
                                       noise=p.noise, seed=study.seed, progress=False))  # fmt: skip
    pairs = read_pairs(pairs_path)
    bench = build_reward_bench(per_subset, seed=0, testbed_seed=tb.config.seed)
    sm = section_map(bench)
    eval_prompts = tb.eval_prompts[:prompts]
    pool = build_pool(out / "work" / "pool", tb.load_policy("cpu"), tb.tokenizer, eval_prompts,
                      pool_size, max_new_tokens=tb.max_new_tokens, seed=study.seed,
                      chunk_size=pool_size)  # fmt: skip
    flat_prompts, flat_completions = pool.flat()
    gold = tb.gold(flat_prompts, flat_completions).double().numpy().reshape(len(eval_prompts), -1)
    return _World(
        tb=tb, study=study, pairs_path=pairs_path,
        held_out=pairs[-HELD_OUT_PAIRS:], train_pool=pairs[:-HELD_OUT_PAIRS],
        bench_rows=bench_rows_from_records(bench, "toy_text reward bench"),
        sections=SectionMap(sm["name"], sm["example_counts"], sm["subset_mapping"]),
        bench_name=sm["name"], pool_prompts=flat_prompts, pool_completions=flat_completions,
        gold=gold,
    )  # fmt: skip


def _cached_reward_model(world: _World, pairs: Callable[[], list], backbone: str, config,
                         key: dict):  # fmt: skip
    """A reward model trained on ``pairs()`` from ``backbone`` with ``config``, cached under
    the testbed's ``rm-downstream/`` by ``key`` (what names the pairs) and the settings; a
    cached one is kept when its checksums verify and its recorded settings match."""
    from goodhartlab.artifacts import verify
    from goodhartlab.rewards import RewardModel
    from goodhartlab.train.rm import RM_INFO_FILE, train_reward_model

    settings = {**key, "backbone": backbone, "config": config.model_dump()}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    out = Path(world.tb.root) / "rm-downstream" / digest
    if verify(out) is None and (out / RM_INFO_FILE).is_file():
        info = json.loads((out / RM_INFO_FILE).read_text())
        if info.get("config") == settings["config"]:
            return RewardModel.from_pretrained(out)
    eval_pairs = [] if config.eval_fraction == 0 else None
    result = train_reward_model(pairs(), world.tb.tokenizer, backbone, config,
                                eval_pairs=eval_pairs, out_dir=out, progress=False)  # fmt: skip
    return result.reward_model


def _sibling_configs(config, siblings: int) -> list:
    return [
        config.model_copy(update={"seed": config.seed + j * SIBLING_SEED_STEP})
        for j in range(1, siblings + 1)
    ]


def _study_proxies(world: _World, siblings: int) -> list[_Proxy]:
    """The default study's members (trained into the cache if missing), each with
    ``siblings`` reward models of its own recipe, backbone and pairs, other seeds."""
    from goodhartlab.data import read_pairs
    from goodhartlab.experiments.proxies import train_proxies
    from goodhartlab.rewards import RewardModel
    from goodhartlab.train.rm import RM_INFO_FILE, RMTrainConfig

    study, p = world.study, world.study.proxies
    ps = train_proxies(world.tb, pairs=p.pairs, noise=p.noise, size=p.size,
                       seeds=tuple(p.seeds), pretrain_seeds=p.pretrain_seeds, epochs=p.epochs,
                       lr=p.lr, seed=study.seed, device=study.device, progress=False)  # fmt: skip
    proxies = []
    for path in ps.paths:
        info = json.loads((Path(path) / RM_INFO_FILE).read_text())
        config = RMTrainConfig.model_validate(info["config"])
        key = {"pairs": world.pairs_path.name}
        kin = [_cached_reward_model(world, lambda: read_pairs(world.pairs_path),
                                    info["backbone"], c, key)
               for c in _sibling_configs(config, siblings)]  # fmt: skip
        name = f"study-{p.size}-n{p.pairs}-noise{p.noise:g}-{Path(path).name}"
        proxies.append(_Proxy(name, p.size, RewardModel.from_pretrained(path), kin))
    return proxies


def _grid_proxies(world: _World, specs: Sequence[ProxySpec], siblings: int) -> list[_Proxy]:
    """A proxy per spec (fine-tune seed 0) and its ``siblings`` (seeds 1000, 2000, ...)."""
    from goodhartlab.train.rm import RMTrainConfig

    p = world.study.proxies
    proxies = []
    for spec in specs:
        config = RMTrainConfig(epochs=p.epochs, lr=p.lr, seed=0, eval_fraction=0.0)
        key = {"pairs": world.pairs_path.name, "first": spec.pairs, "noise": spec.noise,
               "relabel_seed": spec.pairs}  # fmt: skip

        def data(spec=spec):
            return relabelled(world.train_pool[: spec.pairs], spec.noise, seed=spec.pairs)

        backbone = str(world.tb.backbone_path(spec.size))
        models = [_cached_reward_model(world, data, backbone, c, key)
                  for c in [config, *_sibling_configs(config, siblings)]]  # fmt: skip
        proxies.append(_Proxy(spec.name, spec.size, models[0], models[1:]))
    return proxies


def _pool_scores(rm, world: _World) -> np.ndarray:
    """``rm``'s scores of the pool, prompt-major. Shape: (P * N,)."""
    import torch

    with torch.no_grad():
        r = rm(world.pool_prompts, world.pool_completions, batch_size=256)
    return r.double().cpu().numpy()


def _benchmark_row(proxy: _Proxy, world: _World, ns: Sequence[int]) -> dict[str, Any]:
    """Every benchmark score of ``proxy``, its disagreement with its siblings and its
    best-of-n gold at each of ``ns``."""
    from goodhartlab.core.bon import expected_best_of_n
    from goodhartlab.measure.rm_eval import evaluate_rm
    from goodhartlab.train.rm import evaluate_reward_model

    accuracy = evaluate_reward_model(proxy.model, world.held_out)
    ev = evaluate_rm(proxy.model, world.bench_rows, model=proxy.name, sections=world.sections,
                     n_boot=50)  # fmt: skip
    scores = np.stack([_pool_scores(m, world) for m in [proxy.model, *proxy.siblings]])
    n_prompts = world.gold.shape[0]
    curve = expected_best_of_n(scores[0].reshape(n_prompts, -1), world.gold, ns)
    return {
        "proxy": proxy.name,
        "size": proxy.size,
        "clean_acc": accuracy["clean_accuracy"],
        "noisy_acc": accuracy["accuracy"],
        "bench_total": ev.section_total,
        **{f"section:{s}": v for s, v in (ev.sections or {}).items()},
        **{f"subset:{s}": m.accuracy for s, m in ev.subsets.items()},
        "ece": ev.overall.ece,
        "brier": ev.overall.brier,
        "rho_len": ev.overall.spearman_length,
        **disagreement(scores, n_prompts),
        **{f"bon_gold_n{n}": float(g) for n, g in zip(ns, curve.gold.tolist(), strict=True)},
    }


def _rl_row(rm, world: _World, run_root: Path, steps: int, eval_prompts: int,
            seeds: Sequence[int]) -> dict[str, Any]:  # fmt: skip
    """One GRPO run against ``rm`` per seed (8 x 8 rollouts, lr 1e-4, KL 0.01, ``steps``
    steps): the final gold and KL of each, their mean and seed spread."""
    from goodhartlab.optimize.rl import RLConfig, run_rl

    tb = world.tb
    golds, kls = [], []
    for seed in seeds:
        run_dir = run_root / f"seed{seed}"
        shutil.rmtree(run_dir, ignore_errors=True)
        rl = run_rl(
            run_dir, policy=str(tb.policy_path), tokenizer=tb.tokenizer, reward=rm,
            gold=tb.gold, train_prompts=tb.train_prompts, eval_prompts=tb.eval_prompts,
            config=RLConfig(steps=steps, kl_coef=0.01, eval_every=steps,
                            eval_prompts=eval_prompts, checkpoint_every=10**6, seed=seed),
        )  # fmt: skip
        golds.append(float(rl.metrics[-1]["gold"]))
        kls.append(float(rl.metrics[-1].get("kl", math.nan)))
    gold = seed_summary(golds)
    return {
        "rl_gold": gold["mean"], "rl_gold_sd": gold["sd"],
        "rl_gold_lo": gold["lo"], "rl_gold_hi": gold["hi"],
        "rl_kl": float(np.mean(kls)), "rl_gold_seeds": golds, "rl_kl_seeds": kls,
    }  # fmt: skip


def rl_seed_agreement(golds: np.ndarray) -> float:
    """How far one RL seed ranks the proxies as another does: the mean over pairs of seeds of
    the Spearman correlation, across proxies, of their final gold. Shape: (proxies, seeds)."""
    from goodhartlab.core.rm_metrics import spearman

    g = np.asarray(golds, dtype=np.float64)
    assert g.ndim == 2, g.shape
    pairs = list(itertools.combinations(range(g.shape[1]), 2))
    if g.shape[0] < 3 or not pairs:
        return math.nan
    return float(np.mean([spearman(g[:, a], g[:, b]) for a, b in pairs]))


def _rl_summary(rows: list[dict], seeds: Sequence[int]) -> dict[str, Any]:
    """Over the proxies with RL runs: how many, the mean seed sd of their gold, the sd of
    their seed-mean gold across proxies, and :func:`rl_seed_agreement`."""
    with_rl = [r for r in rows if "rl_gold_seeds" in r]
    if not with_rl:
        return {}
    golds = np.array([r["rl_gold_seeds"] for r in with_rl], dtype=float)
    return {
        "seeds": list(seeds),
        "proxies": len(with_rl),
        "mean_seed_sd": float(np.nanmean([r["rl_gold_sd"] for r in with_rl])),
        "between_proxy_sd": float(np.std(golds.mean(axis=1), ddof=1)),
        "seed_rank_agreement": rl_seed_agreement(golds),
    }


def _measures_and_targets(rows: list[dict], target_names: Sequence[str]):
    """Every numeric benchmark measure and every downstream gold, one value per proxy (NaN
    where a proxy lacks it)."""
    targets = {t: np.array([r.get(t, math.nan) for r in rows], dtype=float) for t in target_names}
    keys = [k for k in rows[0] if not k.startswith(_NOT_MEASURES)]
    measures = {k: np.array([r.get(k, math.nan) for r in rows], dtype=float) for k in keys}
    return measures, targets


def _write_outputs(out: Path, result: dict[str, Any]) -> None:
    from goodhartlab.report.rm_downstream_plot import plot_rm_downstream

    plot_rm_downstream(result, out / "rm_downstream.png")
    atomic_write_text(out / "rm_downstream.txt", format_correlations(result) + "\n")
    atomic_write_json(out / "rm_downstream.json", result)


def _log_row(log: Callable[[str], Any], row: dict[str, Any]) -> None:
    log(json.dumps({k: v for k, v in row.items() if not k.startswith(("subset:", "section:"))}))


def run_rm_downstream(
    out_dir: str | os.PathLike,
    *,
    grid: Sequence[str] = DEFAULT_GRID,
    per_subset: int = 100,
    prompts: int = 64,
    pool_size: int = 256,
    ns: Sequence[int] = (64, 256),
    siblings: int = DEFAULT_SIBLINGS,
    rl_steps: int = 40,
    rl_eval_prompts: int = 64,
    rl_seeds: Sequence[int] = DEFAULT_RL_SEEDS,
    rl_proxies: int | None = DEFAULT_RL_PROXIES,
    n_boot: int = 1000,
    cache_dir: str | None = None,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run the study and write ``rm_downstream.json``, ``rm_downstream.txt`` (the table) and
    ``rm_downstream.png`` to ``out_dir`` (the pool and RL runs under ``out_dir/work``).

    Every setting is checked before anything is built. Returns the JSON's content.
    """
    from goodhartlab.experiments.study import load_config
    from goodhartlab.testbeds.toy_text.testbed import ToyText

    out = Path(out_dir)
    ns = _check_settings(out, ns, pool_size, per_subset=per_subset, prompts=prompts,
                         bootstrap=n_boot, rl_eval_prompts=rl_eval_prompts,
                         rl_proxies=rl_proxies)  # fmt: skip
    if siblings < 0:
        raise ValueError(f"--siblings: expected >= 0, got {siblings}")
    rl_seeds = list(dict.fromkeys(int(s) for s in rl_seeds))
    if rl_steps and not rl_seeds:
        raise ValueError("--rl-seeds: expected at least one seed")
    study = load_config(None, [f"cache_dir={cache_dir}"] if cache_dir else [])
    specs = parse_grid(grid, max_pairs=study.proxies.pairs - HELD_OUT_PAIRS,
                       sizes=ToyText.backbone_sizes)  # fmt: skip
    t_start, cpu_start = time.perf_counter(), time.process_time()

    def elapsed() -> str:
        return f"{time.perf_counter() - t_start:.0f} s"

    world = _build_world(study, out, per_subset, prompts, pool_size)
    log(f"pool of {world.gold.shape[0]} x {pool_size} ready ({elapsed()})")
    proxies = _study_proxies(world, siblings) + _grid_proxies(world, specs, siblings)
    if len(proxies) < 3:
        raise ValueError(f"only {len(proxies)} reward models; a rank correlation needs >= 3")
    log(f"{len(proxies)} reward models, {siblings} siblings each ({elapsed()})")

    rows = []
    for proxy in proxies:
        t, cpu = time.perf_counter(), time.process_time()
        row = _benchmark_row(proxy, world, ns)
        rows.append(row | _timing(t, cpu))
        _log_row(log, rows[-1])
    _write_rows(out, rows)
    for i in rl_proxy_indices(len(proxies), rl_proxies) if rl_steps else []:
        t, cpu = time.perf_counter(), time.process_time()
        run_root = out / "work" / "rl" / proxies[i].name
        rows[i] |= _rl_row(proxies[i].model, world, run_root, rl_steps, rl_eval_prompts, rl_seeds)
        rows[i] |= {f"rl_{k}": v for k, v in _timing(t, cpu).items()}
        _write_rows(out, rows)
        log(f"RL on {proxies[i].name}: gold {rows[i]['rl_gold_seeds']} ({elapsed()})")

    meta = {
        "prompts": world.gold.shape[0], "pool_size": pool_size, "ns": ns, "siblings": siblings,
        "rl_steps": rl_steps or None, "rl_seeds": rl_seeds if rl_steps else None,
        "bench": world.bench_name, "gold_version": world.tb.gold_version,
    }  # fmt: skip
    result = summarize(rows, meta, n_boot)
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    # this process's CPU time: the wall time of the run on an otherwise idle machine, at
    # one torch thread (the wall time above depends on what else the machine runs)
    result["cpu_seconds"] = round(time.process_time() - cpu_start, 1)
    _write_outputs(out, _nan_to_none(result))
    return _nan_to_none(result)


def _timing(t: float, cpu: float) -> dict[str, float]:
    return {
        "seconds": round(time.perf_counter() - t, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
    }


def _write_rows(out: Path, rows: list[dict]) -> None:
    """The rows so far (``rm_downstream.rows.json``): a run stopped during its RL runs can
    still be summarized from them (:func:`summarize`)."""
    atomic_write_json(out / "rm_downstream.rows.json", _nan_to_none(rows))


def summarize(rows: list[dict], meta: dict[str, Any], n_boot: int) -> dict[str, Any]:
    """The result of a run from its rows: ``meta`` (``ns``, ``rl_steps``, ``rl_seeds``, ...),
    the RL seed summary, how many proxies have each target, and every correlation."""
    rows = [{k: math.nan if v is None else v for k, v in r.items()} for r in rows]
    ns, rl = meta["ns"], bool(meta.get("rl_steps")) and any("rl_gold" in r for r in rows)
    target_names = [f"bon_gold_n{n}" for n in ns] + (["rl_gold"] if rl else [])
    measures, targets = _measures_and_targets(rows, target_names)
    return {
        "version": DOWNSTREAM_VERSION,
        "proxies": len(rows),
        **meta,
        "rl": _rl_summary(rows, meta.get("rl_seeds") or []) if rl else {},
        "n_boot": n_boot,
        "rows": rows,
        "target_proxies": {t: int(np.isfinite(y).sum()) for t, y in targets.items()},
        "correlations": correlations(measures, targets, n_boot),
    }


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x
