"""The plot of ``goodhart rm-downstream``: each benchmark score's rank correlation with each
downstream gold, with its bootstrap interval over reward models (matplotlib, Agg backend)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from goodhartlab.artifacts import atomic_path

__all__ = ["plot_rm_downstream"]


def plot_rm_downstream(
    result: Mapping[str, Any], out: str | os.PathLike, max_subsets: int = 8
) -> Path:
    """One panel per downstream target: Spearman (95 % interval) of every whole-benchmark
    measure and of the ``max_subsets`` subsets that correlate most with the first target,
    ordered by that correlation; written atomically to ``out``.

    Args:
        result: ``rm_downstream.json``: ``correlations[measure][target]["spearman"]`` with
            ``estimate``, ``lo``, ``hi``.
        out: the PNG's path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    corr = result["correlations"]
    targets = list(next(iter(corr.values())))
    order = sorted(corr, key=lambda m: -abs(corr[m][targets[0]]["spearman"]["estimate"]))
    shown = [m for m in order if not m.startswith("subset:")]
    shown += [m for m in order if m.startswith("subset:")][:max_subsets]
    fig, axes = plt.subplots(
        1, len(targets), figsize=(5 * len(targets), 0.28 * len(shown) + 1.5), sharey=True
    )
    try:
        for ax, t in zip(np.atleast_1d(axes), targets, strict=True):
            s = [corr[m][t]["spearman"] for m in shown]
            est = np.array([x["estimate"] for x in s], dtype=float)
            lo = np.array([x["lo"] for x in s], dtype=float)
            hi = np.array([x["hi"] for x in s], dtype=float)
            # a percentile interval need not contain the estimate: clip the bars at it
            err = [np.maximum(0, est - lo), np.maximum(0, hi - est)]
            y = np.arange(len(shown))
            ax.errorbar(est, y, xerr=err, fmt="o", ms=3)
            ax.axvline(0, color="grey", lw=0.5)
            ax.set_yticks(y, shown, fontsize=7)
            ax.invert_yaxis()
            ax.set_xlim(-1, 1)
            ax.set_title(f"Spearman with {t}", fontsize=9)
        fig.suptitle(
            f"{result['proxies']} reward models: benchmark score vs downstream gold", fontsize=10
        )
        fig.tight_layout()
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    finally:
        plt.close(fig)
    return Path(out)
