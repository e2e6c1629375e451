"""Issue 18, constrained RLHF: ξ-PPO against μ-PPO and the fixed sum, and what NM-PPO found.

    python benchmarks/constrained_runs.py RUN_DIR [RUN_DIR ...]

Reads the RL runs of finished `goodhart run mitigations 'rl.methods=[...]'` runs (each
``rl/<method>-s<seed>``) and prints, as Markdown for BENCHMARKS.md:
- per method, over seeds: peak and final gold relative to the run's base policy (its step-0
  evaluation), final KL, and each component's distance to its threshold v_k − θ_k (the
  members' standardized units, the mean over the last 10 training steps);
- every pair of methods of equal length, paired by seed (Student-t 95 %,
  ``core.stats.t_interval``);
- for NM-PPO runs (``theta_0`` in the evaluations), the thresholds each told evaluation was
  trained at, the best one and the last.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from goodhartlab.core.stats import t_interval


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _iv(values: list[float], fmt: str = "{:+.2f}") -> str:
    lo, hi = t_interval(np.asarray(values, dtype=float))
    return f"{fmt.format(np.mean(values))} [{fmt.format(lo)}, {fmt.format(hi)}]"


def _run_summary(run: Path) -> dict:
    metrics, train = _rows(run / "metrics.jsonl"), _rows(run / "train.jsonl")
    base = metrics[0]["gold"]
    gaps = sorted(k for k in train[-1] if k.startswith("constraint_"))
    out = {
        "steps": metrics[-1]["step"],
        "peak": max(m["gold"] for m in metrics) - base,
        "final": metrics[-1]["gold"] - base,
        "kl": metrics[-1]["kl"],
        "gaps": [float(np.mean([r[k] for r in train[-10:]])) for k in gaps],
        "mu": [train[-1][f"mu_{i}"] for i in range(len(gaps))],
    }
    told = [m for m in metrics if "theta_0" in m and m["step"] > 0]
    if told:
        k = len([key for key in told[0] if key.startswith("theta_")])
        out["search"] = [
            (m["step"], m["gold"] - base, [round(m[f"theta_{i}"], 2) for i in range(k)])
            for m in told
        ]
    return out


def main(run_dirs: list[Path]) -> None:
    runs: dict[str, dict[int, dict]] = defaultdict(dict)
    for d in run_dirs:
        for run in sorted((d / "rl").iterdir()):
            name, seed = re.fullmatch(r"(.+)-s(\d+)", run.name).groups()
            if (run / "summary.json").exists():  # finished runs only
                runs[name][int(seed)] = _run_summary(run)
    print(
        "| method | steps | seeds | peak gold | final gold | final KL | v_k − θ_k (last 10 steps) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, by_seed in runs.items():
        s = list(by_seed.values())
        gaps = np.mean([r["gaps"] for r in s], axis=0) if s[0]["gaps"] else []
        cells = [
            name, str(s[0]["steps"]), str(len(s)), _iv([r["peak"] for r in s]),
            _iv([r["final"] for r in s]), _iv([r["kl"] for r in s], "{:.2f}"),
            ", ".join(f"{g:+.2f}" for g in gaps) or "—",
        ]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    print("\n| pair (paired by seed) | final gold | peak gold |\n|---|---|---|")
    for a, b in itertools.combinations(runs, 2):
        seeds = sorted(set(runs[a]) & set(runs[b]))
        if len(seeds) < 2 or runs[a][seeds[0]]["steps"] != runs[b][seeds[0]]["steps"]:
            continue
        diff = {k: [runs[b][s][k] - runs[a][s][k] for s in seeds] for k in ("final", "peak")}
        print(f"| {b} − {a} | {_iv(diff['final'])} | {_iv(diff['peak'])} |")
    for name, by_seed in runs.items():
        for seed, r in sorted(by_seed.items()):
            if "search" not in r:
                continue
            best = max(r["search"], key=lambda t: t[1])
            print(f"\n{name} seed {seed}: {len(r['search'])} told; best gold {best[1]:+.2f} at "
                  f"step {best[0]}, θ = {best[2]}; last θ = {r['search'][-1][2]}; final "
                  f"multipliers {[round(m, 2) for m in r['mu']]}")  # fmt: skip
            for step, gold, theta in r["search"]:
                print(f"  step {step:3d}: gold {gold:+.2f} at θ = {theta}")


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]])
