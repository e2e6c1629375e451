"""The packaged mitigations study (issue 18): every method for seeds 0, 1, 2, one schedule."""

from __future__ import annotations

import re
from collections import defaultdict

from goodhartlab.experiments.study import load_config, packaged_configs


def test_mitigations_runs_every_method_for_three_seeds_on_one_schedule():
    assert "mitigations" in packaged_configs()
    config = load_config("mitigations")
    seeds = defaultdict(set)
    for m in config.rl.methods:
        name, seed = re.fullmatch(r"(.+)-s(\d)", m.name).groups()
        assert m.seed == int(seed) and m.group == name
        seeds[name].add(m.seed)
    existing = {"single", "single-nokl", "mean", "wco", "uwo", "par"}
    new = {"wco-std", "uwo-std", "clip", "delta", "sft", "ppo-clip", "ppo-delta", "sqrtchi2"}
    new |= {"chi2", "nashmp", "gardo", "gardo-gate", "lenfit", "mu-ppo", "fixed-sum", "par-long"}
    new |= {"gardo-adaptive", "gardo-adaptive-gate", "xi-ppo", "nashmp-pairwise", "sft-chosen"}
    assert existing | new <= set(seeds)
    assert all(s == {0, 1, 2} for s in seeds.values())
    resolved = {
        m.name: config.rl.run_config(m, seed=0, device="cpu", max_new_tokens=64)
        for m in config.rl.methods
    }
    # The same steps, prompts and evaluation schedule for every run but PAR run twice as
    # long (Fu et al.'s claim).
    schedules = {
        (c.steps, c.eval_every, c.eval_prompts, c.prompts_per_step)
        for name, c in resolved.items()
        if not name.startswith("par-long")
    }
    assert schedules == {(60, 10, 100, 8)}
    assert resolved["par-long-s1"].steps == 120 and resolved["par-long-s1"].reward.shaping == "par"
    assert resolved["clip-s0"].reward.shaping == "step_clip"
    assert resolved["delta-s1"].reward.shaping == "step_delta"
    assert resolved["wco-std-s2"].reward.standardize_members
    assert resolved["sft-s0"].sft_coef > 0 and resolved["single-s0"].sft_coef == 0
    assert resolved["sft-s0"].sft_source == "base"
    chosen = resolved["sft-chosen-s1"]
    assert chosen.sft_source == "chosen" and chosen.sft_coef == resolved["sft-s0"].sft_coef
    assert resolved["ppo-clip-s0"].algorithm == "ppo"
    assert resolved["nashmp-s1"].algorithm == "nash_mp"
    # Nash-MP on the pairwise preference model trained beside the proxies, not on the proxy.
    pairwise = {m.name: m for m in config.rl.methods}["nashmp-pairwise-s0"]
    assert resolved["nashmp-pairwise-s0"].algorithm == "nash_mp" and pairwise.proxy == "pairwise"
    assert config.proxies.variants["pairwise"].rm == {"objective": "pairwise"}
    assert resolved["sqrtchi2-s2"].occupancy_reg == "sqrt_chi2"
    assert resolved["sqrtchi2-s2"].kl_coef == 0.0
    assert resolved["mu-ppo-s0"].constrained is not None and config.proxies.components
    mu, xi = resolved["mu-ppo-s1"].constrained, resolved["xi-ppo-s1"].constrained
    assert (mu.kind, xi.kind) == ("ge", "eq") and mu.thresholds == xi.thresholds
    assert resolved["single-s0"].kl_coef == 0.01 and resolved["single-nokl-s0"].kl_coef == 0.0
    # GARDO: the fixed schedule against the released code's adaptive fraction and KL trigger.
    fixed, adaptive = resolved["gardo-s0"], resolved["gardo-adaptive-s0"]
    assert fixed.ref_reset_every == 10 and fixed.ref_reset_kl is None and not fixed.kl_gate_adaptive
    assert adaptive.kl_gate_adaptive and adaptive.ref_reset_kl == 0.5
    assert adaptive.ref_reset_every == 16 and adaptive.diversity_bonus
    gate = resolved["gardo-adaptive-gate-s1"]
    assert gate.kl_gate_adaptive and gate.ref_reset_kl is None and gate.ref_reset_every is None


def test_mitigations_pairs_each_method_with_its_own_algorithms_single_proxy():
    config = load_config("mitigations")
    for m in config.rl.methods:
        algorithm = config.rl.run_config(m, seed=0, device="cpu", max_new_tokens=64).algorithm
        if m.group.startswith("ppo-") and m.group != "ppo-single":
            assert m.baseline == "ppo-single" and algorithm == "ppo", m.name
        elif m.group in ("mu-ppo", "xi-ppo"):  # constrained runs against the fixed sum
            assert m.baseline == "fixed-sum" and m.components, m.name
        elif m.group != "ppo-single":
            assert m.baseline is None and algorithm in ("grpo", "nash_mp"), m.name  # 'single'
    # Every claim names methods of the study (checked at load time, too).
    groups = {m.group for m in config.rl.methods}
    assert config.claims and all(set(c.methods) <= groups for c in config.claims)
