"""A small version of ``goodhart rm-downstream`` end to end (slow: it trains two proxies on
toy_text and reads the default study's cached members, built by the default-study tests)."""

from __future__ import annotations

import json

import pytest

from goodhartlab.experiments.rm_downstream import run_rm_downstream

pytestmark = pytest.mark.slow


def test_rm_downstream_scores_proxies_and_correlates_them_with_downstream_gold(tmp_path):
    out = tmp_path / "rmd"
    result = run_rm_downstream(
        out, grid=("100x0.1", "1500x0.05"), per_subset=5, prompts=8, pool_size=16, ns=(4, 16),
        siblings=0, rl_steps=3, rl_eval_prompts=8, rl_seeds=(0, 1), rl_proxies=2, n_boot=50,
        log=lambda _: None,
    )  # fmt: skip
    assert json.loads((out / "rm_downstream.json").read_text()) == result
    assert (out / "rm_downstream.txt").is_file() and (out / "rm_downstream.png").is_file()
    rows = result["rows"]
    assert len(rows) == 7 == result["proxies"]  # the study's 5 members and the 2 trained here
    for r in rows:
        assert 0.0 <= r["clean_acc"] <= 1.0 and {"bon_gold_n4", "bon_gold_n16"} <= set(r)
    with_rl = [r for r in rows if r.get("rl_gold") is not None]
    assert len(with_rl) == 2 and all(len(r["rl_gold_seeds"]) == 2 for r in with_rl)
    # More, cleaner pairs make a better proxy on the held-out pairs.
    trained = {r["proxy"]: r for r in rows if r["proxy"].startswith("trained-")}
    assert set(trained) == {"trained-n100-noise0.1", "trained-n1500-noise0.05"}
    small, large = trained["trained-n100-noise0.1"], trained["trained-n1500-noise0.05"]
    assert large["clean_acc"] > small["clean_acc"]
    # Every measure is correlated with each best-of-n target over the 7 proxies.
    assert result["target_proxies"]["bon_gold_n16"] == 7
    assert result["target_proxies"]["rl_gold"] == 2
    assert "clean_acc" in result["correlations"]
