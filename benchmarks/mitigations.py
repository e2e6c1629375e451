"""Issue 18: the mitigations study's table, with 95 % intervals over seeds.

    python benchmarks/mitigations.py RUN_DIR        # a finished `goodhart run mitigations`

Reads every ``RUN_DIR/rl/<method>-s<seed>/metrics.jsonl`` and prints, per method, the mean
over seeds and a Student-t 95 % interval (``core.stats.t_interval``) of: peak gold, KL at the
peak, gold when the run first reaches KL budgets of 1, 4 and 16 nats (``core.scaling.gold_at_kl``;
"n/a" when fewer than two seeds reach it), final gold, the drop from the peak as a fraction
of the gain over the base policy, and the paired (same-seed) difference of final and peak
gold to the method's baseline: ``single`` for GRPO methods, ``ppo-single`` for ``ppo-*``.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from goodhartlab.core.scaling import gold_at_kl
from goodhartlab.core.stats import t_interval

BUDGETS = (1.0, 4.0, 16.0)


def run_metrics(metrics: list[dict]) -> dict[str, float]:
    """One run's figures from its metrics.jsonl lines (step order)."""
    kl = np.array([m["kl"] for m in metrics])
    gold = np.array([m["gold"] for m in metrics])
    k = int(np.argmax(gold))
    gain = gold[k] - gold[0]
    out = {
        "peak": float(gold[k]),
        "kl_peak": float(kl[k]),
        "final": float(gold[-1]),
        "final_kl": float(kl[-1]),
        "drop": float((gold[k] - gold[-1]) / gain) if gain > 0 else math.nan,
    }
    for b in BUDGETS:
        out[f"gold@{b:g}"] = gold_at_kl(kl, gold, b)
    return out


def load(run_dir: Path) -> dict[str, dict[int, dict[str, float]]]:
    """{method: {seed: figures}} for every finished RL run of the study."""
    runs: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    for path in sorted((run_dir / "rl").glob("*/metrics.jsonl")):
        m = re.fullmatch(r"(.+)-s(\d+)", path.parent.name)
        if not m or not (path.parent / "summary.json").is_file():
            continue
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        runs[m.group(1)][int(m.group(2))] = run_metrics(lines)
    return runs


def _cell(values: list[float], digits: int = 2) -> str:
    x = np.array(values, dtype=float)
    x = x[~np.isnan(x)]
    note = "" if x.size == len(values) else f" ({x.size}/{len(values)} seeds)"
    if x.size < 2:
        return "n/a" if x.size == 0 else f"{x[0]:.{digits}f}{note}"
    lo, hi = t_interval(x)
    return f"{x.mean():.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]{note}"


def table(runs: dict[str, dict[int, dict[str, float]]]) -> str:
    keys = ["peak", "kl_peak", *(f"gold@{b:g}" for b in BUDGETS), "final", "drop"]
    head = [
        "method", "seeds", "peak gold", "KL at peak", "gold @ KL 1", "gold @ KL 4",
        "gold @ KL 16", "final gold", "drop / gain", "final − baseline", "peak − baseline",
    ]  # fmt: skip
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, seeds in runs.items():
        base = runs.get("ppo-single" if method.startswith("ppo-") else "single", {})
        shared = [s for s in seeds if s in base]
        cells = [method, str(len(seeds))]
        cells += [_cell([seeds[s][k] for s in seeds]) for k in keys]
        for k in ("final", "peak"):
            paired = [seeds[s][k] - base[s][k] for s in shared]
            cells.append(_cell(paired) if base is not seeds else "—")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(load(Path(sys.argv[1]))))
