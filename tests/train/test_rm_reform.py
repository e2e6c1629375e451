"""train.rm_reform: the search keeps the over-scored sample, relabels with the pairs' own
noisy gold labeler, and train_reform adds the pairs and trains."""

from __future__ import annotations

import json

import pytest

from goodhartlab.data import CompletionPair, label_with_gold
from goodhartlab.models.tiny import build_reward_model
from goodhartlab.rewards import ProgrammaticReward
from goodhartlab.train import RMTrainConfig
from goodhartlab.train.rm_reform import adversarial_pairs, labeler_of, train_reform

GOLD = ProgrammaticReward(lambda p, c: float(c.split().count("great")), name="great", version="1")
TEXTS = {
    # proxy = word count (a length-biased proxy); gold = count of "great"
    "a:": [" x", " great great", " great", " y y y y y"],  # adversarial " y y y y y", normal
    # " great great" (rank 2), score 5 - 2 = 3
    "b:": [" great", " z z", " great z", " q"],  # adversarial " z z", normal " great z", score 0
}


def _sample(prompts, k, seed):
    return [TEXTS[p][:k] for p in prompts]


def _length_proxy(prompts, completions):
    import torch

    return torch.tensor([float(len(c.split())) for c in completions])


@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_adversarial_pairs_select_and_relabel(noise):
    pairs, report = adversarial_pairs(
        _length_proxy,
        _sample,
        ["a:", "b:"],
        GOLD,
        samples=4,
        num_pairs=1,
        rule="argmax",
        noise=noise,
        seed=0,
    )
    assert len(pairs) == 1
    (p,) = pairs
    assert p.prompt == "a:"
    assert {p.chosen, p.rejected} == {" y y y y y", " great great"}
    # The gold prefers the normal sample; noise 1 flips every label.
    if noise == 0.0:
        assert (p.chosen, p.rejected) == (" great great", " y y y y y")
        assert not p.meta["flipped"] and not p.meta["reform"]["adversarial_chosen"]
    else:
        assert (p.chosen, p.rejected) == (" y y y y y", " great great")
        assert p.meta["flipped"] and p.meta["reform"]["adversarial_chosen"]
    assert p.meta["noise"] == noise
    assert p.meta["reform"]["proxy_adversarial"] == 5.0
    assert p.meta["reform"]["proxy_normal"] == 2.0
    assert report["gold_prefers_adversarial"] == 0.0
    assert report["flipped"] == int(noise)


def _pairs(n, noise):
    raw = [
        CompletionPair(prompt=f"{'ab'[i % 2]}:", completion_a=" great x", completion_b=" x", id=i)
        for i in range(n)
    ]
    return label_with_gold(raw, GOLD, noise=noise, seed=0)


def test_labeler_of_reads_the_noise_and_refuses_a_mix():
    assert labeler_of(_pairs(4, 0.25)) == ("argmax", 0.25)
    with pytest.raises(ValueError, match="same meta"):
        labeler_of(_pairs(2, 0.0) + _pairs(2, 0.5))


def test_train_reform_adds_the_searched_pairs(tmp_path, tiny_tokenizer):
    train = _pairs(16, 0.0)
    config = RMTrainConfig(
        objective="reform",
        reform_pairs=1,
        reform_prompts=2,
        reform_samples=4,
        reform_rounds=2,
        batch_size=8,
        epochs=1,
        max_length=16,
        eval_fraction=0.0,
    )
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    result = train_reform(
        train,
        tiny_tokenizer,
        backbone,
        config,
        sample=_sample,
        gold=GOLD,
        eval_pairs=[],
        out_dir=tmp_path / "rm",
        progress=False,
    )
    saved = json.loads((tmp_path / "rm" / "goodhart_rm.json").read_text())
    assert saved["num_train_pairs"] == 16 + 2
    assert saved["pair_inputs"]["reform"]["added_pairs"] == 2
    info = result.pair_inputs["reform"]
    assert info["added_pairs"] == 2
    assert [r["round"] for r in info["rounds"]] == [1, 2]
    assert all(r["pairs"] == 1 and r["flipped"] == 0 for r in info["rounds"])


def test_train_reward_model_refuses_reform_without_its_search(tiny_tokenizer):
    # objective reform is BT on searched pairs; without the search it must not pass for one.
    from goodhartlab.train import train_reward_model

    config = RMTrainConfig(objective="reform", batch_size=8, epochs=1, eval_fraction=0.0)
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    with pytest.raises(ValueError, match="train_reform"):
        train_reward_model(_pairs(8, 0.0), tiny_tokenizer, backbone, config, progress=False)
