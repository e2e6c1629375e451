"""Issue 18: the mitigations study's tables over seeds, as Markdown for BENCHMARKS.md.

    python benchmarks/mitigations.py RUN_DIR        # a finished `goodhart run mitigations`

Rebuilds the study's report (``goodhartlab.report.build_report``: the table over seeds with
Student-t 95 % intervals, ``report.seeds``, and the claims, ``report.claims``) and prints
both tables, plus the wall time of the RL stage from the manifest.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from goodhartlab.report import build_report
from goodhartlab.report.seeds import FIGURES


def _iv(x, fmt="{:+.2f}") -> str:
    if not x or x.get("mean") is None:
        return "n/a"
    if x.get("lo") is None:
        return fmt.format(x["mean"]) + f" ({x['n']} seed)"
    note = "" if x["n"] == 3 else f" ({x['n']} seeds)"
    return f"{fmt.format(x['mean'])} [{fmt.format(x['lo'])}, {fmt.format(x['hi'])}]{note}"


def main(run_dir: Path) -> None:
    report = build_report(run_dir)
    fmt = {"kl_peak": "{:.2g}", "final_kl": "{:.2g}", "drop": "{:.0%}"}
    head = ["method", "status", *FIGURES.values(), "final − baseline", "peak − baseline"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in report["seeds"]:
        cells = [r["method"], r["status"], *(_iv(r[k], fmt.get(k, "{:+.2f}")) for k in FIGURES)]
        for k in ("final_vs_baseline", "peak_vs_baseline"):
            cells.append(f"{_iv(r.get(k))} ({r['baseline']})" if r.get(k) else "—")
        print("| " + " | ".join(cells) + " |")
    print("\n| paper | claim | measured | verdict |\n|---|---|---|---|")
    for c in report["claims"]:
        print(f"| {c['paper']} | {c['claim']} | {c['measured']} | **{c['verdict']}** |")
    stages = json.loads((run_dir / "manifest.json").read_text()).get("stages", {})
    rl = [v.get("seconds", 0.0) for k, v in stages.items() if k.startswith("rl/")]
    print(f"\n{len(rl)} RL runs, {sum(rl):.0f} worker-seconds")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
