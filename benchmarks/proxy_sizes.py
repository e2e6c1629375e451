"""Proxy size on toy_text: held-out accuracy and best-of-n curve for every reward-model size.

The measurement behind the testbed issue's "bigger proxies are more accurate" and the
best-of-n issue's "bigger proxies peak later or higher". For each size in ``--sizes`` it
trains proxies on the default study's pairs (same pairs, noise, epochs and learning rate;
``experiments.proxies.train_proxies``, cached), one per seed in ``--seeds``, each on a
backbone of that size pretrained on the language; then it scores one shared best-of-n pool
(the default study's: 200 held-out prompts x 512) with every proxy and reports, per proxy,
parameters, clean held-out accuracy, and the best-of-n gold curve's peak n, peak gold, final
gold and the paired 95 % interval of the drop from peak to the largest n.

    python benchmarks/proxy_sizes.py [--sizes small medium large] [--seeds 0 1] \
        [--out proxy_sizes.json]

Everything is cached under ``$GOODHART_CACHE`` (backbones, pairs, proxies) and ``--pool-dir``
(the pool and its score caches), so a rerun only does what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from goodhartlab.experiments.proxies import train_proxies
from goodhartlab.experiments.study import load_config, make_testbed
from goodhartlab.models.tiny import count_parameters
from goodhartlab.optimize.bon import BonStudyConfig, run_bon_study
from goodhartlab.report.plots import plot_bon_curves
from goodhartlab.rewards import RewardModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["small", "medium", "large"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--pool-dir", default="proxy_sizes_pool")
    ap.add_argument("--out", default="proxy_sizes.json")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    study = load_config(None)
    tb = make_testbed(study, progress=False)
    p = study.proxies
    rows, proxies = [], {}
    for size in args.sizes:
        t0 = time.perf_counter()
        proxy_set = train_proxies(
            tb,
            pairs=p.pairs,
            noise=p.noise,
            size=size,
            seeds=tuple(args.seeds),
            epochs=p.epochs,
            lr=p.lr,
            seed=study.seed,
            progress=False,
        )
        seconds = time.perf_counter() - t0
        for seed, path, metrics in zip(args.seeds, proxy_set.paths, proxy_set.metrics, strict=True):
            name = f"{size}-seed{seed}"
            proxies[name] = path
            params = count_parameters(RewardModel.from_pretrained(path).model)
            rows.append(
                {
                    "proxy": name,
                    "size": size,
                    "seed": seed,
                    "parameters": params,
                    "clean_accuracy": metrics.get("clean_accuracy"),
                    "train_seconds_all_seeds": round(seconds, 1),
                }
            )
            print(f"{name}: {params:,} parameters, clean accuracy {rows[-1]['clean_accuracy']:.3f}")

    result = run_bon_study(
        Path(args.out).with_suffix("") / "bon",
        policy=tb.policy_path,
        prompts=tb.eval_prompts,
        gold=tb.gold,
        proxies=proxies,
        config=BonStudyConfig(
            pool_size=study.bon.pool_size,
            prompts_count=study.bon.prompts,
            max_new_tokens=tb.max_new_tokens,
            seed=study.seed,
            n_boot=study.bon.n_boot,
            aggregators={},
        ),
        pool_dir=args.pool_dir,
        plot=plot_bon_curves,
    )
    methods = result.summary["methods"]
    for row in rows:
        m = methods[row["proxy"]]
        row.update(
            {
                k: m.get(k)
                for k in (
                    "n_peak",
                    "gold_peak",
                    "gold_final",
                    "drop",
                    "drop_paired_lo",
                    "drop_paired_hi",
                )
            }
        )
        print(
            f"{row['proxy']}: peak n {row['n_peak']} gold {row['gold_peak']:.3f}, final "
            f"{row['gold_final']:.3f}, drop {row['drop']:.3f} "
            f"[{row['drop_paired_lo']:.3f}, {row['drop_paired_hi']:.3f}]"
        )
    Path(args.out).write_text(json.dumps({"gold": tb.gold_version, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
