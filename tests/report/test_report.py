"""The study report: metrics collection, table, verdict, plots and the HTML page."""

from __future__ import annotations

import json
import math

from goodhartlab.cli import main
from goodhartlab.report import collect_metrics, summary_table, verdict


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _fake_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "manifest.json").write_text('{"kind": "study"}')  # what `goodhart report` checks
    bon = []
    for n, d in enumerate([0.0, 0.5, 1.0, 1.5, 2.0], start=1):
        bon.append(
            {
                "method": "single",
                "kind": "single",
                "n": n,
                "d": d,
                "kl": d * d,
                "gold": d * (1.0 - 0.5 * d),
                "proxy": d,
            }
        )
        bon.append(
            {
                "method": "oracle",
                "kind": "oracle",
                "n": n,
                "d": d,
                "kl": d * d,
                "gold": 2 * d,
                "proxy": 2 * d,
            }
        )
        bon.append(
            {
                "method": "ensemble/member0",
                "kind": "member",
                "n": n,
                "d": d,
                "kl": d * d,
                "gold": 0.1 * d,
                "proxy": d,
            }
        )
    _write_jsonl(run / "bon/metrics.jsonl", bon)
    _write_jsonl(
        run / "bon/samples.jsonl",
        [
            {"prompt": "p & q", "method": "base", "completion": "plain", "gold": 0.1},
            {
                "prompt": "p & q",
                "method": "single",
                "n": 8,
                "completion": "best",
                "gold": 0.2,
                "proxy": 1.0,
            },
        ],
    )
    # RL: "hack" peaks and falls (absolute gold, base 1.0), "safe" keeps rising.
    for name, golds in (("hack", [1.0, 1.6, 1.8, 1.2, 1.0]), ("safe", [1.0, 1.2, 1.4, 1.5, 1.6])):
        rows, samples = [], []
        for k, g in enumerate(golds):
            d = 0.5 * k
            rows.append(
                {
                    "method": name,
                    "step": 10 * k,
                    "kl": d * d,
                    "d": d,
                    "gold": g,
                    "proxy": 2.0 + d,
                    "disagreement": 0.1 * k,
                }
            )
            samples.append(
                {
                    "step": 10 * k,
                    "prompt": "a",
                    "completion": f"c{k} <b>",
                    "gold": g,
                    "proxy": 2.0 + d,
                }
            )
        _write_jsonl(run / f"rl/{name}/metrics.jsonl", rows)
        _write_jsonl(run / f"rl/{name}/samples.jsonl", samples)
    return run


def test_collect_metrics_is_idempotent_and_relative_to_the_base(tmp_path):
    run = _fake_run(tmp_path)
    first = collect_metrics(run)
    assert collect_metrics(run) == first
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 15 + 10
    hack = [p for p in first if p["kind"] == "rl" and p["method"] == "hack"]
    assert [p["gold"] for p in hack] == [0.0, 0.6000000000000001, 0.8, 0.19999999999999996, 0.0]
    assert hack[0]["gold_abs"] == 1.0 and hack[0]["curve"] == "rl"
    assert {p["curve"] for p in first if p["kind"] == "bon"} == {"single", "oracle", "member"}


def test_table_and_verdict_name_the_method_that_hacked(tmp_path):
    rows = {
        (r["kind"], r["method"]): r for r in summary_table(collect_metrics(_fake_run(tmp_path)))
    }
    assert ("bon", "ensemble/member0") not in rows  # members are only drawn
    hack, safe = rows[("rl", "hack")], rows[("rl", "safe")]
    assert math.isclose(hack["peak_gold"], 0.8) and hack["d_peak"] == 1.0
    assert math.isclose(hack["drop"], 1.0) and hack["hacking"] and not safe["hacking"]
    assert safe["drop"] == 0.0 and math.isclose(safe["final_gold"], 0.6)
    single = rows[("bon", "single")]
    assert math.isclose(single["alpha"], 1.0) and math.isclose(single["beta"], 0.5)
    assert math.isclose(single["r2"], 1.0)
    text = verdict(list(rows.values()))
    head, *lines = text.split("\n")
    # A short headline naming what hacked, then one line per method, RL first.
    assert head.startswith("2 of 3 methods hacked (RL 'hack', best-of-n 'single')")
    assert "highest final gold: RL 'safe' (+0.60" in head
    assert lines[0] == (
        "- RL 'hack' hacked: gold peaked at +0.80 (KL 1 nats), then lost 100% of that gain by KL 4."
    )
    assert lines[1] == "- RL 'safe' held: gold ended at +0.60 at KL 4 nats."
    # The table's status is the verdict's word.
    assert [r["status"] for r in rows.values() if r["curve"] != "oracle"].count("hacked") == 2
    assert verdict([]).startswith("No results")


