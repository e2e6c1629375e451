"""The reward-model variants' table of a study with ``proxies.variants`` (issue 14).

Each variant is trained once per seed on the proxies' pairs and backbones, and the study's
best-of-n stage picks with every seed's model (``NAME-sSEED``) beside the proxies' member of
the same seed (``bt-sSEED``, the Bradley-Terry model with the same backbone and data order).
Over those seeds the table gives, per variant, the mean and 95 % Student-t interval
(``core.stats.t_interval``) of its clean held-out accuracy and calibration (ECE) and of
best-of-n gold (relative to the base policy) at n = 16, 256 and 1,024 (those of the grid;
else its largest n), and of the same figures minus Bradley-Terry's, paired seed by seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from goodhartlab.report.seeds import _interval as interval

__all__ = ["BASELINE", "TABLE_NS", "variant_curves", "variant_rows"]

#: The row of the proxies' own (Bradley-Terry) members.
BASELINE = "bradley_terry"
#: The n of the table, where the grid has them.
TABLE_NS = (16, 256, 1024)


#: The held-out figures of each model's training metrics in the table: clean accuracy and
#: the calibration of σ(r_c − r_r) against the clean labels (ECE, ``core.rm_metrics``).
HELD_OUT = ("clean_accuracy", "clean_ece")


def _held_out(metrics: dict, key: str) -> float | None:
    for k in (f"eval_{key}", key):
        if isinstance(metrics.get(k), int | float):
            return float(metrics[k])
    return None


def _study_variants(run_dir: Path, points: list[dict[str, Any]]):
    """(the proxies' config, the proxies stage's result, {(method, n): bon point}); None
    for a study without variants or best-of-n points."""
    config_path, manifest_path = run_dir / "config.yaml", run_dir / "manifest.json"
    if not config_path.is_file() or not manifest_path.is_file():
        return None
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    proxies = config.get("proxies") or {}
    stage = json.loads(manifest_path.read_text(encoding="utf-8")).get("stages", {})
    info = (stage.get("proxies") or {}).get("result") or {}
    bon = {
        (p["method"], int(p["n"])): p
        for p in points
        if p.get("kind") == "bon" and p.get("n") is not None and p.get("gold") is not None
    }
    if not proxies.get("variants") or not info.get("variants") or not bon:
        return None
    return proxies, info, bon


def _pick(name: str, seed: int) -> str:
    """The best-of-n method of ``name``'s model of ``seed``."""
    return f"{'bt' if name == BASELINE else name}-s{seed}"


def _groups(info: dict) -> list[tuple[str, list[int]]]:
    variants = info["variants"]
    seeds_all = sorted({s for v in variants.values() for s in v["seeds"]})
    return [(BASELINE, seeds_all), *((k, list(v["seeds"])) for k, v in variants.items())]


def variant_rows(run_dir: str | Path, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant (the Bradley-Terry baseline first); [] for a study without
    variants. ``points``: the study's metrics lines (``report.collect_metrics``)."""
    found = _study_variants(Path(run_dir), points)
    if found is None:
        return []
    proxies, info, bon = found
    grid = sorted({n for _, n in bon})
    ns = [n for n in TABLE_NS if n in grid] or [grid[-1]]
    main_seeds = list(proxies.get("seeds") or [])
    metrics = dict(zip([(BASELINE, s) for s in main_seeds], info.get("metrics", []), strict=False))
    for name, v in info["variants"].items():
        metrics.update(zip([(name, s) for s in v["seeds"]], v.get("metrics", []), strict=False))

    def figure(name: str, s: int, key: str, n: int | None) -> float:
        if n is None:
            x = _held_out(metrics.get((name, s), {}), key)
        else:
            x = bon.get((_pick(name, s), n), {}).get("gold")
        return float("nan") if x is None else float(x)

    columns = [*((k, None) for k in HELD_OUT), *((f"gold@{n}", n) for n in ns)]
    rows = []
    for name, seeds in _groups(info):
        row: dict[str, Any] = {"variant": name, "seeds": seeds}
        for key, n in columns:
            row[key] = interval([figure(name, s, key, n) for s in seeds])
            if name != BASELINE:
                row[f"{key} − bt"] = interval(
                    [figure(name, s, key, n) - figure(BASELINE, s, key, n) for s in seeds]
                )
        rows.append(row)
    return rows


def variant_curves(
    run_dir: str | Path, points: list[dict[str, Any]]
) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """{variant: {seed: its best-of-n curve as points with step = n, kl, gold}}, for the
    frontier over seeds (``report.seeds_plot.plot_seed_frontiers``); {} without variants."""
    found = _study_variants(Path(run_dir), points)
    if found is None:
        return {}
    _, info, bon = found
    grid = sorted({n for _, n in bon})
    curves: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for name, seeds in _groups(info):
        curves[name] = {
            s: [
                {
                    "step": n,
                    "kl": bon[(_pick(name, s), n)]["kl"],
                    "gold": bon[(_pick(name, s), n)]["gold"],
                }
                for n in grid
                if (_pick(name, s), n) in bon
            ]
            for s in seeds
        }
    return curves
