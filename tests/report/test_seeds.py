"""The report over seeds: groups from config.yaml, the table with t-intervals, the status
the table and the verdict share, the claims table and the frontier plot."""

from __future__ import annotations

import json
import math

import numpy as np
import yaml
from scipy.stats import t as student_t

from goodhartlab.report import build_report
from goodhartlab.report.seeds import run_figures, seed_groups, status

# Gold by evaluation (steps 0, 10, 20, 30) of each run, absolute; KL = (step / 10)².
SINGLE = {0: [0.0, 0.5, 0.2, -1.0], 1: [0.1, 0.7, 0.3, -0.8], 2: [-0.1, 0.4, 0.0, -1.2]}
MEAN = {0: [0.0, 0.4, 0.8, 1.0], 1: [0.1, 0.6, 0.9, 1.0], 2: [-0.1, 0.3, 0.7, 0.9]}


def _study(tmp_path, claims=()):
    run = tmp_path / "study"
    (run / "rl").mkdir(parents=True)
    (run / "manifest.json").write_text('{"kind": "study"}')
    methods = []
    for group, golds in (("single", SINGLE), ("mean", MEAN)):
        for seed, gold in golds.items():
            name = f"{group}-s{seed}"
            methods.append({"name": name, "group": group, "seed": seed})
            lines = [
                {"method": name, "step": 10 * k, "kl": float(k * k), "d": float(k),
                 "gold": g, "proxy": 0.5 * k * (2 if group == "single" else 1)}
                for k, g in enumerate(gold)
            ]  # fmt: skip
            (run / "rl" / name).mkdir()
            (run / "rl" / name / "metrics.jsonl").write_text(
                "".join(json.dumps(x) + "\n" for x in lines)
            )
    config = {"rl": {"seeds": [0, 1, 2], "methods": methods}, "claims": list(claims)}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def test_groups_come_from_the_config_and_default_to_the_single_baseline(tmp_path):
    run = _study(tmp_path)
    names = [p.name for p in sorted((run / "rl").iterdir())]
    groups = seed_groups(run, names)
    assert set(groups) == {"single", "mean"}
    assert groups["mean"].runs == {0: "mean-s0", 1: "mean-s1", 2: "mean-s2"}
    assert groups["mean"].baseline == "single" and groups["single"].baseline is None


def test_run_figures_are_relative_to_the_run_start_and_in_step_order():
    lines = [
        {"step": 10 * k, "kl": float(k * k), "gold": g, "proxy": 0.0}
        for k, g in enumerate(SINGLE[1])
    ]
    f = run_figures(lines[::-1])  # any line order
    # Gold gains 0, 0.6, 0.2, -0.9: peak 0.6 at KL 1, final -0.9, drop (0.6 + 0.9) / 0.6.
    assert math.isclose(f["peak"], 0.6) and f["kl_peak"] == 1.0
    assert math.isclose(f["final"], -0.9) and math.isclose(f["drop"], 2.5)
    assert math.isclose(f["gold@1"], 0.6)
    # KL 4 is reached at step 20 exactly; 16 never (NaN).
    assert math.isclose(f["gold@4"], 0.2) and math.isnan(f["gold@16"])


def test_the_table_gives_t_intervals_and_paired_differences(tmp_path):
    run = _study(tmp_path)
    report = build_report(run)
    rows = {r["method"]: r for r in report["seeds"]}
    # single's finals relative to each start: -1.0, -0.9, -1.1; mean's: 1.0, 0.9, 1.0.
    final = np.array([-1.0, -0.9, -1.1])
    half = student_t.ppf(0.975, 2) * final.std(ddof=1) / math.sqrt(3)
    s = rows["single"]["final"]
    assert math.isclose(s["mean"], -1.0) and math.isclose(s["hi"] - s["mean"], half)
    diff = np.array([1.0, 0.9, 1.0]) - final  # mean − single, seed by seed
    vs = rows["mean"]["final_vs_baseline"]
    assert math.isclose(vs["mean"], diff.mean())
    assert math.isclose(vs["lo"], diff.mean() - student_t.ppf(0.975, 2) * diff.std(ddof=1) / 3**0.5)
    # single falls far and significantly on every seed; mean never falls.
    assert rows["single"]["status"] == "hacked" and rows["mean"]["status"] == "held"
    # The six runs are in the table over seeds, not six rows of the table of runs.
    assert not [r for r in report["table"] if r["kind"] == "rl"]
    head, *lines = report["verdict"].split("\n")
    assert head.startswith("1 of 2 methods hacked (RL 'single')")
    assert lines[0].startswith("- RL 'single' (3 seeds) hacked: peak +0.53")
    assert "Final gold − single's, paired: +1.97 [" in lines[1]
    assert (run / "plots" / "frontier.png").is_file()
    page = (run / "report.html").read_text()
    assert "RL over seeds" in page and "<td class='l'>hacked</td>" in page


