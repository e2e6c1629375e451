"""A small version of the mitigations study (slow: toy_text RL runs on the default study's
proxies, cached by the default-study test when it ran first).

Only what held on every seed of the full study (BENCHMARKS.md, "Issue 18") is asserted:
without a KL penalty the single proxy hacks, and the mean ensemble ends far above it. The
claims table and the report over seeds are checked on those runs.
"""

from __future__ import annotations

import json

import pytest

from goodhartlab.experiments.study import load_config, run_study

pytestmark = pytest.mark.slow

METHODS = [{"name": "single-nokl", "kl_coef": 0.0}, {"name": "mean", "aggregator": "mean"}]
CLAIMS = [
    {
        "paper": "Coste et al. 2023 (arXiv 2310.02743)",
        "claim": "An ensemble beats the single proxy it contains",
        "check": "better",
        "methods": ["mean"],
        "baseline": "single-nokl",
    },
    {
        "paper": "Gao et al. 2023 (arXiv 2210.10760)",
        "claim": "Optimizing a noisy proxy without a KL penalty overoptimizes it",
        "check": "no_collapse",
        "methods": ["single-nokl"],
    },
]


def test_the_robust_claims_hold_over_three_seeds(tmp_path):
    config = load_config(
        "mitigations",
        [
            "proxies.components=false",
            "proxies.variants={}",
            "rl.steps=40",
            "rl.eval_prompts=50",
            f"rl.methods={json.dumps(METHODS)}",
            f"claims={json.dumps(CLAIMS)}",
        ],
    )
    study = run_study(config, tmp_path / "study", progress=False)
    report = json.loads((study / "summary.json").read_text())["report"]
    rows = {r["method"]: r for r in report["seeds"]}
    assert set(rows) == {"single-nokl", "mean"} and rows["mean"]["seeds"] == [0, 1, 2]
    assert rows["single-nokl"]["status"] == "hacked", rows["single-nokl"]
    assert rows["mean"]["status"] in ("held", "fell"), rows["mean"]
    verdicts = [c["verdict"] for c in report["claims"]]
    # The ensemble is better; "does not collapse" is (rightly) not reproduced for no KL.
    assert verdicts == ["reproduced", "not reproduced"], report["claims"]
    assert (study / "plots" / "frontier.png").is_file()
