"""The default study on toy_text, measured (slow: builds the world from an empty cache in CI).

What is asserted is what the testbed is for and what was measured to hold. Proxy size
(bigger proxies more accurate, peaking later) needs medium and large backbones, about 15
minutes to pretrain on two cores; it is measured by ``benchmarks/proxy_sizes.py`` and
recorded in BENCHMARKS.md rather than asserted here.
"""

from __future__ import annotations

import itertools
import json

import pytest

from goodhartlab.experiments.study import load_config, run_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    config = load_config(None, ["rl.enabled=false"])
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


def test_best_of_n_overoptimizes_a_single_proxy_and_ensembles_mitigate_it(default_run):
    """The hump (Gao et al. 2023) and the ensemble result (Coste et al. 2023) on toy_text.

    A single proxy, averaged over the ensemble's five members as Coste et al. report it,
    peaks inside the n range and falls by the largest n (1,024) with a paired 95 % bootstrap
    interval over the 200 prompts that excludes 0, while its own score keeps rising. The
    mean, UWO and WCO ensembles of the same five (pretrain-seed) proxies end above it.
    """
    methods = json.loads((default_run / "bon" / "summary.json").read_text())["methods"]
    single = methods["ensemble/members_avg"]
    assert single["n_final"] == 1024
    assert single["n_peak"] > 1 and single["n_peak"] < 1024, single
    assert single["drop_paired_lo"] > 0, single
    rows = [json.loads(x) for x in (default_run / "bon" / "metrics.jsonl").read_text().splitlines()]
    proxy = [
        r["proxy"]
        for r in sorted(rows, key=lambda r: r["n"])
        if r["method"] == "ensemble/members_avg"
    ]
    assert all(b > a for a, b in itertools.pairwise(proxy)), proxy
    for agg, margin in (("mean", 0.3), ("uwo", 0.3), ("wco", 0.15)):
        assert methods[f"ensemble/{agg}"]["gold_final"] > single["gold_final"] + margin, agg


def test_rl_against_a_single_noisy_proxy_hacks(default_run, tmp_path):
    """GRPO against the single 25 %-noise proxy with no KL penalty: the proxy keeps rising
    while gold rises, peaks and falls far below its peak (issue 5's hump)."""
    from goodhartlab.experiments.study import make_testbed
    from goodhartlab.optimize.rl import RLConfig, run_rl
    from goodhartlab.rewards import RewardModel

    manifest = json.loads((default_run / "manifest.json").read_text())
    single = manifest["stages"]["proxies"]["result"]["members"][0]
    tb = make_testbed(load_config(), progress=False)
    config = RLConfig(
        algorithm="grpo",
        steps=120,
        prompts_per_step=8,
        group_size=8,
        lr=1e-4,
        kl_coef=0.0,
        eval_every=10,
        eval_prompts=100,
        eval_samples=2,
        seed=0,
    )
    result = run_rl(
        tmp_path / "rl",
        policy=tb.policy_path,
        reward=RewardModel.from_pretrained(single),
        gold=tb.gold,
        train_prompts=tb.train_prompts,
        eval_prompts=tb.eval_prompts,
        config=config,
    )
    m = sorted(result.metrics, key=lambda r: r["step"])
    assert m[0]["step"] == 0 and len(m) == 13
    gold = [r["gold"] for r in m]
    peak = max(range(len(gold)), key=gold.__getitem__)
    assert 0 < peak < len(gold) - 1, gold  # gold rises first, then falls
    assert gold[peak] - gold[-1] > 1.0, gold  # far below the peak at the end
    assert m[-1]["proxy"] > m[peak]["proxy"] > m[0]["proxy"], [r["proxy"] for r in m]
    assert m[-1]["kl"] > m[peak]["kl"] > 0
