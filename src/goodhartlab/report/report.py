"""The report of a study's run directory: metrics, plots, table, verdict, report.html.

Reads what the stages wrote (``bon/metrics.jsonl``, ``bon/samples.jsonl``,
``rl/<method>/metrics.jsonl``, ``rl/<method>/samples.jsonl``, and the same files under
``daa/<method>/`` for direct alignment) and writes

- ``metrics.jsonl``: every evaluation point of every method, one object each, with
  ``method``, ``kind`` ("bon" | "rl" | "daa"), ``d``, ``kl``, ``gold``, ``proxy`` (gold and
  proxy relative to the base policy, as in Gao et al. 2023; ``gold_abs`` / ``proxy_abs``
  unshifted), ``curve`` (the BoN curve's own kind: single, ensemble, member, oracle; "rl" for
  RL, "daa" for direct alignment);
- ``plots/curves.{png,svg}``: gold and proxy against d = sqrt(KL), best-of-n, RL and direct
  alignment side by side, each method's fitted law (``core.scaling``; direct alignment gets
  the RL law) drawn over its points;
  ``plots/disagreement.{png,svg}``: the ensemble members' disagreement over RL training;
- ``summary.json`` (key ``report``): the table and the verdict;
- ``report.html``: self-contained (plots embedded as base64 PNG), with samples per method.

The metrics file is rebuilt from the stages' files on every call, so it never holds a
line twice, however often a study was resumed.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import yaml

from goodhartlab.artifacts import atomic_write_json, atomic_write_text
from goodhartlab.optimize.rundir import read_jsonl
from goodhartlab.report.monitor_plot import plot_monitor
from goodhartlab.report.plots import method_colors
from goodhartlab.report.seeds_plot import plot_seed_frontiers
from goodhartlab.report.variants import BASELINE, variant_curves, variant_rows

__all__ = ["HACKING_DROP", "build_report", "collect_metrics", "summary_table", "verdict"]

#: A method "hacked" when it lost more than this fraction of its gold gain after the peak.
HACKING_DROP = 0.2


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """A finished run's JSONL log: any bad line, the last too, is an error naming it."""
    return read_jsonl(path, torn_tail=False)


#: Kinds of training runs, each in ``<kind>/<method>/`` with the RL loop's metrics.jsonl.
TRAINED = ("rl", "daa")
_LABELS = {"bon": "best-of-n", "rl": "RL", "daa": "direct alignment"}


def _run_dirs(run_dir: Path, kind: str) -> list[Path]:
    top = run_dir / kind
    if not top.is_dir():
        return []
    return sorted(p for p in top.iterdir() if (p / "metrics.jsonl").is_file())


