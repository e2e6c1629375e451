"""Reward sources on real_text's base-policy samples, scored as proxies against the gold.

Issue 16 items 3 and 4 ask of every reward taken from the language model itself (CRew
confidence, reference likelihood, follow-up likelihood, the endogenous reward) and of every
generative judge: how well does it rank pairs the gold ranks, what does best-of-n against it
give in gold, and is it hackable? This script answers on a shared pool: ``--prompts``
held-out real_text prompts x ``--pool-size`` samples of SmolLM2-135M-Instruct (chat
template, temperature 1, ``--max-new-tokens``), gold-scored once (``real_text-gold-v1``) and
cached beside the pool. For each ``--sources`` name (a ``REWARD_SOURCES`` entry whose first
argument is a causal-LM folder: the testbed's policy folder is passed) it reports

* pair accuracy: over every within-prompt pair of samples whose gold differs, the share the
  source orders as the gold does (a tie in the source counts one half), averaged per prompt,
  with a percentile-bootstrap 95 % interval over prompts (``core.stats.bootstrap_ci``);
* Spearman's rho between source and gold within each prompt, averaged over prompts;
* best-of-n gold at n = 1, 2, 4, ..., pool size (unbiased estimator, ``core.bon``), the gain
  over n = 1 with its bootstrap interval over prompts, and the oracle's (gold picks);
* "hackable": the n at which the gold curve peaks and the drop from that peak to the
  largest n with its paired bootstrap interval over prompts (a drop whose interval excludes
  zero is over-optimization).

    python benchmarks/real_text_rewards.py --sources lm_confidence lm_endogenous \
        [--prompts 24] [--pool-size 16] [--pool-dir /tmp/rt_pool] [--out rewards.json]

Scores of each source are cached in ``--pool-dir``/scores_<name>.json (delete to rescore).
One torch thread by default (``--threads``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np
import torch
from scipy.stats import spearmanr

from goodhartlab.artifacts import atomic_write_json
from goodhartlab.core.bon import expected_best_of_n
from goodhartlab.core.stats import bootstrap_ci
from goodhartlab.optimize.pool import build_pool
from goodhartlab.rewards import REWARD_SOURCES
from goodhartlab.testbeds.real_text.testbed import RealText


def pair_accuracy(proxy: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Per prompt, the share of gold-ordered sample pairs the proxy orders alike (ties 1/2).

    Shapes: (P, N) in, (P,) out; a prompt whose samples all tie in gold gets NaN."""
    out = np.full(proxy.shape[0], np.nan)
    for p in range(proxy.shape[0]):
        dg = np.sign(gold[p][:, None] - gold[p][None, :])
        dr = np.sign(proxy[p][:, None] - proxy[p][None, :])
        mask = np.triu(dg != 0, k=1)
        if mask.any():
            agree = (dg[mask] == dr[mask]) + 0.5 * (dr[mask] == 0)
            out[p] = agree.mean()
    return out


def score_cached(path: Path, score_fn, prompts: list[str], completions: list[str], batch: int):
    if path.exists():
        cached = json.loads(path.read_text())
        if len(cached["scores"]) == len(completions):
            return np.asarray(cached["scores"], dtype=np.float64), cached["seconds"]
    t0 = time.perf_counter()
    scores: list[float] = []
    for i in range(0, len(completions), batch):
        out = score_fn(prompts[i : i + batch], completions[i : i + batch])
        scores.extend(torch.as_tensor(out, dtype=torch.float64).reshape(-1).tolist())
        if len(scores) % (8 * batch) == 0 or len(scores) == len(completions):
            print(f"  {path.stem}: {len(scores)}/{len(completions)}", flush=True)
    seconds = time.perf_counter() - t0
    atomic_write_json(path, {"scores": scores, "seconds": seconds})
    return np.asarray(scores, dtype=np.float64), seconds


