"""Nash-MP against a pairwise preference model vs against the proxy's Bradley-Terry preference.

    python benchmarks/nash_pairwise.py [--seeds 0 1 2] [--steps 60] [--variants bt pairwise single]
        [--out runs/nash_pairwise] [--json FILE]

The packaged mitigations study's proxy data and settings: its 6,000 toy_text pairs (25 %
flipped labels) and its single proxy (member 0: small backbone, pretrain seed 0, 2 epochs,
lr 1e-3; cached, nothing is trained if the study has run), and its ``nashmp`` method (Nash-MP,
60 steps of 8 prompts × 8 completions, lr 1e-4, β = 0.01 in the reward, an evaluation every 10
steps on 100 held-out prompts × 2 samples).

1. A pairwise preference model (``train-rm --objective pairwise``, ``core.pairwise``) on the
   same backbone (small, pretrain seed 0), seed, recipe and train / held-out split as the
   proxy (``eval_fraction`` 0.1, ``split_seed`` 0: the same 5,400 training pairs); both are
   evaluated on the 600 held-out pairs against their noise-free labels (clean accuracy; the
   paired difference with a 95 % bootstrap interval over pairs, ``core.stats.bootstrap_ci``).
   The study's "last 1,000 pairs" are not held out from its proxy (its split is random), so
   the held-out split is the one both models never saw. Diagnostics on 4 base-policy samples
   of each of 100 held-out prompts: cyclic triples, agreement with the proxy and with gold, and
   how flat the two preferences are.
2. For each seed, Nash-MP once with the pairwise model (the payoff its preferences) and once
   with the proxy's Bradley-Terry preference σ(r(y) − r(y')) (the study's ``nashmp``), the same
   settings. Gold relative to each run's base-policy evaluation (step 0): final and peak gold,
   the peak's step, final KL; the paired differences pairwise − bt with Student-t 95 %
   intervals over seeds (``core.stats.t_interval``). Also GRPO on the proxy at the same
   settings (``single``, the study's RLHF baseline) and pairwise − single: NLHF's claim. Gold
   at KL budgets of 0.5 and 1 nat (``core.scaling.gold_at_kl``) compares them at equal KL.
   The pairwise runs' ``proxy`` is their win rate over base-policy samples
   (``rewards.pipeline``), not comparable with a BT score.
Runs are resumed from their run directories when present.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

FIGURES = {
    "final_gold": "final gold − base",
    "peak_gold": "peak gold − base",
    "peak_step": "peak step",
    "final_kl": "final KL",
    "gold_at_kl0.5": "gold − base @ KL 0.5",
    "gold_at_kl1": "gold − base @ KL 1",
}


def _summary(metrics: list[dict]) -> dict[str, float]:
    from goodhartlab.core.scaling import gold_at_kl

    base, final = metrics[0], metrics[-1]
    peak = max(metrics, key=lambda r: r["gold"])
    kl, gold = [m["kl"] for m in metrics], [m["gold"] for m in metrics]
    return {
        "final_gold": final["gold"] - base["gold"],
        "peak_gold": peak["gold"] - base["gold"],
        "peak_step": float(peak["step"]),
        "final_kl": final["kl"],
        # NaN where the run never reaches the budget (core.scaling.gold_at_kl).
        "gold_at_kl0.5": gold_at_kl(kl, gold, 0.5) - base["gold"],
        "gold_at_kl1": gold_at_kl(kl, gold, 1.0) - base["gold"],
        "base_gold": base["gold"],
        "final_proxy": final["proxy"],
    }


def _iv(values: list[float]) -> dict[str, float]:
    """Mean and Student-t 95 % interval over the seeds with a value (NaN: not reached)."""
    from goodhartlab.core.stats import t_interval

    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        mean = float(x.mean()) if x.size else float("nan")
        return {"mean": mean, "lo": float("nan"), "hi": float("nan"), "n": int(x.size)}
    lo, hi = t_interval(x)
    return {"mean": float(x.mean()), "lo": lo, "hi": hi, "n": int(x.size)}


def _fmt(x: dict, f: str = "{:+.2f}", of: int | None = None) -> str:
    """mean [lo, hi], and how many of the ``of`` seeds had a value when not all did."""
    seeds = f" ({x['n']} of {of} seeds)" if of is not None and x["n"] < of else ""
    return f"{f.format(x['mean'])} [{f.format(x['lo'])}, {f.format(x['hi'])}]{seeds}"


def _clean_correct(rm, pairs) -> np.ndarray:
    """1 where the model orders a held-out pair as its noise-free label does (a tie is wrong)."""
    from goodhartlab.rewards import PairwisePreferenceModel

    prompts = [p.prompt for p in pairs]
    chosen, rejected = [p.chosen for p in pairs], [p.rejected for p in pairs]
    if isinstance(rm, PairwisePreferenceModel):
        gap = rm.preference(prompts, chosen, rejected).double().numpy() - 0.5
    else:
        r = rm(prompts + prompts, chosen + rejected).double().numpy()
        gap = r[: len(pairs)] - r[len(pairs) :]
    flipped = np.array([bool(p.flipped) for p in pairs])
    return np.where(flipped, gap < 0, gap > 0).astype(np.float64)


def _accuracy_table(proxy, pm, held_out) -> dict:
    from goodhartlab.core.stats import bootstrap_ci

    bt, pw = _clean_correct(proxy, held_out), _clean_correct(pm, held_out)
    out = {"n": len(held_out)}
    for name, x in (("bt", bt), ("pairwise", pw), ("pairwise_minus_bt", pw - bt)):
        lo, hi = bootstrap_ci(x[:, None], n_boot=2000, seed=0)
        out[name] = {"mean": float(x.mean()), "lo": float(lo[0]), "hi": float(hi[0])}
    return out


def _diagnostics(tb, pm, proxy, prompts: list[str], G: int = 4, seed: int = 123) -> dict:
    """How general the pairwise model is, on G base-policy samples of each prompt: cyclic
    triples (a ≻ b ≻ c ≻ a; Bradley-Terry has none), sign agreement with the proxy, accuracy
    against gold (pairs of unequal gold), the std of P(y ≻ y') and of the self-play payoff
    within a group, for the pairwise model and the proxy's Bradley-Terry preference."""
    import itertools

    import torch

    from goodhartlab.core.nash import bt_preference, win_rate_from_preferences
    from goodhartlab.measure.evaluate import sample_rollouts

    ro = sample_rollouts(
        tb.load_policy("cpu"), tb.tokenizer, prompts, G, max_new_tokens=tb.max_new_tokens,
        temperature=1.0, generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    flat = [p for p in prompts for _ in range(G)]
    p_pm = pm.preference_matrix(prompts, ro.completions, G)
    r = torch.as_tensor(proxy(flat, ro.completions)).double().reshape(-1, G)
    p_bt = bt_preference(r[:, :, None], r[:, None, :])
    gold = torch.as_tensor(tb.gold(flat, ro.completions)).double().reshape(-1, G)
    cyclic, agree, pm_gold, bt_gold = 0, [], [], []
    for b in range(len(prompts)):
        for i, j, k in itertools.combinations(range(G), 3):
            wins = [p_pm[b, i, j] > 0.5, p_pm[b, j, k] > 0.5, p_pm[b, k, i] > 0.5]
            cyclic += all(wins) or not any(wins)
        for i, j in itertools.combinations(range(G), 2):
            agree.append(bool(p_pm[b, i, j] > 0.5) == bool(r[b, i] > r[b, j]))
            if gold[b, i] != gold[b, j]:
                truth = bool(gold[b, i] > gold[b, j])
                pm_gold.append(bool(p_pm[b, i, j] > 0.5) == truth)
                bt_gold.append(bool(r[b, i] > r[b, j]) == truth)
    off = ~torch.eye(G, dtype=torch.bool)

    def payoff_std(pref):
        return float(win_rate_from_preferences(pref, self_play=True).reshape(-1, G).std(1).mean())

    return {
        "prompts": len(prompts), "samples_per_prompt": G,
        "cyclic_triples": int(cyclic), "triples": len(prompts) * len(list(itertools.combinations(range(G), 3))),
        "sign_agreement_with_proxy": float(np.mean(agree)),
        "gold_accuracy": {"pairwise": float(np.mean(pm_gold)), "bt": float(np.mean(bt_gold)),
                          "pairs": len(pm_gold)},
        "preference_std": {"pairwise": float(p_pm[:, off].std()), "bt": float(p_bt[:, off].std())},
        "payoff_std_in_group": {"pairwise": payoff_std(p_pm), "bt": payoff_std(p_bt)},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument(
        "--variants", nargs="+", default=["bt", "pairwise", "single"],
        choices=["bt", "pairwise", "single"],
    )  # fmt: skip
    ap.add_argument("--out", default="runs/nash_pairwise")
    ap.add_argument("--json", default=None, help="write the results here (default OUT/nash.json)")
    ap.add_argument("--cache-dir", default=None, help="testbed cache (default $GOODHART_CACHE)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from goodhartlab.data import read_pairs
    from goodhartlab.experiments.proxies import train_proxies
    from goodhartlab.optimize.rl import RLConfig, run_rl
    from goodhartlab.rewards import PairwisePreferenceModel, RewardModel
    from goodhartlab.testbeds import backbone_tokenizer, get_testbed
    from goodhartlab.train import RMTrainConfig, train_reward_model
    from goodhartlab.train.rm import _split

    tb = get_testbed("toy_text", cache_dir=args.cache_dir or os.environ.get("GOODHART_CACHE"))
    proxies = train_proxies(
        tb, pairs=6000, noise=0.25, size="small", seeds=(0, 1, 2, 3, 4), pretrain_seeds=True,
        epochs=2, lr=1e-3,
    )  # fmt: skip
    proxy_dir = proxies.paths[0]
    proxy_info = json.loads((proxy_dir / "goodhart_rm.json").read_text())
    out = Path(args.out)
    t0 = time.perf_counter()

    # 1. The pairwise model: the proxy's backbone, seed, recipe and split.
    pairs = read_pairs(proxies.pairs_path)
    recipe = {k: proxy_info["config"][k] for k in ("epochs", "lr", "seed", "split_seed")}
    config = RMTrainConfig(objective="pairwise", **recipe)
    pm_dir = out / "pairwise_pm"
    pm_seconds = None
    if not (pm_dir / "goodhart_rm.json").is_file():
        t = time.perf_counter()
        train_reward_model(
            pairs, backbone_tokenizer(tb, "small"), str(tb.backbone_path("small", seed=0)),
            config, out_dir=pm_dir, progress=False,
        )  # fmt: skip
        pm_seconds = time.perf_counter() - t
    pm = PairwisePreferenceModel.from_pretrained(pm_dir)
    proxy = RewardModel.from_pretrained(proxy_dir)
    _, held_out = _split(list(pairs), config.eval_fraction, config.split_seed)
    accuracy = _accuracy_table(proxy, pm, held_out)
    print("clean held-out accuracy: " + json.dumps(accuracy), flush=True)
    diagnostics = _diagnostics(tb, pm, proxy, list(tb.eval_prompts[:100]))
    print("preference diagnostics: " + json.dumps(diagnostics), flush=True)

    # 2. Nash-MP against each (and GRPO on the proxy: the study's ``single``, RLHF's baseline).
    rewards = {"bt": proxy, "pairwise": pm, "single": proxy}
    runs: dict[str, dict[int, dict]] = {v: {} for v in args.variants}
    for seed in args.seeds:
        for name in args.variants:
            algorithm = "grpo" if name == "single" else "nash_mp"
            cfg = RLConfig(
                name=name if name == "single" else f"nashmp-{name}", algorithm=algorithm,
                steps=args.steps,
                prompts_per_step=8, group_size=8, lr=1e-4, kl_coef=0.01, eval_every=10,
                eval_prompts=100, checkpoint_every=20, max_new_tokens=tb.max_new_tokens,
                seed=seed,
            )  # fmt: skip
            run_dir = out / f"{name}-seed{seed}"
            t = time.perf_counter()
            result = run_rl(
                run_dir, policy=tb.policy_path, reward=rewards[name], gold=tb.gold,
                train_prompts=tb.train_prompts, eval_prompts=tb.eval_prompts, config=cfg,
                resume=(run_dir / "config.yaml").is_file(),
            )  # fmt: skip
            runs[name][seed] = _summary(result.metrics) | {"seconds": time.perf_counter() - t}
            print(f"seed {seed} {name}: " + json.dumps(runs[name][seed]), flush=True)

    table = {
        v: {k: _iv([runs[v][s][k] for s in args.seeds]) for k in FIGURES} for v in args.variants
    }
    paired = {
        f"pairwise − {base}": {
            k: _iv([runs["pairwise"][s][k] - runs[base][s][k] for s in args.seeds]) for k in FIGURES
        }
        for base in ("bt", "single")
        if {"pairwise", base} <= set(args.variants)
    }
    report = {
        "settings": {
            "seeds": args.seeds, "steps": args.steps, "proxy": str(proxy_dir),
            "pairwise_model": str(pm_dir), "pairwise_config": config.model_dump(),
            "pairwise_train_s": pm_seconds,
        },
        "accuracy": accuracy, "diagnostics": diagnostics, "runs": runs, "table": table,
        "paired": paired,
        "wall_s": time.perf_counter() - t0,
    }  # fmt: skip
    acc = {k: accuracy[k] for k in ("bt", "pairwise", "pairwise_minus_bt")}
    print(f"\nclean held-out accuracy (n = {accuracy['n']}): " + ", ".join(
        f"{k} {_fmt(v, '{:.3f}')}" for k, v in acc.items()))  # fmt: skip
    fmt = {"peak_step": "{:.0f}", "final_kl": "{:.2f}"}
    print("\n| preference | " + " | ".join(FIGURES.values()) + " |\n|---|" + "---|" * len(FIGURES))
    for v in args.variants:
        print(f"| {v} | " + " | ".join(
            _fmt(table[v][k], fmt.get(k, "{:+.2f}"), len(args.seeds)) for k in FIGURES) + " |")  # fmt: skip
    for label, diff in paired.items():
        print(f"| {label} (paired) | " + " | ".join(
            _fmt(diff[k], fmt.get(k, "{:+.2f}"), len(args.seeds)) for k in FIGURES) + " |")  # fmt: skip
    print(f"wall {report['wall_s']:.0f} s")
    path = Path(args.json) if args.json else out / "nash.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
