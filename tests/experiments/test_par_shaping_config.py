"""The packaged PAR-shaping study (issue 18, item 7): PAR and its baselines under RLOO and PPO."""

from __future__ import annotations

from goodhartlab.experiments.study import load_config, packaged_configs

SHAPINGS = {"none": "none", "par": "par", "centered": "centered", "lsc": "lsc", "clip": "clip"}
SHAPINGS |= {"meanstd": "meanstd", "minmax": "minmax", "odin": "none"}


def test_par_shaping_runs_every_shaping_under_rloo_and_ppo_for_three_seeds_without_kl():
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
    assert len(runs) == 2 * len(SHAPINGS) * 3
    assert config.proxies.variants["odin"].rm == {"objective": "odin"}
    groups = {m.group for m in config.rl.methods}
    assert config.claims and all({*c.methods, c.baseline} <= groups for c in config.claims)
