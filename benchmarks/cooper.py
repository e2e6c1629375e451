"""Cooper (Hong et al. 2025, arXiv 2508.05613) against plain GRPO on toy_text's single proxy.

    python benchmarks/cooper.py [--seeds 0 1 2] [--steps 60] [--kl-coef 0.0]
        [--cooper '{lr: 1e-4}'] [--out runs/cooper] [--json cooper.json]

The single proxy of the packaged mitigations study (member 0 of its ensemble: 6,000 pairs,
25 % flipped labels, small backbone, pretrain seed 0, 2 epochs, lr 1e-3; cached, so nothing
is trained here if the study has run) and its RL settings (GRPO, 8 prompts × 8 completions,
lr 1e-4, an evaluation every 10 steps on 100 held-out prompts × 2 samples), for each seed
once without and once with ``RLConfig.cooper``, same steps. ``--kl-coef`` is β in the
reward: 0 is the study's ``single-nokl`` (it hacks), 0.01 its ``single``.

Reported per method (mean over seeds, Student-t 95 % interval, ``core.stats.t_interval``),
gold and proxy relative to each run's base-policy evaluation (step 0): final gold, peak
gold (the best evaluation), its step, final proxy gain under the frozen proxy (Cooper's
runs are evaluated with the frozen proxy too), final KL; and the paired differences
Cooper − plain per seed. Also Cooper's mean pairs per step and the fraction of the policy's
samples the rule rejects. Runs are resumed from their run directories when present.

Measured (2026-12-03, β = 0, 60 steps, seeds 0, 1, 2; paired Cooper − GRPO): with the
defaults (lr 1e-4, 1 update a step) final gold +0.92 [+0.70, +1.14], peak gold −0.01
[−0.22, +0.20], final KL −4.7 [−6.8, −2.6]: it still hacks (final gold −2.28 against the
base). With ``--cooper '{lr: 1.0e-3, updates: 4}'`` final gold +4.07 [+3.62, +4.51], peak
gold +0.08 [−0.27, +0.43], proxy gain −0.23 [−0.32, −0.15], final KL 0.98 against 22.5:
no hacking, but the co-trained reward model's std over a batch falls from ~1 to 0.017 (it
flattens to a near-constant), so the policy barely moves; GRPO's per-group std
normalization still turns its residual differences into full-size advantages.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import yaml

FIGURES = {
    "final_gold": "final gold − base",
    "peak_gold": "peak gold − base",
    "peak_step": "peak step",
    "proxy_gain": "final proxy − base",
    "final_kl": "final KL",
}


def _summary(metrics: list[dict]) -> dict[str, float]:
    base, final = metrics[0], metrics[-1]
    peak = max(metrics, key=lambda r: r["gold"])
    return {
        "final_gold": final["gold"] - base["gold"],
        "peak_gold": peak["gold"] - base["gold"],
        "peak_step": float(peak["step"]),
        "proxy_gain": final["proxy"] - base["proxy"],
        "final_kl": final["kl"],
        "base_gold": base["gold"],
    }


def study_single_proxy(tb) -> Path:
    """The packaged mitigations study's single proxy (member 0 of its ensemble; cached)."""
    from goodhartlab.experiments.proxies import train_proxies

    proxies = train_proxies(
        tb, pairs=6000, noise=0.25, size="small", seeds=(0, 1, 2, 3, 4), pretrain_seeds=True,
        epochs=2, lr=1e-3,
    )  # fmt: skip
    return Path(proxies.paths[0])


def _iv(values: list[float]) -> dict[str, float]:
    from goodhartlab.core.stats import t_interval

    lo, hi = t_interval(np.asarray(values, dtype=np.float64))
    return {"mean": float(np.mean(values)), "lo": lo, "hi": hi, "n": len(values)}


