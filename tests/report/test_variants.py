"""The reward-model variants' table over seeds (report.variants), on a hand-made study."""

from __future__ import annotations

import json

import pytest
import yaml

from goodhartlab.report.variants import variant_curves, variant_rows

T_975_2 = 4.302652729911275  # Student t, 2 degrees of freedom


def _study(tmp_path):
    run = tmp_path / "study"
    run.mkdir()
    proxies = {"seeds": [0, 1, 2, 3], "variants": {"o": {"rm": {"objective": "ordinal"}}}}
    (run / "config.yaml").write_text(yaml.safe_dump({"proxies": proxies}))
    acc = lambda a, ece=0.05: {"eval_clean_accuracy": a, "clean_ece": ece}  # noqa: E731
    info = {
        "members": ["m0", "m1", "m2", "m3"],
        "metrics": [acc(0.60), acc(0.62), acc(0.64, 0.08), acc(0.9)],
        "variants": {
            "o": {"seeds": [0, 1, 2], "members": ["o0", "o1", "o2"], "metrics": [acc(0.7)] * 3}
        },
    }
    manifest = {"kind": "study", "stages": {"proxies": {"status": "complete", "result": info}}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    gold16 = {"bt-s0": 0.5, "bt-s1": 1.5, "bt-s2": 1.5, "o-s0": 1.0, "o-s1": 2.0, "o-s2": 3.0}
    points = [{"kind": "bon", "method": m, "n": 1, "kl": 0.0, "gold": 0.0} for m in gold16]
    points += [
        {"kind": "bon", "method": m, "n": 16, "kl": 1.8, "gold": g} for m, g in gold16.items()
    ]
    points += [{"kind": "bon", "method": m, "n": 64, "kl": 3.2, "gold": -1.0} for m in gold16]
    points.append({"kind": "rl", "method": "o-s0", "n": None, "gold": 5.0})
    return run, points


def test_the_table_gives_each_variant_over_seeds_and_paired_with_bt(tmp_path):
    run, points = _study(tmp_path)
    bt, o = variant_rows(run, points)
    assert bt["variant"] == "bradley_terry" and bt["seeds"] == [0, 1, 2] and o["seeds"] == [0, 1, 2]
    # n = 16 is in the grid, 64 is not one of the table's n: only gold@16.
    assert set(o) == {"variant", "seeds", "clean_accuracy", "clean_accuracy − bt", "clean_ece",
                      "clean_ece − bt", "gold@16", "gold@16 − bt"}  # fmt: skip
    # The member of seed 3 (not a variant's seed) is left out of the baseline.
    assert bt["clean_accuracy"]["mean"] == pytest.approx(0.62)
    half = T_975_2 * 1.0 / 3**0.5  # gold@16 of o: 1, 2, 3
    assert o["gold@16"]["mean"] == pytest.approx(2.0)
    assert (o["gold@16"]["lo"], o["gold@16"]["hi"]) == pytest.approx((2 - half, 2 + half))
    diff = o["gold@16 − bt"]  # 0.5, 0.5, 1.5, seed by seed
    half = T_975_2 * (1 / 3) ** 0.5 / 3**0.5
    assert diff["mean"] == pytest.approx(5 / 6)
    assert (diff["lo"], diff["hi"]) == pytest.approx((5 / 6 - half, 5 / 6 + half))
    assert o["clean_accuracy − bt"]["mean"] == pytest.approx(0.08)
    # ECE: BT's members 0.05, 0.05, 0.08; the variant's 0.05 each.
    assert bt["clean_ece"]["mean"] == pytest.approx(0.06)
    assert o["clean_ece − bt"]["mean"] == pytest.approx(-0.01)


def test_the_frontier_curves_are_each_seeds_best_of_n_curve(tmp_path):
    run, points = _study(tmp_path)
    curves = variant_curves(run, points)
    assert set(curves) == {"bradley_terry", "o"} and set(curves["o"]) == {0, 1, 2}
    assert [(p["step"], p["gold"]) for p in curves["o"][2]] == [(1, 0.0), (16, 3.0), (64, -1.0)]


def test_a_study_without_variants_has_no_table(tmp_path):
    run, points = _study(tmp_path)
    (run / "config.yaml").write_text(yaml.safe_dump({"proxies": {"seeds": [0]}}))
    assert variant_rows(run, points) == [] and variant_curves(run, points) == {}
    assert variant_rows(tmp_path / "missing", points) == []
