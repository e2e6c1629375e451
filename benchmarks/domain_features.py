"""Domain-knowledge features (issue 14 item 8): accuracy against the number of training pairs.

"Leveraging Domain Knowledge for Efficient Reward Modelling in RLHF: A Case-Study in
E-Commerce Opinion Summarization" (February 2024) claims that domain knowledge written down
as features cuts the preference labels a reward model needs. On toy_text, for each number of
training pairs (the first N of the default study's cached gold-labelled pairs, 25 % of
labels flipped) and each seed, three reward models:

* ``bt``: Bradley-Terry on the size-``small`` backbone with the study's recipe (2 epochs,
  lr 1e-3), as ``benchmarks/rm_variants.py``;
* ``bt_features``: the same plus a linear layer over the standardized ``toy_text_domain``
  features (``RMTrainConfig.features``; ``core.feature_reward``);
* ``features_only``: a linear Bradley-Terry model on the features alone
  (``train.rm_features``).

Reported: clean held-out accuracy on the last 1,000 pairs of the file (never trained on;
``train.rm.evaluate_reward_model``) and the calibration of σ(r_c − r_r) against the clean
labels (ECE, 10 bins, ``core.rm_metrics``; and Brier), mean over seeds ± the 95 % Student-t
interval (``core.stats.t_interval``), and the paired difference per seed (bt_features − bt,
features_only − bt) with its t-interval. At the largest size (``--bon``), best-of-16 and
best-of-256 gold (and best-of-1,024 with ``--pool-size 1024``) on the prebuilt pool
(``--pool-dir``, 64 prompts x ``--pool-size`` base samples; unbiased estimator,
``core.bon``) with the paired 95 % interval over prompts of the difference from bt (seeds
averaged first).

    python benchmarks/domain_features.py --sizes 100 300 1000 3000 --seeds 0 1 2 \
        --bon --pool-dir /work/pool/p64x256 --out domain_features.json
    python benchmarks/domain_features.py --sizes 3000 --bon --pool-size 1024 \
        --pool-dir /work/pool/p64x1024 --out domain_features_1024.json

One torch thread; the testbed, its backbones and the pairs in ``$GOODHART_CACHE``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from goodhartlab.core.bon import expected_best_of_n
from goodhartlab.core.stats import t_interval
from goodhartlab.data import read_pairs
from goodhartlab.experiments.proxies import preference_pairs
from goodhartlab.experiments.study import load_config, make_testbed
from goodhartlab.train.rm import RMTrainConfig, evaluate_reward_model, train_reward_model
from goodhartlab.train.rm_features import train_feature_only
from rm_variants import study_pool

ARMS = ("bt", "bt_features", "features_only")


def interval(values: list[float]) -> dict[str, float]:
    lo, hi = t_interval(np.asarray(values, dtype=float))
    mean = float(np.mean(values))
    return {"mean": mean, "half_width": (hi - lo) / 2 if not math.isnan(lo) else math.nan}


def prompt_interval(diff: np.ndarray) -> dict[str, float]:
    """Mean and 95 % normal interval half-width over prompts. Shape: (P,)"""
    return {
        "mean": float(diff.mean()),
        "half_width": 1.96 * float(diff.std(ddof=1)) / len(diff) ** 0.5,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[100, 300, 1000, 3000])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--bon", action="store_true", help="best-of-n gold at the largest size")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--pool-size", type=int, default=256)
    ap.add_argument("--pool-dir", default="rm_variants_pool")
    ap.add_argument("--out", default="domain_features.json")
    ap.add_argument("--features", default="toy_text_domain", help="a feature set of RM_FEATURES")
    ap.add_argument(
        "--features-lr", type=float, default=None, help="RMTrainConfig.features_lr (its default)"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)

    study = load_config(None)
    tb = make_testbed(study, progress=False)
    p = study.proxies
    pairs = read_pairs(
        preference_pairs(
            tb, Path(tb.root) / "proxies", pairs=p.pairs, noise=p.noise, seed=study.seed,
            progress=False,
        )
    )  # fmt: skip
    held_out = pairs[-1000:]
    assert max(args.sizes) <= len(pairs) - len(held_out), "train and held-out pairs overlap"
    backbone = str(tb.backbone_path(p.size))

    pool = None
    ns = [n for n in (16, 256, 1024) if n <= args.pool_size]
    if args.bon:
        flat_prompts, flat_completions, gold = study_pool(
            tb, study, args.prompts, args.pool_size, args.pool_dir
        )

    rows, bon = [], {}
    for size in sorted(args.sizes):
        train = pairs[:size]
        for seed in args.seeds:
            for arm in ARMS:
                t = time.perf_counter()
                if arm == "features_only":
                    rm = train_feature_only(train, args.features, seed=seed)
                else:
                    config = RMTrainConfig(
                        epochs=p.epochs, lr=p.lr, seed=seed, eval_fraction=0.0,
                        features=args.features if arm == "bt_features" else None,
                        **({} if args.features_lr is None else {"features_lr": args.features_lr}),
                    )  # fmt: skip
                    rm = train_reward_model(
                        train, tb.tokenizer, backbone, config, eval_pairs=[], progress=False
                    ).reward_model
                m = evaluate_reward_model(rm, held_out)
                row = {
                    "size": size, "arm": arm, "seed": seed,
                    "clean_accuracy": m["clean_accuracy"],
                    "clean_ece": m["clean_ece"], "clean_brier": m["clean_brier"],
                    "seconds": round(time.perf_counter() - t, 1),
                }  # fmt: skip
                if pool is not None and size == max(args.sizes):
                    with torch.no_grad():
                        proxy = rm(flat_prompts, flat_completions, batch_size=256)
                    proxy = torch.as_tensor(proxy).double().numpy().reshape(gold.shape)
                    curve = expected_best_of_n(proxy, gold, ns)
                    bon[(arm, seed)] = curve.gold_per_prompt.numpy()
                    row.update(
                        {
                            f"bon_gold_n{n}": float(g)
                            for n, g in zip(ns, curve.gold.tolist(), strict=True)
                        }
                    )
                rows.append(row)
                print(json.dumps(row), flush=True)

    summary: dict[str, dict] = {}
    for size in sorted(args.sizes):
        entry: dict[str, dict] = {}
        by = {(r["arm"], r["seed"]): r for r in rows if r["size"] == size}
        for arm in ARMS:
            entry[arm] = interval([by[(arm, s)]["clean_accuracy"] for s in args.seeds])
            entry[f"{arm}_ece"] = interval([by[(arm, s)]["clean_ece"] for s in args.seeds])
            if arm != "bt":
                for key, suffix in (("clean_accuracy", ""), ("clean_ece", "_ece")):
                    entry[f"{arm}_minus_bt{suffix}"] = interval(
                        [by[(arm, s)][key] - by[("bt", s)][key] for s in args.seeds]
                    )
            for n in ns if ("bt", args.seeds[0]) in bon and size == max(args.sizes) else ():
                entry[f"{arm}_bon_gold_n{n}"] = interval(
                    [by[(arm, s)][f"bon_gold_n{n}"] for s in args.seeds]
                )
        if bon and size == max(args.sizes):
            base = np.mean([bon[("bt", s)] for s in args.seeds], axis=0)
            for arm in ARMS[1:]:
                curve = np.mean([bon[(arm, s)] for s in args.seeds], axis=0)
                for k, n in enumerate(ns):
                    entry[f"{arm}_bon_gold_n{n}_minus_bt_paired"] = prompt_interval(
                        curve[:, k] - base[:, k]
                    )
        summary[str(size)] = entry
    out = {
        "features": args.features, "noise": p.noise, "held_out_pairs": len(held_out),
        "sizes": sorted(args.sizes), "seeds": args.seeds, "features_lr": args.features_lr, "gold_version": tb.gold_version,
        "pool": None if pool is None else {"dir": str(args.pool_dir), "prompts": args.prompts, "size": args.pool_size},
        "rows": rows, "summary": summary,
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for size, entry in summary.items():
        cells = [f"{k}={v['mean']:.3f}±{v['half_width']:.3f}" for k, v in entry.items()]
        print(size, " ".join(cells))


if __name__ == "__main__":
    main()