def collect_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rebuild ``run_dir/metrics.jsonl`` from the stages' metrics; returns its lines.

    Without any stage file (a copied run directory), the existing metrics.jsonl is read.
    """
    run_dir = Path(run_dir)
    lines: list[dict[str, Any]] = []
    for rec in _read_jsonl(run_dir / "bon" / "metrics.jsonl"):
        lines.append({**rec, "kind": "bon", "curve": rec.get("kind", "single")})
    for kind in TRAINED:
        for sub in _run_dirs(run_dir, kind):
            recs = sorted(_read_jsonl(sub / "metrics.jsonl"), key=lambda r: r["step"])
            if not recs:
                continue
            base = recs[0]
            for rec in recs:
                proxy = rec.get("proxy")  # None: a DAA run without a proxy
                lines.append(
                    {
                        **rec,
                        "method": rec.get("method", sub.name),
                        "kind": kind,
                        "curve": kind,
                        "gold": rec["gold"] - base["gold"],
                        "proxy": None if proxy is None else proxy - base["proxy"],
                        "gold_abs": rec["gold"],
                        "proxy_abs": proxy,
                    }
                )
    if not lines:
        return _read_jsonl(run_dir / "metrics.jsonl")
    atomic_write_text(
        run_dir / "metrics.jsonl", "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines)
    )
    return lines


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _curves(points: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in points:
        if p.get("d") is None or p.get("gold") is None:
            continue
        out.setdefault((p["kind"], str(p["method"])), []).append(p)
    for pts in out.values():
        pts.sort(key=lambda p: (p["d"], p.get("step", p.get("n", 0))))
    return out


def _fit(kind: str, d: list[float], gold: list[float]):
    from goodhartlab.core.scaling import fit_bon_law, fit_rl_law

    try:
        return (fit_bon_law if kind == "bon" else fit_rl_law)(d, gold)
    except ValueError:
        return None


def daa_frontiers(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gao et al.'s RL law d (α − β log d) fitted, per direct-alignment loss, to the pooled
    evaluation points of all its runs (its β sweep = its KL budgets), as Rafailov et al.
    (2024, arXiv 2406.02900) fit gold against d across KL budgets. Gold relative to each
    run's base policy; one row per loss with at least 3 points.
    """
    by_loss: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        if p.get("kind") == "daa" and p.get("d") is not None and p.get("gold") is not None:
            by_loss.setdefault(str(p.get("loss", p["method"])), []).append(p)
    rows = []
    for loss, pts in sorted(by_loss.items()):
        fit = _fit("daa", [float(p["d"]) for p in pts], [float(p["gold"]) for p in pts])
        rows.append(
            {
                "loss": loss,
                "runs": len({p["method"] for p in pts}),
                "betas": sorted({p["beta"] for p in pts if p.get("beta") is not None}),
                "points": len(pts),
                "alpha": _finite(fit.alpha) if fit else None,
                "beta": _finite(fit.beta) if fit else None,
                "r2": _finite(fit.r2) if fit else None,
                "d_peak": _finite(fit.d_peak) if fit else None,
            }
        )
    return rows


