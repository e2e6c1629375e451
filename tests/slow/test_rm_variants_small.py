"""A small version of the rm-variants study (slow: one variant trained on the default study's
cached pairs for two seeds, best-of-64 on 8 prompts, 2 RL steps per run: what is asserted of
the RL runs is the reward each one optimizes).

What must hold at any size: every seed's variant is trained and picked with beside the
Bradley-Terry member of its seed, the table's baseline is those members' own curves, an RL
method with ``proxy:`` optimizes the variant's model, and the report shows the table and its
frontier.
"""

from __future__ import annotations

import json
import math

import pytest
import yaml

from goodhartlab.experiments.study import load_config, run_study

pytestmark = pytest.mark.slow


def test_a_small_rm_variants_study_compares_the_variant_with_bt_seed_by_seed(tmp_path):
    config = load_config(
        "rm-variants",
        [
            "proxies.variants={ordinal: {rm: {objective: ordinal, epochs: 1}, seeds: [0, 1]}}",
            "bon.prompts=8",
            "bon.pool_size=64",
            "rl.steps=2",
            "rl.eval_every=1",
            "rl.eval_prompts=20",
            "rl.seeds=[0, 1]",
            "rl.methods=[{name: single}, {name: ordinal, proxy: ordinal}]",
            "claims=[{paper: p, claim: c, check: better, methods: [ordinal], baseline: single}]",
        ],
    )
    study = run_study(config, tmp_path / "study", progress=False)
    summary = json.loads((study / "summary.json").read_text())
    bt, ordinal = summary["report"]["rm_variants"]
    assert (bt["variant"], ordinal["variant"]) == ("bradley_terry", "ordinal")
    assert bt["seeds"] == ordinal["seeds"] == [0, 1]
    for key in ("clean_accuracy", "gold@16", "clean_accuracy − bt", "gold@16 − bt"):
        assert math.isfinite(ordinal[key]["mean"]) and ordinal[key]["n"] == 2, (key, ordinal)
    assert 0.5 < ordinal["clean_accuracy"]["mean"] < 1.0

    bon = {
        (p["method"], p["n"]): p["gold"]
        for p in map(json.loads, (study / "bon" / "metrics.jsonl").read_text().splitlines())
    }
    # bt-s0 is the proxies' member 0, the single proxy: the same picks, the same curve.
    assert bon[("bt-s0", 16)] == pytest.approx(bon[("single", 16)])
    assert bt["gold@16"]["mean"] == pytest.approx((bon[("bt-s0", 16)] + bon[("bt-s1", 16)]) / 2)
    diff = [bon[(f"ordinal-s{s}", 16)] - bon[(f"bt-s{s}", 16)] for s in (0, 1)]
    assert ordinal["gold@16 − bt"]["mean"] == pytest.approx(sum(diff) / 2)

    manifest = json.loads((study / "manifest.json").read_text())
    variant = manifest["stages"]["proxies"]["result"]["variants"]["ordinal"]
    run = yaml.safe_load((study / "rl" / "ordinal-s1" / "config.yaml").read_text())
    assert run["identity"]["reward"]["name"] == variant["members"][0]  # the variant's seed-0 model
    single = yaml.safe_load((study / "rl" / "single-s1" / "config.yaml").read_text())
    assert (
        single["identity"]["reward"]["name"]
        == manifest["stages"]["proxies"]["result"]["members"][0]
    )
    assert (study / "plots" / "rm_variants.png").is_file()
    assert "Reward-model variants" in (study / "report.html").read_text()
