"""A study's RL methods over seeds: groups, figures per run, the table with 95 % intervals.

A study run with ``rl.seeds`` has one run per method and seed (``rl/<method>-s<seed>/``),
and its config.yaml names each run's ``group`` (the method) and ``baseline`` (the method its
seeds are paired against). This module reads them and gives, per group, the mean over seeds
and a Student-t 95 % interval (``core.stats.t_interval``) of each run's figures:

- ``peak``: the highest gold of the run's evaluations, ``kl_peak`` its KL;
- ``gold@B``: gold when the run first reaches a KL budget B (``core.scaling.gold_at_kl``);
- ``final``: gold at the last evaluation, ``final_kl`` its KL;
- ``drop``: the share of the gain lost after the peak (``core.scaling.overoptimization``,
  along the evaluations in step order);
- ``fall``: peak − final, whose interval says whether the fall is significant;
- ``final − baseline`` and ``peak − baseline``: paired by seed.

Gold is relative to each run's base policy (its first evaluation), as in the report's
table. A group's ``status`` is the one word the table and the verdict share (``status``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from goodhartlab.core.scaling import gold_at_kl, gold_at_proxy_gain, overoptimization
from goodhartlab.core.stats import t_interval

__all__ = [
    "BUDGETS",
    "FIGURES",
    "Group",
    "group_rows",
    "paired",
    "run_figures",
    "seed_groups",
    "status",
]

#: KL budgets (nats) at which the table gives gold.
BUDGETS = (1.0, 4.0, 16.0)

#: The figures of one run, in the table's order, with their column labels.
FIGURES = {
    "peak": "peak gold",
    "kl_peak": "KL at peak",
    **{f"gold@{b:g}": f"gold @ KL {b:g}" for b in BUDGETS},
    "final": "final gold",
    "final_kl": "final KL",
    "drop": "drop / gain",
}


@dataclass
class Group:
    """One method of the RL stage and its runs, one per seed."""

    name: str
    runs: dict[int, str] = field(default_factory=dict)
    """seed -> run directory name under ``rl/``."""
    baseline: str | None = None
    """The group its seeds are paired against (None: none)."""


def seed_groups(run_dir: str | Path, run_names: list[str]) -> dict[str, Group]:
    """The groups of a study's RL runs, from its config.yaml (``group``, ``seed``, ``baseline``
    of each method); a run the config does not group is a group of its own. The baseline
    defaults to 'single' where such a group exists (not for itself)."""
    methods: dict[str, dict[str, Any]] = {}
    path = Path(run_dir) / "config.yaml"
    if path.is_file():
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for m in (raw.get("rl") or {}).get("methods") or []:
            if isinstance(m, dict) and isinstance(m.get("name"), str):
                methods[m["name"]] = m
    seed_of = re.compile(r"(.+)-s(\d+)$")
    groups: dict[str, Group] = {}
    present = set(run_names)
    ordered = [n for n in methods if n in present] + [n for n in run_names if n not in methods]
    for run in ordered:  # the config's order
        m = methods.get(run, {})
        name = m.get("group") or run
        seed = m.get("seed")
        if seed is None:
            match = seed_of.fullmatch(run)
            seed = int(match.group(2)) if match and m.get("group") else 0
        g = groups.setdefault(name, Group(name))
        g.runs[int(seed)] = run
        g.baseline = m.get("baseline") or g.baseline
    for g in groups.values():
        if g.baseline is None and "single" in groups and g.name != "single":
            g.baseline = "single"
    return groups


def run_figures(metrics: list[dict[str, Any]]) -> dict[str, float]:
    """One run's figures from its evaluations (``FIGURES``; also ``proxy_gain``, the list
    of proxy gains, and ``gold_gain``, the list of gold gains, for matched comparisons)."""
    pts = sorted(metrics, key=lambda m: m["step"])
    kl = np.array([p["kl"] for p in pts], dtype=np.float64)
    gold = np.array([p["gold"] for p in pts], dtype=np.float64) - pts[0]["gold"]
    o = overoptimization(np.arange(len(pts), dtype=np.float64), gold)  # step order
    k = int(np.argmax(gold))
    out: dict[str, Any] = {
        "peak": float(gold[k]),
        "kl_peak": float(kl[k]),
        "final": float(gold[-1]),
        "final_kl": float(kl[-1]),
        "drop": float(o.drop),
        "fall": float(gold[k] - gold[-1]),
        "gold_gain": gold.tolist(),
    }
    for b in BUDGETS:
        out[f"gold@{b:g}"] = gold_at_kl(kl, gold, b)
    if all(p.get("proxy") is not None for p in pts):
        out["proxy_gain"] = [float(p["proxy"]) - float(pts[0]["proxy"]) for p in pts]
    return out


def _interval(values: list[float]) -> dict[str, Any]:
    x = np.array(values, dtype=np.float64)
    finite = x[~np.isnan(x)]
    lo, hi = t_interval(x) if finite.size >= 2 else (math.nan, math.nan)
    mean = float(finite.mean()) if finite.size else math.nan
    return {"mean": _none(mean), "lo": _none(lo), "hi": _none(hi), "n": int(finite.size)}


def _none(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def paired(
    figures: dict[str, dict[int, dict[str, Any]]], method: str, baseline: str, key: str
) -> dict[str, Any] | None:
    """Mean and 95 % t-interval of ``key`` of ``method`` minus ``baseline``, seed by seed
    (None when they share no seed)."""
    a, b = figures.get(method, {}), figures.get(baseline, {})
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    return {**_interval([a[s][key] - b[s][key] for s in seeds]), "seeds": seeds}


def matched_proxy_gain(
    figures: dict[str, dict[int, dict[str, Any]]], method: str, baseline: str
) -> dict[str, Any] | None:
    """Gold of ``method`` minus ``baseline`` at equal proxy gain, seed by seed: at the
    largest proxy gain that both runs of every shared seed reach (``gold_at_proxy_gain``)."""
    a, b = figures.get(method, {}), figures.get(baseline, {})
    seeds = [s for s in sorted(set(a) & set(b)) if "proxy_gain" in a[s] and "proxy_gain" in b[s]]
    if not seeds:
        return None
    level = min(max(r[s]["proxy_gain"]) for s in seeds for r in (a, b))
    if not level > 0:
        return None
    diffs = [
        gold_at_proxy_gain(a[s]["proxy_gain"], a[s]["gold_gain"], level)
        - gold_at_proxy_gain(b[s]["proxy_gain"], b[s]["gold_gain"], level)
        for s in seeds
    ]
    return {**_interval(diffs), "seeds": seeds, "proxy_gain": level}


def status(row: dict[str, Any], hacking_drop: float) -> str:
    """One word for a group over seeds, shared by the table and the verdict:

    - "hacked": on average it lost more than ``hacking_drop`` of its gain after the peak,
      and its fall (peak − final) is significant over the seeds;
    - "fell": the fall is significant but smaller than that share;
    - "unclear": it lost more than that share on average, but the fall is not significant;
    - "held": neither.
    With one seed there is no interval: "hacked" if the drop is above the share, else "held".
    A group whose gold never rose above the base on any seed (a gain of 0: the drop's share
    is undefined) and then fell lost an unbounded share of its gain: it counts as above it.
    """
    drop, fall = row["drop"], row["fall"]
    never_gained = drop["n"] == 0 and fall["n"] > 0
    big = never_gained or (drop["mean"] is not None and drop["mean"] > hacking_drop)
    if fall["n"] < 2:
        return "hacked" if big else "held"
    significant = fall["lo"] is not None and fall["lo"] > 0
    if significant:
        return "hacked" if big else "fell"
    return "unclear" if big else "held"


def group_rows(
    groups: dict[str, Group],
    figures: dict[str, dict[int, dict[str, Any]]],
    hacking_drop: float,
) -> list[dict[str, Any]]:
    """The table over seeds: one row per group, each figure as {mean, lo, hi, n}."""
    rows = []
    for name, g in groups.items():
        runs = figures.get(name, {})
        if not runs:
            continue
        row: dict[str, Any] = {
            "method": name,
            "seeds": sorted(runs),
            "baseline": g.baseline,
            **{k: _interval([r[k] for r in runs.values()]) for k in (*FIGURES, "fall")},
        }
        if g.baseline is not None and g.baseline in figures:
            row["final_vs_baseline"] = paired(figures, name, g.baseline, "final")
            row["peak_vs_baseline"] = paired(figures, name, g.baseline, "peak")
        row["status"] = status(row, hacking_drop)
        rows.append(row)
    return rows