def test_status_needs_a_significant_fall_to_say_hacked():
    def row(drops, falls):
        from goodhartlab.report.seeds import _interval

        return {"drop": _interval(drops), "fall": _interval(falls)}

    assert status(row([0.5, 0.6, 0.4], [0.5, 0.6, 0.4]), 0.2) == "hacked"
    assert status(row([0.1, 0.1, 0.1], [0.1, 0.12, 0.08]), 0.2) == "fell"
    assert status(row([0.9, 0.0, 0.0], [0.9, 0.0, 0.0]), 0.2) == "unclear"
    assert status(row([0.0, 0.05, 0.0], [0.0, 0.05, 0.0]), 0.2) == "held"
    assert status(row([0.5], [0.5]), 0.2) == "hacked"  # one seed: the threshold alone
    # Gold never rose on any seed (drop / gain is 0/0 or x/0, left out) and fell far: hacked.
    assert status(row([], [16.0, 14.0, 18.0]), 0.2) == "hacked"
    assert status(row([], [0.3, 0.0, 0.6]), 0.2) == "unclear"  # its fall is not significant


def test_claims_are_checked_on_the_seeds(tmp_path):
    claims = [
        {"paper": "A", "claim": "mean beats single", "check": "better",
         "methods": ["mean"], "baseline": "single"},
        {"paper": "B", "claim": "mean is the same as single at the peak", "check": "same",
         "methods": ["mean"], "baseline": "single", "metric": "peak"},
        {"paper": "C", "claim": "single does not collapse", "check": "no_collapse",
         "methods": ["single"]},
        {"paper": "D", "claim": "mean has more gold at equal proxy gain", "check":
         "better_at_matched_proxy", "methods": ["mean"], "baseline": "single"},
        {"paper": "E", "claim": "single beats mean", "check": "better",
         "methods": ["single"], "baseline": "mean"},
        {"paper": "F", "claim": "par beats single", "check": "better",
         "methods": ["par"], "baseline": "single"},
        {"paper": "G", "claim": "mean is the best", "check": "best",
         "methods": ["single"], "baseline": "mean"},
        {"paper": "H", "claim": "single is the best", "check": "best",
         "methods": ["mean"], "baseline": "single"},
        {"paper": "I", "claim": "mean is better than itself", "check": "best",
         "methods": ["mean"], "baseline": "mean"},
    ]  # fmt: skip
    report = build_report(_study(tmp_path, claims))
    verdicts = {c["paper"]: c["verdict"] for c in report["claims"]}
    # Peaks: single 0.5, 0.6, 0.5; mean 1.0, 0.9, 1.0: different, so B is not reproduced.
    assert verdicts == {
        "A": "reproduced",
        "B": "not reproduced",
        "C": "not reproduced",
        "D": "reproduced",
        "E": "contradicted",
        "F": "not run",
        "G": "reproduced",
        "H": "contradicted",
        "I": "not reproduced",  # a difference of 0 on every seed: not significant
    }
    g = next(c for c in report["claims"] if c["paper"] == "G")
    assert g["measured"].startswith("mean − single, final gold: +1.97 [")
    # D: both reach a proxy gain of 1.5 (mean's largest); at it mean has gained 1.0, 0.9,
    # 1.0 and single (gain 1.5 at step 15, between 0.5 and 0.2 relative gold) less.
    d = next(c for c in report["claims"] if c["paper"] == "D")
    assert "at proxy gain 1.50" in d["measured"]
    page = _study(tmp_path / "again", claims) / "report.html"
    build_report(page.parent)
    assert "<h2>Claims</h2>" in page.read_text()
