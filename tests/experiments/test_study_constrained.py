"""A study with proxies.components: the component proxies are trained in the proxies stage
and RL methods with components: true optimize them (μ-PPO and the fixed equal-weight sum)."""

from __future__ import annotations

import pytest
import yaml
from test_study import TINY  # the tiny study of the study tests

from goodhartlab.experiments.study import StudyConfig, run_study
from goodhartlab.optimize.rundir import read_jsonl
from goodhartlab.testbeds.toy_text.components import COMPONENTS


@pytest.mark.slow
def test_component_proxies_feed_mu_ppo_and_the_fixed_sum(tmp_path):
    k = len(COMPONENTS)
    tiny = {**TINY, "bon": {"enabled": False}, "daa": {"enabled": False}}
    # Enough pairs that every component has some that do not tie; one plain member.
    tiny["proxies"] = {**TINY["proxies"], "pairs": 400, "seeds": [0], "pretrain_seeds": False,
                       "components": True}  # fmt: skip
    tiny["rl"] = {
        **TINY["rl"],
        "steps": 2,
        "kl_coef": 0.01,
        "methods": [
            {"name": "mu-ppo", "components": True, "aggregator": "mean",
             "constrained": {"thresholds": [0.0] * k}},
            {"name": "fixed-sum", "components": True, "aggregator": "mean"},
        ],
    }  # fmt: skip
    config = StudyConfig.model_validate({**tiny, "cache_dir": str(tmp_path / "cache")})
    run_dir = run_study(config, tmp_path / "run", progress=False, workers=1)
    manifest = yaml.safe_load((run_dir / "manifest.json").read_text())
    comps = manifest["stages"]["proxies"]["result"]["components"]
    assert comps["names"] == list(COMPONENTS) and len(comps["members"]) == k
    for name in ("mu-ppo", "fixed-sum"):
        saved = yaml.safe_load((run_dir / "rl" / name / "config.yaml").read_text())
        assert len(saved["identity"]["reward"]["members"]) == k  # the component proxies
        train = read_jsonl(run_dir / "rl" / name / "train.jsonl")
        assert len(train) == 2
        assert ("mu_0" in train[0]) == (name == "mu-ppo")
    assert read_jsonl(run_dir / "rl" / "mu-ppo" / "train.jsonl")[0]["mu_4"] == 0.5