def summary_table(
    points: list[dict[str, Any]], bon_methods: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """One row per method (ensemble members left out): peak, final, drop, fitted law.

    Gold is relative to the base policy. ``drop`` is ``core.scaling.overoptimization``'s
    fraction of the gain lost after the peak; α, β, R² the fit of Gao et al.'s law of the
    method's optimizer (best-of-n: d (α − β d); RL: d (α − β log d)). Undefined values are None.
    ``bon_methods`` (the best-of-n study's ``summary.json`` "methods") adds to best-of-n rows
    the paired 95 % bootstrap interval of the absolute drop from the peak to the largest n
    (``drop_ci``), so that a small but significant fall is reported as one.
    """
    from goodhartlab.core.scaling import overoptimization

    rows = []
    for (kind, method), pts in _curves(points).items():
        if pts[0].get("curve") == "member":
            continue
        d = [float(p["d"]) for p in pts]
        gold = [float(p["gold"]) for p in pts]
        o = overoptimization(d, gold)
        fit = _fit(kind, d, gold)
        drop = _finite(o.drop)
        proxy = [p.get("proxy") for p in pts]
        rows.append(
            {
                "kind": kind,
                "method": method,
                "curve": pts[0].get("curve"),
                "points": len(pts),
                "peak_gold": o.gold_peak,
                "d_peak": o.d_peak,
                "kl_peak": o.d_peak**2,
                "final_gold": o.gold_final,
                "final_proxy": _finite(proxy[-1]) if proxy[-1] is not None else None,
                "d_max": d[-1],
                "kl_max": d[-1] ** 2,
                "drop": drop,
                "hacking": bool(drop is not None and drop > HACKING_DROP),
                "status": "hacked" if drop is not None and drop > HACKING_DROP else "held",
                "law": "bon" if kind == "bon" else "rl",
                "alpha": _finite(fit.alpha) if fit else None,
                "beta": _finite(fit.beta) if fit else None,
                "r2": _finite(fit.r2) if fit else None,
            }
        )
        b = (bon_methods or {}).get(method) if kind == "bon" else None
        if b and b.get("drop_paired_lo") is not None and b.get("drop_paired_hi") is not None:
            rows[-1]["n_peak"] = b.get("n_peak")
            rows[-1]["drop_ci"] = [float(b["drop_paired_lo"]), float(b["drop_paired_hi"])]
            if rows[-1]["status"] == "held" and rows[-1]["drop_ci"][0] > 0:
                rows[-1]["status"] = "fell"  # significant, if under the threshold
    rows.sort(key=lambda r: (r["kind"], r["method"]))
    return rows


def _describe(r: dict[str, Any]) -> str:
    """One line of the verdict for one run: its status (the table's) and why."""
    what = f"{_LABELS.get(r['kind'], r['kind'])} '{r['method']}'"
    if r["status"] == "hacked":
        return (
            f"{what} hacked: gold peaked at {r['peak_gold']:+.2f} (KL {r['kl_peak']:.2g} nats), "
            f"then lost {r['drop']:.0%} of that gain by KL {r['kl_max']:.2g}."
        )
    if r["status"] == "fell":
        ci = r["drop_ci"]
        return (
            f"{what} fell: gold peaked at n = {r['n_peak']} ({r['peak_gold']:+.2f}, KL "
            f"{r['kl_peak']:.2g} nats), then fell significantly to {r['final_gold']:+.2f} (drop "
            f"95 % CI [{ci[0]:.2g}, {ci[1]:.2g}]), {r['drop']:.0%} of its gain: under the "
            f"{HACKING_DROP:.0%} threshold."
        )
    lost = f", losing {r['drop']:.0%} of its gain after the peak" if r.get("drop") else ""
    return f"{what} held: gold ended at {r['final_gold']:+.2f} at KL {r['kl_max']:.2g} nats{lost}."


def _iv(x: dict[str, Any] | None, fmt: str = "{:+.2f}") -> str:
    """``mean [lo, hi]`` of a figure over seeds."""
    if x is None or x.get("mean") is None:
        return "n/a"
    if x.get("lo") is None:
        return fmt.format(x["mean"])
    return f"{fmt.format(x['mean'])} [{fmt.format(x['lo'])}, {fmt.format(x['hi'])}]"


def _describe_seeds(r: dict[str, Any]) -> str:
    """One line of the verdict for a method run over seeds."""
    what = f"RL '{r['method']}' ({len(r['seeds'])} seeds)"
    peak = f"peak {_iv(r['peak'])} at KL {_iv(r['kl_peak'], '{:.2g}')} nats"
    final = f"final {_iv(r['final'])}"
    lost = (
        f"then lost {_iv(r['drop'], '{:.0%}')} of the gain"
        if r["drop"]["n"]
        else "its gold never rose above the base policy's, then fell"
    )
    why = {
        "hacked": f"{what} hacked: {peak}, {lost} ({final}; the fall is significant over the "
        "seeds).",
        "fell": f"{what} fell, significantly but by less than {HACKING_DROP:.0%} of its gain: "
        f"{peak}, {final}.",
        "unclear": f"{what} is unclear: it lost {_iv(r['drop'], '{:.0%}')} of its gain on "
        f"average ({peak}, {final}), but the fall is not significant over the seeds.",
        "held": f"{what} held: {final}, {peak}.",
    }[r["status"]]
    vs = r.get("final_vs_baseline")
    if vs is not None:
        why += f" Final gold − {r['baseline']}'s, paired: {_iv(vs)}."
    return why


def verdict(rows: list[dict[str, Any]], seed_rows: list[dict[str, Any]] = ()) -> str:
    """A short headline, then one line per method ("- ..."), in plain language.

    ``rows`` are the table's single runs (``summary_table``), ``seed_rows`` the methods run
    over seeds (``report.seeds.group_rows``); each line gives the status the table shows."""
    order = {"rl": 0, "daa": 1, "bon": 2}
    judged = sorted(
        (r for r in rows if r["curve"] != "oracle"), key=lambda r: order.get(r["kind"], 3)
    )
    if not judged and not seed_rows:
        return "No results yet: the study has no finished stage with metrics."
    names = [(f"{_LABELS.get(r['kind'], r['kind'])} '{r['method']}'", r["status"]) for r in judged]
    names += [(f"RL '{r['method']}'", r["status"]) for r in seed_rows]
    hacked = [n for n, st in names if st == "hacked"]
    finals = [
        (r["final_gold"], f"{_LABELS.get(r['kind'], r['kind'])} '{r['method']}'") for r in judged
    ]
    finals += [
        (r["final"]["mean"], f"RL '{r['method']}'")
        for r in seed_rows
        if r["final"]["mean"] is not None
    ]
    best = max(finals) if finals else None
    head = (
        f"{len(hacked)} of {len(names)} methods hacked ({', '.join(hacked)})"
        if hacked
        else f"None of {len(names)} methods hacked"
    )
    head += f" (lost more than {HACKING_DROP:.0%} of their gold gain after the peak)"
    if best is not None:
        head += f"; highest final gold: {best[1]} ({best[0]:+.2f} over the base policy)"
    lines = [head + ". Gold is relative to the base policy; KL in nats."]
    lines += [f"- {_describe(r)}" for r in judged]
    lines += [f"- {_describe_seeds(r)}" for r in seed_rows]
    return "\n".join(lines)


def _plot_curves(points: list[dict[str, Any]], out: Path, colors: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    from goodhartlab.core.scaling import bon_law, rl_law
    from goodhartlab.report.plots import save_png_svg

    curves = _curves(points)
    kinds = [k for k in ("bon", *TRAINED) if any(kk == k for kk, _ in curves)]
    if not kinds:
        return []
    fig, axes = plt.subplots(
        2, len(kinds), figsize=(5.5 * len(kinds), 7.5), squeeze=False, sharex="col"
    )
    for col, kind in enumerate(kinds):
        ax_gold, ax_proxy = axes[0][col], axes[1][col]
        for (k, method), pts in curves.items():
            if k != kind:
                continue
            curve = pts[0].get("curve")
            d = np.array([p["d"] for p in pts], dtype=float)
            gold = np.array([p["gold"] for p in pts], dtype=float)
            proxy = np.array([np.nan if p.get("proxy") is None else p["proxy"] for p in pts])
            if curve == "member":
                style = {"color": "0.75", "lw": 0.8, "label": None}
                ax_gold.plot(d, gold, **style)
                ax_proxy.plot(d, proxy, **style)
                continue
            if curve == "oracle":
                ax_gold.plot(d, gold, color="black", ls="--", lw=1.0, label=method)
                continue
            color = colors[method]
            ax_gold.plot(d, gold, "o", ms=3, color=color, label=method)
            ax_proxy.plot(d, proxy, "o-", ms=3, lw=1.2, color=color, label=method)
            fit = _fit(kind, d.tolist(), gold.tolist())
            if fit is not None:
                grid = np.linspace(0, float(d.max()), 100)
                law = bon_law if kind == "bon" else rl_law
                ax_gold.plot(grid, law(grid, fit.alpha, fit.beta).numpy(), color=color, lw=1.4)
        name = _LABELS[kind]
        ax_gold.set_title(f"{name}: gold (points) and fitted law (lines)")
        ax_proxy.set_title(f"{name}: proxy")
        ax_gold.set_ylabel("gold − base policy's gold")
        ax_proxy.set_ylabel("proxy − base policy's proxy")
        ax_proxy.set_xlabel("d = sqrt(KL)  (nats$^{1/2}$)")
        for ax in (ax_gold, ax_proxy):
            ax.axhline(0, color="0.5", lw=0.6)
            ax.grid(alpha=0.25)
        ax_gold.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    try:
        return save_png_svg(fig, out)
    finally:
        plt.close(fig)


def _plot_disagreement(
    points: list[dict[str, Any]], out: Path, colors: dict[str, Any]
) -> list[Path]:
    rl = [p for p in points if p.get("kind") == "rl" and p.get("disagreement") is not None]
    if not rl:
        return []
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from goodhartlab.report.plots import save_png_svg

    fig, ax = plt.subplots(figsize=(6, 4))
    by: dict[str, list[dict[str, Any]]] = {}
    for p in rl:
        by.setdefault(str(p["method"]), []).append(p)
    for method, pts in by.items():
        pts.sort(key=lambda p: p["step"])
        ax.plot(
            [p["step"] for p in pts],
            [p["disagreement"] for p in pts],
            "o-",
            ms=3,
            label=method,
            color=colors[method],
        )
    ax.set_xlabel("RL step")
    ax.set_ylabel("ensemble disagreement (std over members)")
    ax.set_title("Ensemble disagreement over RL training")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    try:
        return save_png_svg(fig, out)
    finally:
        plt.close(fig)


def _bon_ns(points: list[dict[str, Any]]) -> dict[str, list[tuple[str, int]]]:
    """Best-of-n method -> [(label, n)]: n = 1, the n of peak gold, the largest n (labels
    merged where two coincide). Members are left out (they pick for no method)."""
    by: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        if p.get("kind") == "bon" and p.get("curve") != "member" and p.get("n") is not None:
            by.setdefault(str(p["method"]), []).append(p)
    out = {}
    for method, pts in by.items():
        pts = sorted(pts, key=lambda p: p["n"])
        first, last = pts[0]["n"], pts[-1]["n"]
        peak = max(pts, key=lambda p: p["gold"])["n"]  # the first n of the highest gold
        labels: dict[int, list[str]] = {}
        for n, label in ((first, "start"), (peak, "peak gold"), (last, "end")):
            labels.setdefault(n, []).append(label)
        out[method] = [
            (" and ".join(dict.fromkeys(ls)) + f" (n = {n})", int(n))
            for n, ls in sorted(labels.items())
        ]
    return out


def _bon_samples(run_dir: Path, points: list[dict[str, Any]], per: int) -> list[dict[str, Any]]:
    """Best-of-n picks of each method at n = 1, its peak n and the largest n for the first
    ``per`` prompts (``report.picks.picks_at_n``, from the pool and its cached scores)."""
    from goodhartlab.report.picks import picks_at_n

    ns = _bon_ns(points)
    if not ns or not (run_dir / "bon").is_dir():
        return []
    picks = picks_at_n(run_dir / "bon", {m: [n for _, n in v] for m, v in ns.items()}, per)
    out = []
    for method, stages in ns.items():
        for label, n in stages:
            ss = [s for s in picks if s["method"] == method and s["n"] == n]
            if ss:
                out.append({"kind": "bon", "method": method, "stage": label, "samples": ss})
    return out


def _samples(run_dir: Path, points: list[dict[str, Any]], per: int = 2) -> list[dict[str, Any]]:
    """A few samples per method: RL and direct alignment at their first, peak-gold and last
    evaluation; best-of-n at n = 1, the peak n and the largest n (from the pool; without
    the pool, the base policy's sample and the best-of-N pick of ``bon/samples.jsonl``)."""
    out = _bon_samples(run_dir, points, per)
    bon = [] if out else _read_jsonl(run_dir / "bon" / "samples.jsonl")
    by: dict[str, list[dict[str, Any]]] = {}
    for s in bon:
        by.setdefault(str(s.get("method")), []).append(s)
    for method, ss in by.items():
        if method.startswith("ensemble/member"):
            continue
        stage = "start (base policy)" if method == "base" else f"best-of-{ss[0].get('n', 'N')}"
        out.append({"kind": "bon", "method": method, "stage": stage, "samples": ss[:per]})
    for kind in TRAINED:
        for sub in _run_dirs(run_dir, kind):
            samples = _read_jsonl(sub / "samples.jsonl")
            metrics = _read_jsonl(sub / "metrics.jsonl")
            if not samples or not metrics:
                continue
            first, last = metrics[0]["step"], metrics[-1]["step"]
            peak = max(metrics, key=lambda m: m["gold"])["step"]
            for label, step in (("start", first), ("peak gold", peak), ("end", last)):
                ss = [s for s in samples if s.get("step") == step][:per]
                stage = f"{label} (step {step})"
                out.append({"kind": kind, "method": sub.name, "stage": stage, "samples": ss})
    return out


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f3f3f3}td.l{text-align:left}tr.hack td{background:#fff0f0}
img{max-width:100%}pre{white-space:pre-wrap;background:#f7f7f7;padding:4px 6px;margin:2px 0}
.verdict{background:#f5f8ff;border-left:4px solid #4a7;padding:0.6em 1em}
"""


def _num(x: Any, fmt: str = "{:.3g}") -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    return fmt.format(x) if isinstance(x, int | float) else html.escape(str(x))


def _verdict_html(text: str) -> str:
    head, *lines = text.split("\n")
    items = "".join(f"<li>{html.escape(x.removeprefix('- '))}</li>" for x in lines)
    return f"<div class='verdict'><p><b>{html.escape(head)}</b></p><ul>{items}</ul></div>"


def _seeds_html(seeds: dict[str, Any]) -> list[str]:
    """The table over seeds and the claims table (nothing without methods over seeds)."""
    from goodhartlab.report.seeds import FIGURES

    if not seeds["rows"]:
        return []
    esc = html.escape
    head = ["method", "seeds", "status", *FIGURES.values(), "final − baseline", "peak − baseline"]
    parts = [
        "<h2>RL over seeds</h2><p>Mean over seeds and 95 % Student-t interval; gold relative to "
        "each run's base policy; “gold @ KL b”: when the run first reaches b nats (n/a where "
        "fewer than two seeds do); “− baseline”: paired by seed.</p><table><tr>",
        *(f"<th>{esc(h)}</th>" for h in head),
        "</tr>",
    ]
    for r in seeds["rows"]:
        fmt = {"kl_peak": "{:.2g}", "final_kl": "{:.2g}", "drop": "{:.0%}"}
        cells = [
            r["method"],
            str(len(r["seeds"])),
            r["status"],
            *(_iv(r[k], fmt.get(k, "{:+.2f}")) for k in FIGURES),
            *(
                f"{_iv(r.get(k))} vs {r['baseline']}" if r.get(k) else "–"
                for k in ("final_vs_baseline", "peak_vs_baseline")
            ),
        ]
        cls = " class='hack'" if r["status"] == "hacked" else ""
        parts.append(
            f"<tr{cls}>" + "".join(f"<td class='l'>{esc(c)}</td>" for c in cells) + "</tr>"
        )
    parts.append("</table>")
    if seeds["claims"]:
        parts.append(
            "<h2>Claims</h2><table><tr><th>paper</th><th>claim</th><th>measured</th>"
            "<th>verdict</th></tr>"
        )
        for c in seeds["claims"]:
            parts.append(
                "<tr>"
                + "".join(
                    f"<td class='l'>{esc(c[k])}</td>"
                    for k in ("paper", "claim", "measured", "verdict")
                )
                + "</tr>"
            )
        parts.append("</table>")
    return parts


def _variants_html(rows: list[dict[str, Any]]) -> list[str]:
    """The reward-model variants' table (``report.variants``); nothing without variants."""
    if not rows:
        return []
    esc = html.escape
    keys = [k for k in rows[0] if k not in ("variant", "seeds")]
    parts = [
        "<h2>Reward-model variants</h2><p>Each variant trained once per seed on the proxies' "
        f"pairs; {esc(BASELINE)}: the proxies' member of the same seed. Mean over seeds and "
        "95 % Student-t interval; clean held-out accuracy and ECE; best-of-n gold at n relative to "
        "the base policy; “− bt”: paired by seed.</p><table><tr><th>variant</th><th>seeds</th>",
        *(f"<th>{esc(k)}</th>" for k in keys),
        "</tr>",
    ]
    for r in rows:
        cells = [r["variant"], str(len(r["seeds"]))]
        for k in keys:
            held_out = k.startswith("clean_")
            fmt = ("{:+.3f}" if k.endswith("− bt") else "{:.3f}") if held_out else "{:+.2f}"
            cells.append(_iv(r.get(k), fmt))
        parts.append("<tr>" + "".join(f"<td class='l'>{esc(c)}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    return parts


def _html(
    run_dir: Path,
    rows: list[dict[str, Any]],
    text: str,
    plots: list[Path],
    samples: list[dict],
    seeds: dict[str, Any],
    variants: list[dict[str, Any]] = (),
) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>goodhart-lab report: {esc(run_dir.name)}</title><style>{_CSS}</style></head>",
        f"<body><h1>goodhart-lab report</h1><p>Run directory: <code>{esc(str(run_dir))}</code></p>",
        f"<h2>Verdict</h2>{_verdict_html(text)}",
        *_seeds_html(seeds),
        *_variants_html(list(variants)),
        "<h2>Plots</h2>",
    ]
    for png in plots:
        if png.suffix == ".png":
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            parts.append(f"<p><img alt='{esc(png.stem)}' src='data:image/png;base64,{data}'></p>")
    from goodhartlab.report.metrics import METRICS

    # The metric columns are the METRICS registry's entries (a plugin's too), in order.
    metrics = METRICS.entries()
    cols = [
        ("kind", "optimizer", ""),
        ("method", "method", ""),
        *((e.name, e.meta.get("label", e.name), e.description) for e in metrics),
        (
            "status",
            "status",
            f"hacked: lost more than {HACKING_DROP:.0%} of the gain after the peak; fell: a "
            "significant fall under that share; held: neither",
        ),
    ]
    direction = {e.name: e.higher_is_better for e in metrics}
    parts.append("<h2>Table</h2><table><tr>")
    for key, label, description in cols:
        arrow = {True: " ↑", False: " ↓"}.get(direction.get(key), "")
        parts.append(f"<th title='{esc(description)}'>{esc(label)}{arrow}</th>")
    parts.append("</tr>")
    for r in rows:
        parts.append(f"<tr class='{'hack' if r['status'] == 'hacked' else ''}'>")
        for key, _, _ in cols:
            cls = " class='l'" if key in ("kind", "method", "status") else ""
            value = r.get(key)
            if key in direction:
                value = METRICS[key](r)
            parts.append(f"<td{cls}>{_num(value)}</td>")
        parts.append("</tr>")
    parts.append(
        "</table><p>Gold and proxy relative to the base policy; d = sqrt(KL) in nats<sup>½</sup>;"
        " α, β, R² of Gao et al. 2023's law (best-of-n: d(α − βd); RL: d(α − β log d));"
        " ↑ / ↓: higher / lower is better.</p>"
    )
    parts.append("<h2>Samples</h2>")
    if any(b["kind"] == "bon" and "sample" in s for b in samples for s in b["samples"]):
        parts.append(
            "<p>Best-of-n: the completion each method picks from the first n samples of the "
            "pool (one draw of best-of-n, so at n = 1 every method shows the base policy's "
            "sample); gold is absolute, proxy is the reward the method picks by.</p>"
        )
    for block in samples:
        kind = _LABELS.get(block["kind"], block["kind"])
        parts.append(f"<h3>{esc(kind)} · {esc(block['method'])} · {esc(block['stage'])}</h3>")
        if not block["samples"]:
            parts.append("<p>(no samples logged)</p>")
        for s in block["samples"]:
            scores = ", ".join(
                f"{k} {s[k]:.3g}" for k in ("gold", "proxy") if isinstance(s.get(k), int | float)
            )
            if isinstance(s.get("sample"), int):
                scores += f", pool sample {s['sample']}"
            parts.append(
                f"<p><b>prompt</b> <pre>{esc(str(s.get('prompt', '')))}</pre>"
                f"<b>completion</b> ({esc(scores)})<pre>{esc(str(s.get('completion', '')))}</pre></p>"
            )
    parts.append("</body></html>\n")
    return "".join(parts)


def _over_seeds(run_dir: Path) -> dict[str, Any]:
    """The RL methods run over several seeds (``report.seeds``): their table, curves,
    baselines and the study's claims checked on them. Methods with one run stay out."""
    from goodhartlab.report.claims import ClaimConfig, check_claims
    from goodhartlab.report.seeds import group_rows, run_figures, seed_groups

    runs = {sub.name: _read_jsonl(sub / "metrics.jsonl") for sub in _run_dirs(run_dir, "rl")}
    runs = {name: lines for name, lines in runs.items() if lines}
    groups = seed_groups(run_dir, list(runs))
    multi = {name: g for name, g in groups.items() if len(g.runs) >= 2}
    empty = {"rows": [], "claims": [], "curves": {}, "baselines": {}, "runs": set()}
    if not multi:
        return empty
    curves = {name: {s: runs[r] for s, r in g.runs.items()} for name, g in multi.items()}
    figures = {
        name: {s: run_figures(lines) for s, lines in c.items()} for name, c in curves.items()
    }
    rows = group_rows(multi, figures, HACKING_DROP)
    config = run_dir / "config.yaml"
    raw = yaml.safe_load(config.read_text(encoding="utf-8")) if config.is_file() else {}
    claims = [ClaimConfig.model_validate(c) for c in (raw or {}).get("claims") or []]
    return {
        "rows": rows,
        "claims": [c.to_dict() for c in check_claims(claims, figures, rows)],
        "curves": curves,
        "baselines": {name: g.baseline for name, g in multi.items()},
        "runs": {r for g in multi.values() for r in g.runs.values()},
    }


def check_study_dir(run_dir: str | Path) -> Path:
    """``run_dir`` if it holds a study (manifest.json of kind "study"), else a ValueError
    saying what it is: the report is written into the directory and edits its summary.json,
    so it is never built where a study did not run."""
    run_dir = Path(run_dir)
    manifest = run_dir / "manifest.json"
    if not run_dir.is_dir():
        raise FileNotFoundError(f"report: no such run directory {run_dir}")
    if not manifest.is_file():
        raise ValueError(
            f"report: {run_dir} has no manifest.json: not a study directory (`goodhart run "
            "--run-dir DIR` makes one)"
        )
    try:
        kind = json.loads(manifest.read_text(encoding="utf-8")).get("kind")
    except (ValueError, AttributeError) as e:
        raise ValueError(f"report: {manifest} is not a valid manifest ({e})") from None
    if kind != "study":
        raise ValueError(
            f"report: {run_dir} holds a run of kind {kind!r}, not a study; the report is "
            "built for a `goodhart run` directory (its summary.json and metrics.jsonl say "
            "how this run went)"
        )
    return run_dir


def build_report(run_dir: str | Path) -> dict[str, Any]:
    """Build (or rebuild) the report of a run directory; returns summary.json's ``report``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"report: no such run directory {run_dir}")
    points = collect_metrics(run_dir)
    bon_summary = run_dir / "bon" / "summary.json"
    bon_methods = (
        json.loads(bon_summary.read_text()).get("methods") if bon_summary.is_file() else None
    )
    seeds = _over_seeds(run_dir)
    # Runs of a method over seeds are in the table over seeds, not one row per run.
    single = [p for p in points if not (p["kind"] == "rl" and p["method"] in seeds["runs"])]
    rows = summary_table(single, bon_methods)
    text = verdict(rows, seeds["rows"])
    colors = method_colors([str(p["method"]) for p in points] + list(seeds["curves"]))
    plots = _plot_curves(single, run_dir / "plots" / "curves", colors)
    plots += _plot_disagreement(single, run_dir / "plots" / "disagreement", colors)
    if seeds["curves"]:
        plots += plot_seed_frontiers(
            seeds["curves"], seeds["baselines"], run_dir / "plots" / "frontier", colors
        )
    variants = variant_rows(run_dir, points)
    if variants:
        curves = variant_curves(run_dir, points)
        plots += plot_seed_frontiers(
            curves,
            {name: BASELINE for name in curves if name != BASELINE},
            run_dir / "plots" / "rm_variants",
            method_colors(list(curves)),
            title="Reward-model variants, best-of-n over seeds",
        )
    plots += plot_monitor(points, run_dir / "plots" / "monitor")
    atomic_write_text(
        run_dir / "report.html",
        _html(run_dir, rows, text, plots, _samples(run_dir, points), seeds, variants),
    )
    report = {
        "table": rows,
        "seeds": seeds["rows"],
        "claims": seeds["claims"],
        "rm_variants": variants,
        "daa_frontiers": daa_frontiers(points),
        "verdict": text,
        "hacking_drop": HACKING_DROP,
        "plots": [str(p.relative_to(run_dir)) for p in plots],
    }

    path = run_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary["report"] = report
    atomic_write_json(path, summary)
    return report
