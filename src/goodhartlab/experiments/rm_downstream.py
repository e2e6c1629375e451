"""``goodhart rm-downstream``: which reward-model benchmark predicts downstream gold?

Issue 15, item 3. Over proxies of varied quality on toy_text,

* the default study's cached proxies (every distinct ``member_*`` of its proxies cache: the
  5-member pretrain-seed ensemble, 6,000 pairs at 25 % noise), and
* proxies trained here from the small backbone on the first ``n`` of the study's pairs,
  relabelled at noise ``q`` (``grid``: ``n x q``), with the study's recipe,

it measures every benchmark score: accuracy on the last 1,000 of the study's pairs (never
trained on) against the noise-free labels (``clean_acc``) and the noisy ones (``noisy_acc``);
the toy_text reward benchmark (``goodhart reward-bench``): its total, each section, each
subset, ECE and Brier over its rows, the reward-length Spearman (``rho_len``); and the
downstream gold: best-of-n at each ``ns`` on one shared pool (unbiased estimator,
``core.bon``) and, with ``rl_steps``, the gold of a GRPO run (8 x 8 rollouts, lr 1e-4,
KL 0.01) at its end. Then Spearman and Kendall (tau-b) correlations of every score with every
downstream gold across the proxies, with percentile bootstrap intervals over proxies
(``core.rm_metrics.rank_correlation_interval``). Results record ``DOWNSTREAM_VERSION``.
"""

from __future__ import annotations

import hashlib
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
    "format_correlations",
    "parse_grid",
    "relabelled",
    "run_rm_downstream",
]

DOWNSTREAM_VERSION = "rm-downstream/v1"

#: The trained proxies of the default run: pair counts x label-noise rates.
DEFAULT_GRID = ("50x0.1", "150x0.05", "150x0.4", "500x0.05", "500x0.4", "1500x0.05",
                "1500x0.4", "4000x0.0", "4000x0.05", "4000x0.4")  # fmt: skip
HELD_OUT_PAIRS = 1000


@dataclass(frozen=True)
class ProxySpec:
    """A proxy to train: the first ``pairs`` training pairs, relabelled at ``noise``."""

    pairs: int
    noise: float

    @property
    def name(self) -> str:
        return f"trained-n{self.pairs}-noise{self.noise:g}"


def parse_grid(items: Sequence[str], max_pairs: int | None = None) -> list[ProxySpec]:
    """``["500x0.05", ...]`` -> specs; each bad item named (``--grid``)."""
    out = []
    for item in items:
        try:
            n_text, q_text = item.split("x")
            spec = ProxySpec(int(n_text), float(q_text))
        except ValueError:
            raise ValueError(f"--grid: {item!r}: expected PAIRSxNOISE, e.g. 500x0.05") from None
        if spec.pairs < 2 or (max_pairs is not None and spec.pairs > max_pairs):
            limit = f" and at most {max_pairs} (the training pairs)" if max_pairs else ""
            raise ValueError(f"--grid: {item!r}: pairs must be at least 2{limit}")
        if not 0 <= spec.noise < 0.5:
            raise ValueError(f"--grid: {item!r}: noise must be in [0, 0.5)")
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


