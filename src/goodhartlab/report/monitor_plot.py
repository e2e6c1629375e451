"""The monitor beside gold: one figure for the RL runs of a run directory that were watched
(``--monitor``, or a study's ``rl.monitor``): gold by step above the monitor's alarm score,
the step at which the alarm was raised marked on both (▼)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

__all__ = ["plot_monitor"]


def _watched(points: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        if p.get("kind") == "rl" and isinstance(p.get("monitor"), dict):
            by.setdefault(str(p["method"]), []).append(p)
    return {m: sorted(pts, key=lambda p: p["step"]) for m, pts in by.items()}


def plot_monitor(points: list[dict[str, Any]], out: Path) -> list[Path]:
    """Writes ``out.png`` / ``out.svg``; nothing (an empty list) if no RL run was watched."""
    runs = _watched(points)
    if not runs:
        return []
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from goodhartlab.report.plots import save_png_svg

    fig, (ax_gold, ax_alarm) = plt.subplots(2, 1, figsize=(6.4, 5.6), sharex=True)
    colors = itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for method, pts in runs.items():
        color = next(colors)
        steps = [p["step"] for p in pts]
        gold = [p["gold"] for p in pts]
        score = [p["monitor"].get("alarm_score") for p in pts]
        score = [math.nan if s is None else s for s in score]
        ax_gold.plot(steps, gold, "o-", ms=3, color=color, label=method)
        ax_alarm.plot(steps, score, "o-", ms=3, color=color)
        raised = pts[-1]["monitor"].get("alarm_step")
        if raised is not None:
            k = steps.index(raised) if raised in steps else None
            if k is not None:
                ax_gold.plot(raised, gold[k], "v", ms=10, color=color)
                if math.isfinite(score[k]):
                    ax_alarm.plot(raised, score[k], "v", ms=10, color=color)
    ax_gold.set_ylabel("gold − base policy's gold", fontsize=9)
    ax_gold.set_title("RL runs watched by the monitor (no gold): alarm ▼")
    ax_alarm.set_ylabel("combined alarm P(hacking)", fontsize=9)
    ax_alarm.set_xlabel("RL step")
    for ax in (ax_gold, ax_alarm):
        ax.grid(alpha=0.25)
    if all(
        not isinstance(p["monitor"].get("alarm_score"), float) for v in runs.values() for p in v
    ):
        ax_alarm.text(
            0.5,
            0.5,
            "no combined alarm in these runs (thresholds only)",
            ha="center",
            va="center",
            transform=ax_alarm.transAxes,
            fontsize=9,
        )
    if len(runs) <= 12:  # more would cover the plot
        ax_gold.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    try:
        return save_png_svg(fig, out)
    finally:
        plt.close(fig)
