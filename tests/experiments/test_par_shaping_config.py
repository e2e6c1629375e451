"""The packaged PAR-shaping study (issue 18, item 7): PAR and its baselines under RLOO and PPO."""

from __future__ import annotations

import pytest

from goodhartlab.experiments.study import load_config, packaged_configs

SHAPINGS = {"none": "none", "par": "par", "centered": "centered", "lsc": "lsc", "clip": "clip"}
SHAPINGS |= {"meanstd": "meanstd", "minmax": "minmax", "odin": "none"}
SHAPINGS |= {"ceil90": "ceil_base", "ceil99": "ceil_base"}
CAPS = {"ceil90": 0.9, "ceil99": 0.99}


def test_par_shaping_runs_every_shaping_under_rloo_and_ppo_for_three_seeds():
    assert "par-shaping" in packaged_configs()
    config = load_config("par-shaping")
    runs = {
        m.name: (m, config.rl.run_config(m, seed=m.seed, device="cpu", max_new_tokens=64))
        for m in config.rl.methods
    }
    for algorithm in ("rloo", "ppo"):
        for shaping, registered in SHAPINGS.items():
            for seed in (0, 1, 2):
                m, c = runs[f"{algorithm}-{shaping}-s{seed}"]
                assert c.algorithm == algorithm and c.reward.shaping == registered
                assert (c.steps, c.eval_every, c.eval_prompts, c.kl_coef) == (60, 10, 100, 0.0)
                # Each row is paired with its own estimator's unshaped proxy.
                assert m.baseline == (None if shaping == "none" else f"{algorithm}-none")
                assert m.proxy == ("odin" if shaping == "odin" else None)
                if shaping in CAPS:
                    assert c.reward.shaping_params == {"quantile": CAPS[shaping]}
            for shaping in ("none", "par"):  # and with the mitigations study's KL penalty
                m, c = runs[f"{algorithm}-{shaping}-kl-s{seed}"]
                assert c.algorithm == algorithm and c.reward.shaping == shaping
                assert (c.steps, c.kl_coef) == (60, 0.01)
                assert m.baseline == (None if shaping == "none" else f"{algorithm}-none-kl")
    assert len(runs) == 2 * (len(SHAPINGS) + 2) * 3
    assert config.proxies.variants["odin"].rm == {"objective": "odin"}
    groups = {m.group for m in config.rl.methods}
    assert config.claims and all({*c.methods, c.baseline} <= groups for c in config.claims)


def test_methods_selects_a_part_of_the_study_with_its_baselines_and_claims():
    config = load_config("par-shaping", methods=["rloo-par-kl", "ppo-ceil90"])
    groups = {m.group for m in config.rl.methods}
    assert groups == {"rloo-par-kl", "rloo-none-kl", "ppo-ceil90", "ppo-none"}
    assert len(config.rl.methods) == 4 * 3
    # Only the claims all of whose methods were kept: PAR with KL under RLOO.
    assert [(c.methods, c.baseline) for c in config.claims] == [(["rloo-par-kl"], "rloo-none-kl")]
    whole = load_config("par-shaping")
    kept = {m.name: m for m in config.rl.methods}
    for m in whole.rl.methods:  # the same settings as in the whole study
        if m.name in kept:
            assert m == kept[m.name]
    with pytest.raises(ValueError, match="rloo-nope"):
        load_config("par-shaping", methods=["rloo-nope"])