def _fmt(x: dict, f: str = "{:+.2f}") -> str:
    return f"{f.format(x['mean'])} [{f.format(x['lo'])}, {f.format(x['hi'])}]"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--kl-coef", type=float, default=0.0)
    ap.add_argument("--cooper", default="{}", help="CooperConfig as a YAML mapping")
    ap.add_argument(
        "--label", default="cooper", help="the Cooper runs' name (run dirs LABEL-seedS)"
    )
    ap.add_argument("--out", default="runs/cooper")
    ap.add_argument("--json", default=None, help="write the results here (default OUT/cooper.json)")
    ap.add_argument("--cache-dir", default=None, help="testbed cache (default $GOODHART_CACHE)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from goodhartlab.optimize.rl import RLConfig, run_rl
    from goodhartlab.rewards import RewardModel
    from goodhartlab.rewards.cooper import CooperConfig
    from goodhartlab.testbeds import get_testbed

    cooper = CooperConfig(**(yaml.safe_load(args.cooper) or {}))
    tb = get_testbed("toy_text", cache_dir=args.cache_dir or os.environ.get("GOODHART_CACHE"))
    proxy_dir = study_single_proxy(tb)
    out = Path(args.out)
    methods = {"grpo": None, args.label: cooper}
    runs: dict[str, dict[int, dict]] = {m: {} for m in methods}
    extra: dict[int, dict] = {}
    t0 = time.perf_counter()
    for seed in args.seeds:
        for name, c in methods.items():
            cfg = RLConfig(
                name=name, algorithm="grpo", steps=args.steps, prompts_per_step=8, group_size=8,
                lr=1e-4, kl_coef=args.kl_coef, eval_every=10, eval_prompts=100,
                checkpoint_every=20, max_new_tokens=tb.max_new_tokens, seed=seed, cooper=c,
            )  # fmt: skip
            run_dir = out / f"{name}-seed{seed}"
            t = time.perf_counter()
            result = run_rl(
                run_dir, policy=tb.policy_path, reward=RewardModel.from_pretrained(proxy_dir),
                gold=tb.gold, train_prompts=tb.train_prompts, eval_prompts=tb.eval_prompts,
                config=cfg, resume=(run_dir / "config.yaml").is_file(),
            )  # fmt: skip
            runs[name][seed] = _summary(result.metrics) | {"seconds": time.perf_counter() - t}
            if c is not None:
                train = [json.loads(x) for x in (run_dir / "train.jsonl").read_text().splitlines()]
                extra[seed] = {
                    "pairs_per_step": float(np.mean([r["cooper_pairs"] for r in train])),
                    "rejected": float(np.mean([r["cooper_rejected"] for r in train])),
                    "rejected_last10": float(np.mean([r["cooper_rejected"] for r in train[-10:]])),
                    "score_std_first10": float(
                        np.mean([r["cooper_score_std"] for r in train[:10]])
                    ),
                    "score_std_last10": float(
                        np.mean([r["cooper_score_std"] for r in train[-10:]])
                    ),
                    "r_proxy_minus_frozen_last10": float(
                        np.mean([r["r_proxy"] - r["r_proxy_frozen"] for r in train[-10:]])
                    ),
                }
            print(f"seed {seed} {name}: " + json.dumps(runs[name][seed]), flush=True)

    table = {m: {k: _iv([runs[m][s][k] for s in args.seeds]) for k in FIGURES} for m in methods}
    paired = {
        k: _iv([runs[args.label][s][k] - runs["grpo"][s][k] for s in args.seeds]) for k in FIGURES
    }
    report = {
        "settings": {
            "seeds": args.seeds, "steps": args.steps, "kl_coef": args.kl_coef,
            "cooper": cooper.model_dump(), "proxy": str(proxy_dir),
        },
        "runs": runs, "cooper_stats": extra, "table": table, "paired_minus_grpo": paired,
        "wall_s": time.perf_counter() - t0,
    }  # fmt: skip
    fmt = {"peak_step": "{:.0f}", "final_kl": "{:.2f}"}
    print("\n| method | " + " | ".join(FIGURES.values()) + " |\n|---|" + "---|" * len(FIGURES))
    for m in methods:
        print(
            f"| {m} | "
            + " | ".join(_fmt(table[m][k], fmt.get(k, "{:+.2f}")) for k in FIGURES)
            + " |"
        )
    print(f"| {args.label} − grpo (paired) | " + " | ".join(
        _fmt(paired[k], fmt.get(k, "{:+.2f}")) for k in FIGURES) + " |")  # fmt: skip
    if extra:
        mean = {
            k: float(np.mean([e[k] for e in extra.values()])) for k in next(iter(extra.values()))
        }
        print("cooper: " + ", ".join(f"{k} {v:.3g}" for k, v in mean.items()))
    print(f"wall {report['wall_s']:.0f} s")
    path = Path(args.json) if args.json else out / f"{args.label}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
