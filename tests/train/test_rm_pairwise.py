"""Training the pairwise preference model (objective 'pairwise', train/rm_pairwise.py)."""

from __future__ import annotations

import json

import pytest
import torch
from test_rm_objective_training import synthetic_pairs

from goodhartlab.cli import main
from goodhartlab.data import write_pairs
from goodhartlab.models.tiny import build_reward_model
from goodhartlab.rewards import PairwisePreferenceModel
from goodhartlab.train import RMTrainConfig, evaluate_reward_model, train_reward_model

CONFIG = dict(batch_size=16, lr=1e-3, epochs=3, max_length=64, eval_fraction=0.0)


def test_pairwise_accuracy_rises_above_chance_and_the_model_reloads(tmp_path, tiny_tokenizer):
    train = synthetic_pairs(320, seed=0, noise=0.1)
    held_out = synthetic_pairs(100, seed=1)
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    result = train_reward_model(
        train, tiny_tokenizer, backbone, RMTrainConfig(objective="pairwise", **CONFIG),
        eval_pairs=held_out, out_dir=tmp_path / "pm", progress=False,
    )  # fmt: skip
    assert isinstance(result.reward_model, PairwisePreferenceModel)
    assert result.history[0]["eval_clean_accuracy"] < 0.7  # chance before training
    assert result.metrics["clean_accuracy"] > 0.85
    assert result.history[-1]["eval_loss"] < result.history[0]["eval_loss"] - 0.2

    info = json.loads((tmp_path / "pm" / "goodhart_rm.json").read_text())
    assert info["kind"] == "pairwise" and info["pairwise_template"] == "1"
    assert info["config"]["objective"] == "pairwise" and info["objective_version"] == "1"
    loaded = PairwisePreferenceModel.from_pretrained(tmp_path / "pm")
    assert evaluate_reward_model(loaded, held_out) == pytest.approx(result.metrics)
    # The model prefers more "great"s (the gold) whichever side they are on.
    p = loaded.preference(
        ["review:"] * 2, [" great great fine", " fine"], [" fine", " great great fine"]
    )
    assert p[0] > 0.5 > p[1]
    torch.testing.assert_close(p[0] + p[1], torch.tensor(1.0))


def test_goodhart_train_rm_objective_pairwise(tmp_path, tiny_tokenizer):
    backbone = tmp_path / "backbone"
    build_reward_model("small", tiny_tokenizer, seed=0).save_pretrained(backbone)
    tiny_tokenizer.save_pretrained(backbone)
    data = tmp_path / "pairs.jsonl"
    write_pairs(synthetic_pairs(64, seed=0), data)
    argv = ["train-rm", "--data", str(data), "--backbone", str(backbone), "--objective",
            "pairwise", "--epochs", "1", "--max-length", "48", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    pm = PairwisePreferenceModel.from_pretrained(tmp_path / "out" / "member_0")
    assert pm.max_length == 48


@pytest.mark.parametrize(
    "field, value", [("margin", True), ("center_coef", 0.1), ("features", "toy_text_basic")]
)
def test_settings_a_pairwise_model_cannot_take_are_refused(tiny_tokenizer, field, value):
    if field == "features":
        from goodhartlab.registry import RM_FEATURES

        value = next(iter(RM_FEATURES))
    config = RMTrainConfig(objective="pairwise", **{**CONFIG, field: value})
    pairs = synthetic_pairs(8, seed=0)
    if field == "margin":
        pairs = [p.model_copy(update={"margin": 1.0}) for p in pairs]
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    with pytest.raises(ValueError, match=f"{field}: not supported with objective 'pairwise'"):
        train_reward_model(pairs, tiny_tokenizer, backbone, config, progress=False)
