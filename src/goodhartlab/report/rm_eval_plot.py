"""The plot of ``goodhart eval-rm``: per-subset accuracy with its interval, beside the
"always longer" and "always shorter" baselines (matplotlib, Agg backend)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from goodhartlab.artifacts import atomic_path

__all__ = ["plot_rm_eval"]


def plot_rm_eval(result: Mapping[str, Any], out: str | os.PathLike) -> Path:
    """Horizontal bars of each subset's accuracy (95 % bootstrap interval as error bars),
    with the length baselines as markers; the PNG is written atomically to ``out``.

    Args:
        result: ``RMEvalResult.to_dict()`` (``eval_rm.json``).
        out: the PNG's path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    subsets = {**result["subsets"], "(all rows)": result["overall"]}
    names = list(subsets)
    y = list(range(len(names)))[::-1]
    acc = [subsets[s]["accuracy"] for s in names]

    def gap(s: str, bound: str, sign: int) -> float:
        value = subsets[s][bound]
        return 0.0 if value is None else sign * (value - subsets[s]["accuracy"])

    err = [[gap(s, "accuracy_lo", -1) for s in names], [gap(s, "accuracy_hi", 1) for s in names]]
    fig, ax = plt.subplots(figsize=(8.5, 1.4 + 0.38 * len(names)))
    try:
        ax.barh(y, acc, xerr=err, color="tab:blue", alpha=0.75, capsize=3, label="accuracy")
        ax.scatter([subsets[s]["always_longer"] for s in names], y, marker="^", color="tab:red",
                   zorder=3, label="always longer")  # fmt: skip
        ax.scatter([subsets[s]["always_shorter"] for s in names], y, marker="v",
                   color="tab:green", zorder=3, label="always shorter")  # fmt: skip
        ax.set_yticks(y, names, fontsize=8)
        ax.set_xlim(-0.03, 1.03)
        ax.set_xlabel(f"accuracy (ties: {result['settings'].get('ties')}; 95 % bootstrap CI)")
        ax.grid(axis="x", alpha=0.25)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.set_title(f"eval-rm: {result.get('model', '')}", fontsize=9)
        fig.tight_layout()
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    finally:
        plt.close(fig)
    return Path(out)