def bon_report(proxy: np.ndarray, gold: np.ndarray, ns: list[int]) -> dict:
    curve = expected_best_of_n(proxy, gold, ns)
    per = np.asarray(curve.gold_per_prompt)
    gain = per - per[:, :1]
    lo, hi = bootstrap_ci(gain)
    peak = int(np.argmax(per.mean(0)))
    drop = per[:, peak] - per[:, -1]
    dlo, dhi = bootstrap_ci(drop[:, None])
    return {
        "n": ns,
        "gold": per.mean(0).tolist(),
        "gain": gain.mean(0).tolist(),
        "gain_lo": np.asarray(lo).tolist(),
        "gain_hi": np.asarray(hi).tolist(),
        "proxy": np.asarray(curve.proxy).tolist(),
        "peak_n": ns[peak],
        "drop_from_peak": float(drop.mean()),
        "drop_ci": [float(np.asarray(dlo)[0]), float(np.asarray(dhi)[0])],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sources", nargs="+", required=True, help="REWARD_SOURCES names")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--pool-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--pool-dir", default="rt_rewards_pool")
    ap.add_argument("--batch-size", type=int, default=16, help="completions per source call")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="real_text_rewards.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tb = RealText(progress=False)
    pool_dir = Path(args.pool_dir)
    t0 = time.perf_counter()
    pool = build_pool(
        pool_dir, tb.load_policy(), tb.tokenizer, tb.eval_prompts[: args.prompts],
        args.pool_size, max_new_tokens=args.max_new_tokens, seed=0, batch_size=64,
        chunk_size=128, progress=True,
    )  # fmt: skip
    print(f"pool: {time.perf_counter() - t0:.0f} s", flush=True)
    prompts, completions = pool.flat()
    shape = (pool.num_prompts, pool.pool_size)
    gold, gold_s = score_cached(
        pool_dir / "scores_gold.json", tb.gold.score, prompts, completions, args.batch_size
    )
    gold = gold.reshape(shape)
    ns = [n for n in (2**k for k in range(20)) if n <= pool.pool_size]
    results: dict = {
        "pool": {"prompts": shape[0], "pool_size": shape[1], "digest": pool.digest},
        "gold_seconds": gold_s,
        "oracle": bon_report(gold, gold, ns),
        "sources": {},
    }
    for name in args.sources:
        source = REWARD_SOURCES[name](str(tb.policy_path))
        scores, seconds = score_cached(
            pool_dir / f"scores_{name}.json", source.score, prompts, completions, args.batch_size
        )
        scores = scores.reshape(shape)
        acc = pair_accuracy(scores, gold)
        keep = ~np.isnan(acc)
        lo, hi = bootstrap_ci(acc[keep][:, None])
        rho = [spearmanr(scores[p], gold[p]).statistic for p in range(shape[0])]
        results["sources"][name] = {
            "pair_accuracy": float(acc[keep].mean()),
            "pair_accuracy_ci": [float(np.asarray(lo)[0]), float(np.asarray(hi)[0])],
            "spearman": float(np.nanmean(rho)),
            "seconds": seconds,
            "seconds_per_completion": seconds / len(completions),
            "bon": bon_report(scores, gold, ns),
        }
        r = results["sources"][name]
        print(
            f"{name}: pair acc {r['pair_accuracy']:.3f} [{lo[0]:.3f}, {hi[0]:.3f}], rho "
            f"{r['spearman']:+.3f}, best-of-{ns[-1]} gain {r['bon']['gain'][-1]:+.3f} "
            f"[{r['bon']['gain_lo'][-1]:+.3f}, {r['bon']['gain_hi'][-1]:+.3f}], peak n "
            f"{r['bon']['peak_n']}, drop {r['bon']['drop_from_peak']:+.3f} "
            f"{r['bon']['drop_ci']}, {r['seconds_per_completion']:.3f} s/completion",
            flush=True,
        )
    o = results["oracle"]
    print(f"oracle: best-of-{ns[-1]} gain {o['gain'][-1]:+.3f}")
    atomic_write_json(Path(args.out), results)


if __name__ == "__main__":
    main()