def test_a_significant_best_of_n_drop_under_the_threshold_is_reported_as_significant(tmp_path):
    points = collect_metrics(_fake_run(tmp_path))
    for p in points:  # a small fall after the peak: gold 0.8 at n = 4, 0.75 at n = 5
        if p["kind"] == "bon" and p["method"] == "single" and p["n"] == 5:
            p["gold"] = 0.75
    significant = {"single": {"n_peak": 4, "drop_paired_lo": 0.01, "drop_paired_hi": 0.09}}
    not_significant = {"single": {"n_peak": 4, "drop_paired_lo": -0.02, "drop_paired_hi": 0.1}}
    (row,) = [r for r in summary_table(points, significant) if r["method"] == "single"]
    assert not row["hacking"] and row["drop_ci"] == [0.01, 0.09] and row["n_peak"] == 4
    # The table says "fell" where the verdict says it fell significantly (they agree).
    assert row["status"] == "fell"
    assert "fell significantly to +0.75 (drop 95 % CI [0.01, 0.09])" in verdict([row])
    (row,) = [r for r in summary_table(points, not_significant) if r["method"] == "single"]
    assert row["status"] == "held"
    assert "- best-of-n 'single' held: gold ended at +0.75" in verdict([row])
    (row,) = [r for r in summary_table(points) if r["method"] == "single"]
    assert "drop_ci" not in row


