"""Which reward-model benchmark predicts downstream gold? (issue 15, item 3)

Over proxies of varied quality on toy_text,

* the default study's cached proxies (``$GOODHART_CACHE``: the 5-member pretrain-seed
  ensembles, 6,000 pairs at 25 % noise; every ``member_*`` found), and
* proxies trained here from the small backbone on the first ``n`` of the study's pairs
  relabelled at a noise rate (``--grid``: pairs x noise), 2 epochs, lr 1e-3,

it measures each benchmark score

* ``clean_acc`` / ``noisy_acc``: accuracy on the last 1,000 of the study's pairs (never
  trained on) against the noise-free labels / against the 25 %-noisy labels;
* the toy_text reward benchmark (``goodhart reward-bench``, ``--per-subset`` rows each):
  the section total, each section, each subset; calibration (``ece``, ``brier`` over all
  rows) and length bias (``rho_len``: Spearman of reward and length over all rows);

and the downstream gold of optimizing against the proxy:

* best-of-n gold at n = 64 and n = 256 on one shared pool of ``--pool-size`` base samples
  for each of ``--prompts`` held-out prompts (unbiased estimator, ``core.bon``);
* RL gold: a GRPO run of ``--rl-steps`` steps (8 x 8 rollouts, lr 1e-4, KL 0.01), gold on
  ``--rl-eval-prompts`` held-out prompts x 2 samples at the end.

Then Spearman and Kendall correlations between every benchmark score and every downstream
gold across the proxies, with 95 % percentile bootstrap intervals over proxies.

    python benchmarks/rm_downstream.py [--out rm_downstream.json] [--plot rm_downstream.png]

One torch thread; the pool is cached in ``--pool-dir``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from scipy import stats

from goodhartlab.core.bon import expected_best_of_n
from goodhartlab.data import read_pairs
from goodhartlab.data.bench_rows import bench_rows_from_records
from goodhartlab.experiments.proxies import preference_pairs
from goodhartlab.experiments.study import load_config, make_testbed
from goodhartlab.measure.rm_eval import SectionMap, evaluate_rm
from goodhartlab.optimize.pool import build_pool
from goodhartlab.optimize.rl import RLConfig, run_rl
from goodhartlab.rewards import RewardModel
from goodhartlab.testbeds.toy_text.reward_bench import build_reward_bench, section_map
from goodhartlab.train.rm import RMTrainConfig, evaluate_reward_model, train_reward_model

DEFAULT_GRID = ["50x0.1", "150x0.05", "150x0.4", "500x0.05", "500x0.4", "1500x0.05",
                "1500x0.4", "4000x0.0", "4000x0.05", "4000x0.4"]  # fmt: skip


def _swapped(pair):
    return pair.model_copy(update={
        "chosen": pair.rejected, "rejected": pair.chosen,
        "gold_chosen": pair.gold_rejected, "gold_rejected": pair.gold_chosen,
    })  # fmt: skip


def relabelled(pairs, noise: float, seed: int):
    """The pairs with the study's flips undone and a fresh ``noise`` fraction flipped
    (``meta["flipped"]`` set accordingly)."""
    rng = np.random.default_rng(seed)
    out = []
    for pair in pairs:
        clean = _swapped(pair) if pair.meta.get("flipped") else pair
        flip = bool(rng.random() < noise)
        labelled = _swapped(clean) if flip else clean
        out.append(labelled.model_copy(update={"meta": {**labelled.meta, "flipped": flip}}))
    return out


def correlation_table(measures: dict[str, np.ndarray], targets: dict[str, np.ndarray],
                      n_boot: int, seed: int) -> dict:  # fmt: skip
    """Spearman and Kendall of every measure with every target, bootstrap over proxies."""
    rng = np.random.default_rng(seed)
    n = len(next(iter(targets.values())))
    idx = rng.integers(n, size=(n_boot, n))
    out = {}
    for m, x in measures.items():
        if np.nanstd(x) == 0 or np.isnan(x).any():
            continue
        for t, y in targets.items():
            row = {}
            for name, fn in (("spearman", stats.spearmanr), ("kendall", stats.kendalltau)):
                est = float(fn(x, y).statistic)
                boots = [fn(x[i], y[i]).statistic for i in idx]
                boots = np.asarray([b for b in boots if np.isfinite(b)])
                lo, hi = np.percentile(boots, [2.5, 97.5]) if len(boots) else (np.nan, np.nan)
                row[name] = {"estimate": est, "lo": float(lo), "hi": float(hi)}
            out.setdefault(m, {})[t] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", nargs="*", default=DEFAULT_GRID, help="PAIRSxNOISE proxies to train")
    ap.add_argument("--per-subset", type=int, default=100)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--pool-size", type=int, default=256)
    ap.add_argument("--ns", nargs="+", type=int, default=[64, 256], help="best-of-n targets")
    ap.add_argument("--pool-dir", default="rm_downstream_pool")
    ap.add_argument("--rl-steps", type=int, default=40)
    ap.add_argument("--rl-eval-prompts", type=int, default=64)
    ap.add_argument("--no-rl", action="store_true")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--work-dir", default="rm_downstream_work")
    ap.add_argument("--out", default="rm_downstream.json")
    ap.add_argument("--plot", default="rm_downstream.png")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.perf_counter()

    study = load_config(None)
    tb = make_testbed(study, progress=False)
    p = study.proxies
    pairs = read_pairs(preference_pairs(tb, Path(tb.root) / "proxies", pairs=p.pairs,
                                        noise=p.noise, seed=study.seed, progress=False))  # fmt: skip
    held_out = pairs[-1000:]
    bench = build_reward_bench(args.per_subset, seed=0, testbed_seed=tb.config.seed)
    bench_rows = bench_rows_from_records(bench, "toy_text bench")
    sm = section_map(bench)
    sections = SectionMap(sm["name"], sm["example_counts"], sm["subset_mapping"])

    prompts = tb.eval_prompts[: args.prompts]
    policy = tb.load_policy("cpu")
    pool = build_pool(args.pool_dir, policy, tb.tokenizer, prompts, args.pool_size,
                      max_new_tokens=tb.max_new_tokens, seed=study.seed,
                      chunk_size=args.pool_size)  # fmt: skip
    flat_prompts, flat_completions = pool.flat()
    gold = tb.gold(flat_prompts, flat_completions).double().numpy().reshape(len(prompts), -1)
    print(f"pool ready ({time.perf_counter() - t_start:.0f} s)", flush=True)

    proxies: dict[str, RewardModel] = {}
    seen: set[str] = set()
    for d in sorted(Path(tb.root, "proxies").glob("rm-*/member_*")):
        # The same proxy can sit in two cache directories (named before and after the pair
        # seed joined the key): count each set of weights once.
        digest = hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            proxies[f"cached-{d.name}"] = RewardModel.from_pretrained(d)
    backbone = str(tb.backbone_path(p.size))
    train_pool = pairs[: len(pairs) - len(held_out)]
    for spec in args.grid:
        n_text, noise_text = spec.split("x")
        n, noise = int(n_text), float(noise_text)
        data = relabelled(train_pool[:n], noise, seed=n)
        config = RMTrainConfig(epochs=p.epochs, lr=p.lr, seed=0, eval_fraction=0.0)
        result = train_reward_model(data, tb.tokenizer, backbone, config, eval_pairs=[],
                                    progress=False)  # fmt: skip
        proxies[f"trained-n{n}-noise{noise}"] = result.reward_model
    print(f"{len(proxies)} proxies ({time.perf_counter() - t_start:.0f} s)", flush=True)

    rows = []
    for name, rm in proxies.items():
        t = time.perf_counter()
        acc = evaluate_reward_model(rm, held_out)
        ev = evaluate_rm(rm, bench_rows, model=name, sections=sections, n_boot=50)
        with torch.no_grad():
            proxy = rm(flat_prompts, flat_completions, batch_size=256)
        proxy = proxy.double().cpu().numpy().reshape(len(prompts), -1)
        curve = expected_best_of_n(proxy, gold, args.ns)
        row = {
            "proxy": name,
            "clean_acc": acc["clean_accuracy"],
            "noisy_acc": acc["accuracy"],
            "bench_total": ev.section_total,
            **{f"section:{s}": v for s, v in ev.sections.items()},
            **{f"subset:{s}": m.accuracy for s, m in ev.subsets.items()},
            "ece": ev.overall.ece,
            "brier": ev.overall.brier,
            "rho_len": ev.overall.spearman_length,
            **{
                f"bon_gold_n{n}": float(g)
                for n, g in zip(args.ns, curve.gold.tolist(), strict=True)
            },
        }
        if not args.no_rl:
            out_dir = Path(args.work_dir) / "rl" / name
            if out_dir.exists():
                import shutil

                shutil.rmtree(out_dir)
            rl = run_rl(
                out_dir, policy=str(tb.policy_path), tokenizer=tb.tokenizer, reward=rm,
                gold=tb.gold, train_prompts=tb.train_prompts, eval_prompts=tb.eval_prompts,
                config=RLConfig(steps=args.rl_steps, kl_coef=0.01, eval_every=args.rl_steps,
                                eval_prompts=args.rl_eval_prompts,
                                checkpoint_every=10**6, seed=0),
            )  # fmt: skip
            last = rl.metrics[-1]
            row["rl_gold"] = float(last["gold"])
            row["rl_kl"] = float(last.get("kl", float("nan")))
        row["seconds"] = round(time.perf_counter() - t, 1)
        rows.append(row)
        print(json.dumps({k: row[k] for k in row if not k.startswith("subset:")}), flush=True)

    names = [*(f"bon_gold_n{n}" for n in args.ns), "rl_gold"]
    targets = {t: np.array([r[t] for r in rows]) for t in names if t in rows[0]}
    keys = [k for k in rows[0] if k not in (*targets, "proxy", "seconds", "rl_kl")]
    measures = {k: np.array([r.get(k, np.nan) for r in rows], dtype=float) for k in keys}
    corr = correlation_table(measures, targets, args.bootstrap, seed=0)
    out = {
        "proxies": len(rows),
        "prompts": len(prompts),
        "pool_size": args.pool_size,
        "rl_steps": None if args.no_rl else args.rl_steps,
        "bench": sm["name"],
        "gold_version": tb.gold_version,
        "seconds": round(time.perf_counter() - t_start, 1),
        "rows": rows,
        "correlations": corr,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    first = names[len(args.ns) - 1]
    order = sorted(corr, key=lambda m: -abs(corr[m][first]["spearman"]["estimate"]))
    print(f"{'measure':32s} " + " ".join(f"{t:>26s}" for t in targets))
    for m in order:
        cells = []
        for t in targets:
            s = corr[m][t]["spearman"]
            cells.append(f"{s['estimate']:+.2f} [{s['lo']:+.2f},{s['hi']:+.2f}]".rjust(26))
        print(f"{m:32s} " + " ".join(cells))
    if args.plot:
        plot(out, order, list(targets), args.plot)


def plot(out: dict, order: list[str], targets: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [m for m in order if not m.startswith("subset:")] + [
        m for m in order if m.startswith("subset:")
    ][:8]
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 0.28 * len(shown) + 1.5),
                             sharey=True)  # fmt: skip
    axes = np.atleast_1d(axes)
    for ax, t in zip(axes, targets, strict=True):
        est = [out["correlations"][m][t]["spearman"]["estimate"] for m in shown]
        lo = [out["correlations"][m][t]["spearman"]["lo"] for m in shown]
        hi = [out["correlations"][m][t]["spearman"]["hi"] for m in shown]
        y = np.arange(len(shown))
        # a percentile interval need not contain the estimate: clip the bars at it
        err = [np.maximum(0, np.subtract(est, lo)), np.maximum(0, np.subtract(hi, est))]
        ax.errorbar(est, y, xerr=err, fmt="o", ms=3)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_yticks(y, shown, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(-1, 1)
        ax.set_title(f"Spearman with {t}", fontsize=9)
    fig.suptitle(f"{out['proxies']} proxies: benchmark score vs downstream gold", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
