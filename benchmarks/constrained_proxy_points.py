"""Issue 18 item 2: proxy points of toy_text's component proxies, with and without the
correlation between components (Moskovitz et al. 2023, arXiv 2310.04373).

    python benchmarks/constrained_proxy_points.py [OUT.json]

Trains (or finds cached) the component proxies on the mitigations study's pairs
(``experiments.proxies.train_component_proxies``: 6,000 pairs, 25 % noise, small backbone).
Samples: 16 base-policy completions for each of 256 training prompts (4,096), plus, for each
prompt and component, the one of its 16 that the component proxy ranks first (5 x 256). The
proxies are standardized on the 4,096 base samples (z units, as the RL pipeline's
``standardize_members``). Proxy point: ``core.constrained.proxy_point`` (10 equal-count bins)
over the pooled samples. Decorrelated: each sample's gold with the *other* gold components
permuted across samples (independently per component), so gold depends on component k only
through its own term: where the two differ, correlation moved the proxy point.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from goodhartlab.core.constrained import proxy_point
from goodhartlab.experiments.proxies import train_component_proxies
from goodhartlab.models.generation import sample_completions
from goodhartlab.rewards import Ensemble
from goodhartlab.testbeds import get_testbed
from goodhartlab.testbeds.toy_text.components import COMPONENTS, component_matrix

PROMPTS, N, BINS = 256, 16, 10


def main(out_path: str) -> None:
    torch.set_num_threads(1)
    t0 = time.time()
    tb = get_testbed("toy_text", {}, progress=False)
    ps = train_component_proxies(
        tb, pairs=6000, noise=0.25, size="small", epochs=2, lr=1e-3, seed=0, progress=False
    )
    rng = np.random.default_rng(123)
    prompts = [tb.train_prompts[i] for i in rng.choice(len(tb.train_prompts), PROMPTS, False)]
    comps = sample_completions(
        tb.load_policy("cpu"), tb.tokenizer, prompts, N, max_new_tokens=tb.max_new_tokens, seed=7
    )
    flat_p = [p for p in prompts for _ in range(N)]
    flat_c = [c for cs in comps for c in cs]
    raw = Ensemble.from_dirs(ps.paths).score_members(flat_p, flat_c).double()  # (K, P·N)
    mu, sd = raw.mean(1, keepdim=True), raw.std(1, unbiased=False, keepdim=True)
    z = (raw - mu) / sd
    g_comp = component_matrix(flat_p, flat_c).double()  # (K, P·N)
    gold = g_comp.sum(0)
    k_count = len(COMPONENTS)
    best = [
        p * N + int(b)
        for k in range(k_count)
        for p, b in enumerate(z.view(k_count, PROMPTS, N)[k].argmax(1))
    ]
    pool = torch.tensor(list(range(PROMPTS * N)) + best)
    zp, gp, gcp = z[:, pool], gold[pool], g_comp[:, pool]
    corr = torch.corrcoef(z)
    perm = torch.Generator().manual_seed(0)
    out = {
        "calibration": {"mean": mu.squeeze(1).tolist(), "std": sd.squeeze(1).tolist()},
        "proxy_corr": corr.tolist(),
        "gold_component_corr": torch.corrcoef(g_comp).tolist(),
        "components": {},
    }
    print(
        "| component | proxy clean acc | mean corr with the other proxies | proxy point (z) "
        "| bin (of 10) | gold there | decorrelated proxy point (z) | bin |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for k, name in enumerate(COMPONENTS):
        pp = proxy_point(zp[k], gp, bins=BINS)
        g_dec = gcp[k].clone()
        for j in range(k_count):
            if j != k:
                g_dec += gcp[j][torch.randperm(gcp.shape[1], generator=perm)]
        pd = proxy_point(zp[k], g_dec, bins=BINS)
        others = [float(corr[k, j]) for j in range(k_count) if j != k]
        acc = ps.metrics[k].get("clean_accuracy", float("nan"))
        out["components"][name] = {
            "proxy_point": pp.threshold,
            "peak_bin": pp.peak_bin,
            "centers": pp.centers,
            "mean_gold": pp.mean_gold,
            "decorrelated_proxy_point": pd.threshold,
            "decorrelated_peak_bin": pd.peak_bin,
            "decorrelated_mean_gold": pd.mean_gold,
            "corr_with_others": others,
            "clean_accuracy": acc,
        }
        print(
            f"| {name} | {acc:.2f} | {np.mean(others):+.2f} | {pp.threshold:+.2f} | "
            f"{pp.peak_bin + 1} | {pp.mean_gold[pp.peak_bin]:+.2f} | {pd.threshold:+.2f} | "
            f"{pd.peak_bin + 1} |"
        )
    print(f"base-policy gold: {float(gold.mean()):+.2f}")
    print("proxy correlations on base samples:\n" + np.array2string(corr.numpy(), precision=2))
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"{time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "proxy_points.json")
