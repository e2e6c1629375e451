"""The default study on toy_text, measured (slow: builds the world from an empty cache in CI).

What is asserted is what the testbed is for and what was measured to hold; the figures the
issues ask about that do *not* hold yet (bigger proxies more accurate; a significant best-of-n
hump) are reported in the closing notes, not asserted here.
"""

from __future__ import annotations

import itertools
import json

import pytest

from goodhartlab.experiments.study import load_config, run_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    config = load_config(None, ["bon.pool_size=256", "bon.n_boot=300"])
    run_dir = tmp_path_factory.mktemp("study") / "run"
    return run_study(config, run_dir, progress=False)


def test_proxies_are_realistically_inaccurate(default_run):
    manifest = json.loads((default_run / "manifest.json").read_text())
    metrics = manifest["stages"]["proxies"]["result"]["metrics"]
    assert len(metrics) == 5
    for m in metrics:
        # held-out accuracy against the clean gold labels: like real reward models, not 99 %
        assert 0.6 <= m["clean_accuracy"] <= 0.8, m


def test_best_of_n_curves(default_run):
    summary = json.loads((default_run / "bon" / "summary.json").read_text())
    methods = summary["methods"]
    expected = {"single", "oracle"} | {
        f"ensemble/{a}" for a in ("mean", "wco", "uwo", "median", "mean_minus_std")
    }
    assert expected <= set(methods)
    rows = [json.loads(x) for x in (default_run / "bon" / "metrics.jsonl").read_text().splitlines()]
    single = sorted((r for r in rows if r["method"] == "single"), key=lambda r: r["n"])
    assert single[0]["n"] == 1 and single[0]["gold"] == pytest.approx(0.0, abs=1e-9)
    # The proxy's own best-of-n score rises with n (it is what is being optimized) ...
    assert all(b["proxy"] >= a["proxy"] - 1e-9 for a, b in itertools.pairwise(single))
    # ... and gold is bounded by the oracle that picks by gold itself.
    oracle = {r["n"]: r["gold"] for r in rows if r["method"] == "oracle"}
    assert all(r["gold"] <= oracle[r["n"]] + 1e-9 for r in single)
    assert methods["oracle"]["gold_final"] > methods["single"]["gold_final"] + 0.5
