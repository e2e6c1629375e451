"""A small version of the par-shaping study (slow: toy_text RL runs on the default study's
proxies, cached by the default-study test when it ran first).

What PAR does to gold is not asserted: it does not hold across worlds. On the machine of
2026-12-04 the unshaped proxy hacked under RLOO on every seed and PAR ended +0.74 [0.30, 1.18]
above it; on the machine of 2026-12-07, whose toy_text world (base policy, proxies) was
rebuilt from an empty cache, the unshaped proxy did not hack in 60 steps and PAR was level
with it (−0.08 [−0.54, 0.38]; BENCHMARKS.md, "PAR and its baselines"). What must hold on any
machine is asserted instead, end to end through the study: each shaping reaches the RL loss
as its formula says. Centered (r − mean r_ref, a per-prompt constant) drops out of RLOO's
leave-one-out baseline, so its run follows the unshaped one; PAR's reward is a mean of
sigmoids, in (0, 1); ceil_base never pays more than the proxy.
"""

from __future__ import annotations

import json

import pytest

from goodhartlab.experiments.study import load_config, run_study

pytestmark = pytest.mark.slow

METHODS = [
    {"name": "rloo-none"},
    {"name": "rloo-centered", "shaping": "centered", "baseline": "rloo-none"},
    {"name": "rloo-par", "shaping": "par", "baseline": "rloo-none"},
    {
        "name": "rloo-ceil90",
        "shaping": "ceil_base",
        "shaping_params": {"quantile": 0.9},
        "baseline": "rloo-none",
    },
]


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_shaping_reaches_the_rloo_loss_as_its_formula_says(tmp_path):
    config = load_config(
        "par-shaping",
        [
            "rl.seeds=[0]",
            "rl.steps=20",
            "proxies.variants={}",
            "claims=[]",
            f"rl.methods={json.dumps(METHODS)}",
        ],
    )
    study = run_study(config, tmp_path / "study", progress=False)
    rl = study / "rl"
    train = {m["name"]: _lines(rl / f"{m['name']}-s0" / "train.jsonl") for m in METHODS}
    assert all(len(t) == 20 for t in train.values())
    # Centered: the same rewards up to a per-prompt constant, so the same advantages, losses
    # and gradients as the unshaped run at every step (to float32 rounding).
    for a, b in zip(train["rloo-none"], train["rloo-centered"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3)
        assert a["r_proxy"] == pytest.approx(b["r_proxy"], abs=1e-4)
    evals = {
        name: [r for r in _lines(rl / f"{name}-s0" / "metrics.jsonl") if r.get("gold") is not None]
        for name in ("rloo-none", "rloo-centered")
    }
    for a, b in zip(evals["rloo-none"], evals["rloo-centered"], strict=True):
        assert a["gold"] == pytest.approx(b["gold"], abs=1e-3)
    # PAR: a mean of sigmoids; ceil_base: min(r, c), never above the proxy.
    assert all(0 < s["r_shaped"] < 1 for s in train["rloo-par"])
    assert all(s["r_shaped"] <= s["r_proxy"] + 1e-6 for s in train["rloo-ceil90"])
    assert any(s["r_shaped"] < s["r_proxy"] - 1e-3 for s in train["rloo-ceil90"])  # it binds
    report = json.loads((study / "summary.json").read_text())["report"]
    assert {r["method"] for r in report["table"] if r["kind"] == "rl"} == {
        f"{m['name']}-s0" for m in METHODS
    }
