"""train.rm_pair_inputs.simulate_observation (CausalRM's observational feedback) and the causal
objectives trained end to end on a tiny learnable gold."""

from __future__ import annotations

import pytest
import torch
from test_rm_objective_training import synthetic_pairs

from goodhartlab.models.tiny import build_reward_model
from goodhartlab.train import RMTrainConfig, train_reward_model
from goodhartlab.train.rm_pair_inputs import (
    OBSERVATION_VERSION,
    observation_feature,
    simulate_observation,
)


def test_simulation_is_seeded_biased_and_its_propensity_is_estimated():
    pairs = synthetic_pairs(2000, seed=0, noise=0.2)
    config = RMTrainConfig(objective="causal_dr", causal_obs_bias=-1.0, causal_obs_slope=2.0)
    sim, report = simulate_observation(pairs, config)
    again, _ = simulate_observation(pairs, config)
    assert torch.equal(sim["observed"], again["observed"])
    other, _ = simulate_observation(pairs, config.model_copy(update={"seed": 1}))
    assert not torch.equal(sim["observed"], other["observed"])
    assert report["version"] == OBSERVATION_VERSION
    x = observation_feature(pairs, "length_gap")
    o = sim["observed"].bool()
    # Selection bias: observed pairs have a larger length gap than the population (mean 0).
    assert x[o].mean() > 0.5
    # The estimated propensity is close to the true one (correct model, 2000 pairs).
    assert report["fitted_slope"] == pytest.approx(2.0, abs=0.3)
    assert report["fitted_bias"] == pytest.approx(-1.0, abs=0.2)
    oracle, rep_o = simulate_observation(
        pairs, config.model_copy(update={"causal_propensity": "oracle"})
    )
    true_p = torch.sigmoid(-1.0 + 2.0 * x).clamp_min(0.05).float()
    assert torch.allclose(oracle["propensity"], true_p)
    assert torch.equal(oracle["observed"], sim["observed"])
    assert rep_o["n_observed"] == int(o.sum())
    assert ((sim["imputed_label"] > 0) & (sim["imputed_label"] < 1)).all()


def test_gold_gap_feature_needs_gold():
    pairs = synthetic_pairs(50, seed=0)
    x = observation_feature(pairs, "gold_gap")
    assert x.mean().abs() < 1e-9 and x.std() == pytest.approx(1.0)
    bare = [p.model_copy(update={"gold_chosen": None}) for p in pairs]
    with pytest.raises(ValueError, match="gold"):
        observation_feature(bare, "gold_gap")


@pytest.mark.parametrize("objective", ["causal_naive", "causal_ips", "causal_dr"])
def test_causal_objectives_train(objective, tiny_tokenizer):
    train = synthetic_pairs(320, seed=0, noise=0.1)
    held_out = synthetic_pairs(100, seed=1)
    config = RMTrainConfig(
        objective=objective,
        causal_obs_bias=0.0,
        batch_size=16,
        lr=1e-3,
        epochs=3,
        max_length=32,
        eval_fraction=0.0,
    )
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    result = train_reward_model(train, tiny_tokenizer, backbone, config, eval_pairs=held_out)
    assert result.metrics["clean_accuracy"] > 0.8
    assert 0.2 < result.pair_inputs["observation"]["observed_fraction"] < 0.8
