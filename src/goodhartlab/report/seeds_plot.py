"""The frontier over seeds: gold against d = sqrt(KL) per method, mean over seeds with a band."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from goodhartlab.core.stats import t_interval

__all__ = ["mean_curve", "plot_seed_frontiers"]


def mean_curve(runs: dict[int, list[dict[str, Any]]]) -> dict[str, np.ndarray]:
    """A method's mean curve over its seeds, at the evaluation steps every seed has.

    Each run's gold is taken relative to its own first evaluation (its base policy). At each
    step: d = mean over seeds of sqrt(KL), gold = mean gold, and the 95 % Student-t band of
    gold over seeds (``core.stats.t_interval``; NaN with one seed)."""
    by_step = [{m["step"]: m for m in pts} for pts in runs.values()]
    steps = sorted(set.intersection(*(set(b) for b in by_step))) if by_step else []
    base = [b[min(b)]["gold"] for b in by_step]
    d = np.array([[math.sqrt(max(b[t]["kl"], 0.0)) for b in by_step] for t in steps])
    gold = np.array(
        [[b[t]["gold"] - g0 for b, g0 in zip(by_step, base, strict=True)] for t in steps]
    )
    band = np.array([t_interval(g) for g in gold]) if steps else np.zeros((0, 2))
    return {
        "step": np.array(steps),
        "d": d.mean(axis=1) if steps else np.zeros(0),
        "gold": gold.mean(axis=1) if steps else np.zeros(0),
        "lo": band[:, 0] if steps else np.zeros(0),
        "hi": band[:, 1] if steps else np.zeros(0),
    }


def plot_seed_frontiers(
    curves: dict[str, dict[int, list[dict[str, Any]]]],
    baselines: dict[str, str | None],
    out: Path,
    colors: dict[str, Any],
    title: str = "RL over seeds",
) -> list[Path]:
    """One panel with every method's mean curve, then one panel per method with its band
    and its baseline's (grey). ``curves``: {method: {seed: its RL metrics.jsonl lines}}."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from goodhartlab.report.plots import save_png_svg

    means = {m: mean_curve(runs) for m, runs in curves.items()}
    means = {m: c for m, c in means.items() if c["step"].size}
    if not means:
        return []
    cols = 4
    rows = math.ceil((len(means) + 1) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharex=True
    )
    flat = axes.ravel()
    ax_all = flat[0]
    for m, c in means.items():
        ax_all.plot(c["d"], c["gold"], "-", lw=1.3, color=colors[m], label=m)
    ax_all.set_title("every method (mean over seeds)", fontsize=9)
    ax_all.legend(fontsize=6, frameon=False, ncol=2)
    for ax, (m, c) in zip(flat[1:], means.items(), strict=False):
        base = baselines.get(m)
        if base in means:
            b = means[base]
            ax.plot(b["d"], b["gold"], "-", color="0.55", lw=1.0, label=f"{base} (baseline)")
            ax.fill_between(b["d"], b["lo"], b["hi"], color="0.6", alpha=0.15, lw=0)
        ax.plot(c["d"], c["gold"], "o-", ms=2.5, lw=1.5, color=colors[m], label=m)
        ax.fill_between(c["d"], c["lo"], c["hi"], color=colors[m], alpha=0.2, lw=0)
        n = len(curves[m])
        ax.set_title(f"{m} ({n} seed{'s' if n != 1 else ''})", fontsize=9)
        ax.legend(fontsize=6, frameon=False)
    for ax in flat[len(means) + 1 :]:
        ax.set_visible(False)
    for ax in flat[: len(means) + 1]:
        ax.axhline(0, color="0.5", lw=0.6)
        ax.grid(alpha=0.25)
    fig.supylabel("gold − base policy's gold")
    fig.supxlabel("d = sqrt(KL)  (nats$^{1/2}$)")
    fig.suptitle(f"{title}: mean gold against d, 95 % band over seeds (t)", fontsize=11)
    # Each panel its own gold scale: one collapsing method would flatten every other.
    fig.tight_layout(rect=(0.01, 0.01, 1, 0.98))
    try:
        return save_png_svg(fig, out)
    finally:
        plt.close(fig)
