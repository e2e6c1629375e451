"""A small version of the mitigations study (slow: toy_text RL runs on the default study's
proxies, cached by the default-study test when it ran first).

Only what held on every seed of the full study on both worlds it has run on is asserted (the
world of 2026-12-02's machine and the one rebuilt from an empty cache on 2026-12-07's; a CPU's
rounding builds a different base policy and proxies, BENCHMARKS.md, "Issue 18"): Gao et al.'s
frontier claim (single with and without its KL penalty have the same gold at KL 1: +0.03
[−0.08, 0.14] and +0.05 [−0.16, 0.26]), and the mean ensemble does not fall (drop 0 % on both).
"Without a KL penalty the single proxy hacks" held on the first world (on every seed) but not
on the second (KL 3.7-6.5 nats after 60 steps, against 19-26; one seed of three falls), so it
is not asserted. The first 40 steps of the study's runs are these runs' (every step is seeded
from (seed, step)), evaluated as in the study.
"""

from __future__ import annotations

import json

import pytest

from goodhartlab.experiments.study import load_config, run_study

pytestmark = pytest.mark.slow

METHODS = [
    {"name": "single", "kl_coef": 0.01},
    {"name": "single-nokl", "kl_coef": 0.0},
    {"name": "mean", "aggregator": "mean"},
]
CLAIMS = [
    {
        "paper": "Gao et al. 2023 (arXiv 2210.10760)",
        "claim": "A KL penalty acts like early stopping: it does not move the gold-KL frontier",
        "check": "same",
        "methods": ["single"],
        "baseline": "single-nokl",
        "metric": "gold@1",
    },
]


def test_the_claims_that_held_on_two_worlds_hold_over_three_seeds(tmp_path):
    config = load_config(
        "mitigations",
        [
            "proxies.components=false",
            "proxies.variants={}",
            "rl.steps=40",
            f"rl.methods={json.dumps(METHODS)}",
            f"claims={json.dumps(CLAIMS)}",
        ],
    )
    study = run_study(config, tmp_path / "study", progress=False)
    report = json.loads((study / "summary.json").read_text())["report"]
    rows = {r["method"]: r for r in report["seeds"]}
    assert set(rows) == {"single", "single-nokl", "mean"}
    assert all(r["seeds"] == [0, 1, 2] for r in rows.values())
    assert rows["mean"]["status"] in ("held", "fell"), rows["mean"]
    (gao,) = report["claims"]
    assert gao["verdict"] == "reproduced", gao
    assert (study / "plots" / "frontier.png").is_file()