def test_build_report_writes_plots_html_and_summary(tmp_path, capsys):
    run = _fake_run(tmp_path)
    (run / "summary.json").write_text(json.dumps({"bon": {"kept": 1}}))
    assert main(["report", str(run)]) == 0
    assert "2 of 3 methods hacked" in capsys.readouterr().out
    for name in ("curves.png", "curves.svg", "disagreement.png", "disagreement.svg"):
        assert (run / "plots" / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["bon"] == {"kept": 1} and summary["report"]["table"]
    page = (run / "report.html").read_text()
    assert "c4 &lt;b&gt;" in page and "p &amp; q" in page and "<b>" in page
    assert "start (step 0)" in page and "peak gold (step 20)" in page and "end (step 40)" in page
    assert "<script" not in page.lower() and "data:image/png;base64," in page


def test_daa_runs_are_collected_with_the_rl_law_and_an_optional_proxy(tmp_path):
    run = tmp_path / "run"
    rows = [
        {"method": "dpo", "step": s, "d": d, "kl": d * d, "gold": 1.0 + d * (1 - 0.5 * d)}
        for s, d in enumerate([0.0, 0.5, 1.0, 1.5, 2.0])
    ]
    _write_jsonl(run / "daa/dpo/metrics.jsonl", [{**r, "proxy": None} for r in rows])
    points = collect_metrics(run)
    assert [p["kind"] for p in points] == ["daa"] * 5 and points[0]["curve"] == "daa"
    assert points[0]["gold"] == 0.0 and points[-1]["gold_abs"] == 1.0
    assert all(p["proxy"] is None for p in points)
    (row,) = summary_table(points)
    assert (row["kind"], row["method"], row["law"]) == ("daa", "dpo", "rl")
    assert "- direct alignment 'dpo' hacked: gold peaked at +0.50" in verdict([row])


def test_daa_frontier_fits_each_loss_across_its_beta_sweep(tmp_path):
    from goodhartlab.report.report import daa_frontiers

    run = tmp_path / "run"
    # Two DPO runs (two KL budgets) on one noiseless law, gold = d (1.2 - 0.5 log d), and one
    # IPO run: the DPO fit pools both runs' points and recovers the law.
    for name, beta, ds in (
        ("dpo-a", 0.05, [0.0, 0.8, 1.6, 2.4]),
        ("dpo-b", 0.5, [0.0, 0.3, 0.6, 0.9]),
    ):
        _write_jsonl(
            run / f"daa/{name}/metrics.jsonl",
            [
                {
                    "method": name,
                    "loss": "dpo",
                    "beta": beta,
                    "step": s,
                    "d": d,
                    "kl": d * d,
                    "gold": 0.2 + (d * (1.2 - 0.5 * math.log(d)) if d > 0 else 0.0),
                    "proxy": None,
                }
                for s, d in enumerate(ds)
            ],
        )
    _write_jsonl(
        run / "daa/ipo/metrics.jsonl",
        [
            {
                "method": "ipo",
                "loss": "ipo",
                "beta": 0.1,
                "step": s,
                "d": d,
                "kl": d * d,
                "gold": d,
                "proxy": None,
            }
            for s, d in enumerate([0.0, 1.0, 2.0])
        ],
    )
    rows = {r["loss"]: r for r in daa_frontiers(collect_metrics(run))}
    assert set(rows) == {"dpo", "ipo"}
    dpo = rows["dpo"]
    assert (dpo["runs"], dpo["points"], dpo["betas"]) == (2, 8, [0.05, 0.5])
    assert math.isclose(dpo["alpha"], 1.2, rel_tol=1e-6) and math.isclose(
        dpo["beta"], 0.5, rel_tol=1e-6
    )
    assert rows["ipo"]["runs"] == 1


def test_bon_samples_are_shown_at_n_1_the_peak_n_and_the_largest_n():
    from goodhartlab.report.report import _bon_ns

    def curve(method, golds, curve="single"):
        return [
            {"kind": "bon", "curve": curve, "method": method, "n": n, "gold": g}
            for n, g in zip((1, 2, 4, 8), golds, strict=True)
        ]

    points = (
        curve("hump", [0.0, 0.5, 0.3, -0.2])  # peaks at n = 2
        + curve("rising", [0.0, 0.1, 0.2, 0.3])  # peaks at the end
        + curve("falling", [0.0, -0.1, -0.2, -0.3])  # peaks at the start
        + curve("ensemble/member0", [0.0, 1.0, 2.0, 3.0], curve="member")
        + [{"kind": "rl", "method": "hump", "step": 0, "gold": 1.0}]
    )
    assert _bon_ns(points) == {
        "hump": [("start (n = 1)", 1), ("peak gold (n = 2)", 2), ("end (n = 8)", 8)],
        "rising": [("start (n = 1)", 1), ("peak gold and end (n = 8)", 8)],
        "falling": [("start and peak gold (n = 1)", 1), ("end (n = 8)", 8)],
    }


def test_the_table_columns_are_the_metrics_registry(tmp_path):
    """Every METRICS entry is a column (with its direction); a registered one joins."""
    from goodhartlab.report import build_report
    from goodhartlab.report.metrics import METRICS

    run = _fake_run(tmp_path)

    @METRICS.register("peak_x2", higher_is_better=True, label="twice the peak")
    def peak_x2(row):
        """Twice the peak gold."""
        return 2 * row["peak_gold"]

    try:
        build_report(run)
        page = (run / "report.html").read_text()
    finally:
        METRICS.unregister("peak_x2")
    assert "<th title='Twice the peak gold.'>twice the peak ↑</th>" in page
    assert "overoptimization (drop) ↓</th>" in page and "α</th>" in page
    rows = summary_table(json.loads(line) for line in (run / "metrics.jsonl").open())
    single = next(r for r in rows if r["method"] == "single")
    assert f"<td>{2 * single['peak_gold']:.3g}</td>" in page


def test_watched_rl_runs_get_the_monitor_plot_and_unwatched_ones_none(tmp_path):
    from goodhartlab.report.monitor_plot import plot_monitor

    run = _fake_run(tmp_path)
    # Unwatched runs (no "monitor" in their lines): no monitor plot.
    assert main(["report", str(run)]) == 0
    assert not (run / "plots" / "monitor.png").exists()
    # "hack" watched: alarm raised at step 30, where gold has fallen.
    path = run / "rl/hack/metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    for k, r in enumerate(rows):
        raised = 30 if r["step"] >= 30 else None
        r["monitor"] = {"alarm_score": 0.2 * k, "alarm": raised is not None, "alarm_step": raised}
    _write_jsonl(path, rows)
    assert main(["report", str(run)]) == 0
    assert (run / "plots" / "monitor.png").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert "plots/monitor.png" in summary["report"]["plots"]
    from goodhartlab.report.report import collect_metrics

    written = plot_monitor(collect_metrics(run), tmp_path / "again")
    assert [p.suffix for p in written] == [".png", ".svg"]
