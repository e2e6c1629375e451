"""Plots of gold and proxy reward against d = sqrt(KL) (matplotlib, Agg backend)."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from goodhartlab.artifacts import atomic_path, atomic_write_text

__all__ = ["method_colors", "method_key", "plot_bon_curves", "save_png_svg"]


def method_key(name: str) -> str:
    """The method a curve belongs to, whatever the optimizer: best-of-n's ``ensemble/mean``
    and RL's ``mean`` are one method, and so one colour."""
    return name.rsplit("/", 1)[-1]


def method_colors(names: Iterable[str]) -> dict[str, Any]:
    """One colour per method (``method_key``) for every panel and plot of a report: the
    methods in sorted order take tab10's ten colours, then tab20b's twenty (then again)."""
    import matplotlib

    keys = sorted({method_key(n) for n in names})
    palette = [*matplotlib.colormaps["tab10"].colors, *matplotlib.colormaps["tab20b"].colors]
    by_key = {k: palette[i % len(palette)] for i, k in enumerate(keys)}
    return {n: by_key[method_key(n)] for n in names} | by_key


def save_png_svg(fig, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` atomically (temp file, then rename)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    svg = io.StringIO()
    fig.savefig(svg, format="svg")
    atomic_write_text(stem.with_suffix(".svg"), svg.getvalue())
    png = stem.with_suffix(".png")
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=150)
    return [png, stem.with_suffix(".svg")]


def _values(points: list[Mapping[str, Any]], key: str) -> list[float]:
    # null in metrics.jsonl (an undefined value) is a gap in the line.
    return [math.nan if p.get(key) is None else float(p[key]) for p in points]


def plot_bon_curves(
    points: Iterable[Mapping[str, Any]],
    out: str | os.PathLike,
    *,
    title: str | None = None,
    colors: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Gold (left) and proxy (right) against d = sqrt(KL), one line per method.

    ``points`` are metrics.jsonl objects with ``method``, ``d``, ``gold``, ``proxy`` and
    optionally ``gold_lo`` / ``gold_hi`` (drawn as a band), ``proxy_lo`` / ``proxy_hi``
    and ``kind``: ``"member"`` lines (ensemble members) are thin and grey without a
    legend entry, ``"oracle"`` (picks by gold) is black and dashed, in the gold panel only. Any optimizer's points work (best-of-n,
    RL checkpoints), as long as ``d`` is set.

    Args:
        points: the points, in any order (each method is sorted by d).
        out: path without suffix; ``out.png`` and ``out.svg`` are written atomically.
        title: figure title.
        colors: a colour per method (default ``method_colors`` of the points' methods).

    Returns:
        The two written paths.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    by_method: dict[str, list[Mapping[str, Any]]] = {}
    for pt in points:
        by_method.setdefault(str(pt["method"]), []).append(pt)
    if not by_method:
        raise ValueError("points: expected at least one point")

    fig, (ax_gold, ax_proxy) = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    colors = dict(colors or method_colors(by_method))
    for method, pts in by_method.items():
        pts = sorted(pts, key=lambda p: p["d"])
        kind = pts[0].get("kind")
        d = [p["d"] for p in pts]
        if kind == "member":
            style = {"color": "0.7", "lw": 0.8, "label": None, "zorder": 1}
        elif kind == "oracle":
            style = {"color": "black", "lw": 1.2, "ls": "--", "label": method, "zorder": 2}
        else:
            color = colors.get(method, colors.get(method_key(method), "tab:blue"))
            style = {"color": color, "lw": 1.8, "label": method, "zorder": 3}
        # The oracle picks by gold: its "proxy" is gold and would only rescale the panel.
        panels = [(ax_gold, "gold")] + ([(ax_proxy, "proxy")] if kind != "oracle" else [])
        for ax, key in panels:
            ax.plot(d, _values(pts, key), marker="o", ms=2.5, **style)
            lo, hi = f"{key}_lo", f"{key}_hi"
            if kind != "member" and all(lo in p and hi in p for p in pts):
                ax.fill_between(
                    d,
                    _values(pts, lo),
                    _values(pts, hi),
                    color=style["color"],
                    alpha=0.12,
                    lw=0,
                    zorder=0,
                )
    ax_gold.set_ylabel("gold − base policy's gold")
    ax_proxy.set_ylabel("proxy − base policy's proxy")
    for ax in (ax_gold, ax_proxy):
        ax.set_xlabel("d = sqrt(KL)  (nats$^{1/2}$)")
        ax.axhline(0, color="0.5", lw=0.6, zorder=0)
        ax.grid(alpha=0.25)
    ax_gold.set_title("gold")
    ax_proxy.set_title("proxy")
    ax_gold.legend(fontsize=7, loc="best", frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        return save_png_svg(fig, Path(out))
    finally:
        plt.close(fig)
