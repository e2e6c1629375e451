"""rewards.constrained: μ-PPO's Lagrangian reward on a pipeline's output, and its state."""

from __future__ import annotations

import math

import pytest
import torch

from goodhartlab.rewards.constrained import ConstrainedConfig, ConstrainedReward
from goodhartlab.rewards.pipeline import PipelineOutput


def _scored(members, kl_coef=0.5):
    members = torch.tensor(members)
    r = members.mean(0)
    return PipelineOutput(r, members, r, r, kl_coef)


def test_apply_hand_computed_then_one_dual_step():
    # λ = 0 -> μ = (0.5, 0.5), K = 2: r_shaped = 0.5·r_1 + 0.5·r_2;
    # β_eff = (2 − 1)·0.5 = 0.5; r_final = r_shaped − 0.5·KL.
    # members (1, 3 | 2, 0): r_shaped = (1.5, 1.5); KL = (1, 2): r_final = (1.0, 0.5).
    c = ConstrainedReward(ConstrainedConfig(thresholds=[1.0, 2.0], multiplier_lr=0.1, momentum=0))
    out = c.apply(_scored([[1.0, 3.0], [2.0, 0.0]]), torch.tensor([1.0, 2.0]))
    assert torch.allclose(out.r_shaped, torch.tensor([1.5, 1.5]))
    assert out.kl_coef == pytest.approx(0.5)
    assert torch.allclose(out.r_final, torch.tensor([1.0, 0.5]))
    # Batch means v = (2, 1) against θ = (1, 2): g = 0.25·(1, −1); λ = (−0.025, +0.025).
    assert c.lam.tolist() == pytest.approx([-0.025, 0.025])
    assert c.last_stats["constraint_0"] == pytest.approx(1.0)
    assert c.last_stats["mu_1"] == pytest.approx(0.5)  # the multipliers the batch was scored with
    # The next batch is mixed with the new multipliers.
    out = c.apply(_scored([[1.0, 3.0], [2.0, 0.0]]), None)
    mu = torch.sigmoid(torch.tensor([-0.025, 0.025]))
    assert torch.allclose(out.r_shaped, mu @ torch.tensor([[1.0, 3.0], [2.0, 0.0]]), atol=1e-6)
    assert torch.equal(out.r_final, out.r_shaped)  # no KL: the objective is 0


def test_equality_multipliers_start_at_zero_and_state_round_trips():
    c = ConstrainedReward(ConstrainedConfig(thresholds=[0.0], kind="eq"))
    out = c.apply(_scored([[2.0, 2.0]]), torch.tensor([1.0, 1.0]))
    # μ = tanh(0) = 0: nothing on the component, the whole weight K = 1 on −β·KL.
    assert torch.equal(out.r_shaped, torch.zeros(2)) and out.kl_coef == pytest.approx(0.5)
    assert c.mu.item() < 0  # above its threshold: pushed down, below 0
    d = ConstrainedReward(ConstrainedConfig(thresholds=[0.0], kind="eq"))
    d.load_state_dict(c.state_dict())
    assert torch.equal(d.lam, c.lam) and torch.equal(d.velocity, c.velocity)
    assert math.isfinite(c.mu.item())


def test_a_kind_other_than_ge_or_eq_is_refused_naming_the_field():
    from pydantic import ValidationError

    from goodhartlab.optimize.rl import RLConfig

    with pytest.raises(ValidationError, match=r"constrained\.kind\n.*'ge' or 'eq'"):
        RLConfig(constrained={"thresholds": [0.0], "kind": "xi"})


def test_the_number_of_thresholds_must_match_the_members():
    c = ConstrainedReward(ConstrainedConfig(thresholds=[0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"constrained\.thresholds: 3 thresholds"):
        c.apply(_scored([[1.0], [2.0]]), None)
    with pytest.raises(ValueError, match="thresholds"):
        ConstrainedConfig(thresholds=[])


def test_goodhart_rl_takes_the_constrained_settings_as_a_mapping():
    from goodhartlab.cli import build_parser
    from goodhartlab.optimize.rl import RLConfig

    args = build_parser().parse_args(
        ["rl", "--constrained", "{thresholds: [0.5, -1.0], kind: eq}", "--out", "o"]
    )
    assert args.constrained == {"thresholds": [0.5, -1.0], "kind": "eq"}
    assert RLConfig(constrained=args.constrained).constrained.kind == "eq"


def test_nm_ppo_tells_minus_gold_and_moves_theta_by_a_nelder_mead_step():
    # K = 1, θ0 = 0, scale 1: the simplex is {0, 1}. Step 0 tells nothing (the base policy);
    # step 10 tells −2 at θ = 0, so θ moves to the second vertex 1; step 15 is off the
    # search_every grid; step 20 tells −5 at θ = 1. Sorted: best 1 (−5), worst 0 (−2), centroid
    # of the rest 1, reflection 1 + 1·(1 − 0) = 2 (Nelder & Mead's reflection coefficient 1).
    cfg = ConstrainedConfig(thresholds=[0.0], search="nelder_mead", search_every=10,
                            search_scale=1.0)  # fmt: skip
    c = ConstrainedReward(cfg)
    assert c.observe_gold(0, 9.0) == {"theta_0": 0.0, "search_evals": 0}
    assert c.observe_gold(10, 2.0) == {"theta_0": 0.0, "search_evals": 1}
    assert c.theta.tolist() == [1.0]
    assert c.observe_gold(15, 9.0)["search_evals"] == 1 and c.theta.tolist() == [1.0]
    assert c.observe_gold(20, 5.0) == {"theta_0": 1.0, "search_evals": 2}
    assert c.theta.tolist() == [2.0]
    # The apply step's constraint is against the searched θ.
    c.apply(_scored([[2.5, 2.5]]), None)
    assert c.last_stats["theta_0"] == 2.0 and c.last_stats["constraint_0"] == pytest.approx(0.5)
    # The state replays into a fresh search: same θ, and the same next point.
    d = ConstrainedReward(cfg)
    d.load_state_dict(c.state_dict())
    assert d.theta.tolist() == [2.0]
    c.observe_gold(30, 1.0), d.observe_gold(30, 1.0)
    assert torch.equal(c.theta, d.theta)


def test_without_a_search_observing_gold_changes_nothing():
    c = ConstrainedReward(ConstrainedConfig(thresholds=[0.5]))
    assert c.observe_gold(10, 3.0) == {} and c.theta.tolist() == [0.5]
    assert c.state_dict()["search"] is None
