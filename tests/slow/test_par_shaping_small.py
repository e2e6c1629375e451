"""A small version of the par-shaping study (slow: toy_text RL runs on the default study's
proxies, cached by the default-study test when it ran first).

Only what held on every seed of the full study (BENCHMARKS.md, "PAR and its shaping baselines
under RLOO and PPO") is asserted, on its seed 0: without a KL penalty the unshaped proxy hacks
under RLOO, and PAR ends above it (+0.61, +0.67 and +0.94 final gold on seeds 0, 1, 2).
"""

from __future__ import annotations

import json

import pytest

from goodhartlab.experiments.study import load_config, run_study

pytestmark = pytest.mark.slow

METHODS = [
    {"name": "rloo-none"},
    {"name": "rloo-par", "shaping": "par", "baseline": "rloo-none"},
]


def test_par_slows_the_hack_of_the_unshaped_proxy_under_rloo(tmp_path):
    config = load_config(
        "par-shaping",
        ["rl.seeds=[0]", "proxies.variants={}", "claims=[]", f"rl.methods={json.dumps(METHODS)}"],
    )
    study = run_study(config, tmp_path / "study", progress=False)
    report = json.loads((study / "summary.json").read_text())["report"]
    rows = {r["method"]: r for r in report["table"] if r["kind"] == "rl"}  # one seed: runs
    assert set(rows) == {"rloo-none-s0", "rloo-par-s0"}
    none, par = rows["rloo-none-s0"], rows["rloo-par-s0"]
    assert none["status"] == "hacked" and none["drop"] > 1.0, none  # lost all its gain
    assert par["final_gold"] > none["final_gold"]
    assert par["kl_max"] < none["kl_max"]