def correlations(
    measures: dict[str, np.ndarray], targets: dict[str, np.ndarray], n_boot: int, seed: int = 0
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``[measure][target][spearman|kendall] = {estimate, lo, hi}`` over the reward models;
    measures that are constant or undefined for some model are left out."""
    from goodhartlab.core.rm_metrics import rank_correlation_interval

    out: dict = {}
    for m, x in measures.items():
        if not np.isfinite(x).all() or np.ptp(x) == 0:
            continue
        for t, y in targets.items():
            out.setdefault(m, {})[t] = {
                method: dict(zip(("estimate", "lo", "hi"),
                                 rank_correlation_interval(x, y, method, n_boot, seed=seed),
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
        return "  nan" if x is None else f"{x:+.2f}"

    lines = [f"{'measure':{width}s}  " + "  ".join(f"{t:>29s}" for t in targets)]
    for m in order:
        cells = []
        for t in targets:
            s, k = corr[m][t]["spearman"], corr[m][t]["kendall"]["estimate"]
            cells.append(f"{num(s['estimate'])} [{num(s['lo'])}, {num(s['hi'])}] / {num(k)}")
        lines.append(f"{m:{width}s}  " + "  ".join(c.rjust(29) for c in cells))
    return "\n".join(lines)


def run_rm_downstream(
    out_dir: str | os.PathLike,
    *,
    grid: Sequence[str] = DEFAULT_GRID,
    per_subset: int = 100,
    prompts: int = 64,
    pool_size: int = 256,
    ns: Sequence[int] = (64, 256),
    rl_steps: int = 40,
    rl_eval_prompts: int = 64,
    n_boot: int = 1000,
    cache_dir: str | None = None,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run the study and write ``rm_downstream.json``, ``rm_downstream.txt`` (the table) and
    ``rm_downstream.png`` to ``out_dir`` (the pool and RL runs under ``out_dir/work``).

    Every setting is checked before anything is built. Returns the JSON's content.
    """
    import torch

    from goodhartlab.core.bon import expected_best_of_n
    from goodhartlab.data import read_pairs
    from goodhartlab.data.bench_rows import bench_rows_from_records
    from goodhartlab.experiments.proxies import preference_pairs
    from goodhartlab.experiments.study import load_config, make_testbed
    from goodhartlab.measure.rm_eval import SectionMap, evaluate_rm
    from goodhartlab.optimize.pool import build_pool
    from goodhartlab.optimize.rl import RLConfig, run_rl
    from goodhartlab.report.rm_downstream_plot import plot_rm_downstream
    from goodhartlab.rewards import RewardModel
    from goodhartlab.testbeds.toy_text.reward_bench import build_reward_bench, section_map
    from goodhartlab.train.rm import RMTrainConfig, evaluate_reward_model, train_reward_model

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} is a file; expected a directory")
    ns = sorted(set(int(n) for n in ns))
    if not ns or ns[0] < 1 or ns[-1] > pool_size:
        raise ValueError(f"--ns: expected values in [1, --pool-size = {pool_size}], got {ns}")
    for flag, value in (
        ("--per-subset", per_subset),
        ("--prompts", prompts),
        ("--bootstrap", n_boot),
        ("--rl-eval-prompts", rl_eval_prompts),
    ):
        if value < 1:
            raise ValueError(f"{flag}: expected >= 1, got {value}")  # fmt: skip
    study = load_config(None, [f"cache_dir={cache_dir}"] if cache_dir else [])
    p = study.proxies
    specs = parse_grid(grid, max_pairs=p.pairs - HELD_OUT_PAIRS)
    t_start = time.perf_counter()

    tb = make_testbed(study, progress=False)
    pairs = read_pairs(preference_pairs(tb, Path(tb.root) / "proxies", pairs=p.pairs,
                                        noise=p.noise, seed=study.seed, progress=False))  # fmt: skip
    held_out, train_pool = pairs[-HELD_OUT_PAIRS:], pairs[:-HELD_OUT_PAIRS]
    bench = build_reward_bench(per_subset, seed=0, testbed_seed=tb.config.seed)
    bench_rows = bench_rows_from_records(bench, "toy_text reward bench")
    sm = section_map(bench)
    sections = SectionMap(sm["name"], sm["example_counts"], sm["subset_mapping"])

    eval_prompts = tb.eval_prompts[:prompts]
    pool = build_pool(out / "work" / "pool", tb.load_policy("cpu"), tb.tokenizer, eval_prompts,
                      pool_size, max_new_tokens=tb.max_new_tokens, seed=study.seed,
                      chunk_size=pool_size)  # fmt: skip
    flat_prompts, flat_completions = pool.flat()
    gold = tb.gold(flat_prompts, flat_completions).double().numpy().reshape(len(eval_prompts), -1)
    log(f"pool of {len(eval_prompts)} x {pool_size} ready ({time.perf_counter() - t_start:.0f} s)")

    proxies: dict[str, Any] = {}
    seen: set[str] = set()
    for d in sorted(Path(tb.root, "proxies").glob("rm-*/member_*")):
        # The same proxy can sit in two cache directories (named before and after the pair
        # seed joined the cache key): count each set of weights once.
        weights = d / "model.safetensors"
        if not weights.is_file():
            continue
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            proxies[f"cached-{d.parent.name[:40]}-{d.name}"] = RewardModel.from_pretrained(d)
    backbone = str(tb.backbone_path(p.size))
    for spec in specs:
        config = RMTrainConfig(epochs=p.epochs, lr=p.lr, seed=0, eval_fraction=0.0)
        data = relabelled(train_pool[: spec.pairs], spec.noise, seed=spec.pairs)
        result = train_reward_model(data, tb.tokenizer, backbone, config, eval_pairs=[],
                                    progress=False)  # fmt: skip
        proxies[spec.name] = result.reward_model
    if len(proxies) < 3:
        raise ValueError(f"only {len(proxies)} reward models; a rank correlation needs >= 3")
    log(f"{len(proxies)} reward models ({time.perf_counter() - t_start:.0f} s)")

    rows = []
    for name, rm in proxies.items():
        t = time.perf_counter()
        accuracy = evaluate_reward_model(rm, held_out)
        ev = evaluate_rm(rm, bench_rows, model=name, sections=sections, n_boot=50)
        with torch.no_grad():
            proxy = rm(flat_prompts, flat_completions, batch_size=256)
        curve = expected_best_of_n(proxy.double().cpu().numpy().reshape(len(eval_prompts), -1),
                                   gold, ns)  # fmt: skip
        row = {
            "proxy": name,
            "clean_acc": accuracy["clean_accuracy"],
            "noisy_acc": accuracy["accuracy"],
            "bench_total": ev.section_total,
            **{f"section:{s}": v for s, v in (ev.sections or {}).items()},
            **{f"subset:{s}": m.accuracy for s, m in ev.subsets.items()},
            "ece": ev.overall.ece,
            "brier": ev.overall.brier,
            "rho_len": ev.overall.spearman_length,
            **{f"bon_gold_n{n}": float(g) for n, g in zip(ns, curve.gold.tolist(), strict=True)},
        }
        if rl_steps:
            run_dir = out / "work" / "rl" / name
            shutil.rmtree(run_dir, ignore_errors=True)
            rl = run_rl(
                run_dir, policy=str(tb.policy_path), tokenizer=tb.tokenizer, reward=rm,
                gold=tb.gold, train_prompts=tb.train_prompts, eval_prompts=tb.eval_prompts,
                config=RLConfig(steps=rl_steps, kl_coef=0.01, eval_every=rl_steps,
                                eval_prompts=rl_eval_prompts, checkpoint_every=10**6, seed=0),
            )  # fmt: skip
            row["rl_gold"] = float(rl.metrics[-1]["gold"])
            row["rl_kl"] = float(rl.metrics[-1].get("kl", math.nan))
        row["seconds"] = round(time.perf_counter() - t, 1)
        rows.append(row)
        log(json.dumps({k: v for k, v in row.items() if not k.startswith(("subset:", "section:"))}))

    target_names = [f"bon_gold_n{n}" for n in ns] + (["rl_gold"] if rl_steps else [])
    targets = {t: np.array([r[t] for r in rows], dtype=float) for t in target_names}
    skip = {*target_names, "proxy", "seconds", "rl_kl"}
    keys = [k for k in rows[0] if k not in skip]
    measures = {k: np.array([r.get(k, math.nan) for r in rows], dtype=float) for k in keys}
    result = {
        "version": DOWNSTREAM_VERSION,
        "proxies": len(rows),
        "prompts": len(eval_prompts),
        "pool_size": pool_size,
        "ns": ns,
        "rl_steps": rl_steps or None,
        "bench": sm["name"],
        "gold_version": tb.gold_version,
        "n_boot": n_boot,
        "rows": rows,
        "correlations": correlations(measures, targets, n_boot),
    }
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    result = _nan_to_none(result)
    plot_rm_downstream(result, out / "rm_downstream.png")
    atomic_write_text(out / "rm_downstream.txt", format_correlations(result) + "\n")
    atomic_write_json(out / "rm_downstream.json", result)
    return result


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x
