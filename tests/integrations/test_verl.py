"""verl: compute_score and the batch reward manager against verl's documented interface.

verl is not installed here (it needs Ray, vLLM / SGLang and GPU workers); these tests call
the adapters as verl's code calls them (read from its repository: ``NaiveRewardManager`` calls
``compute_score(data_source=, solution_str=, ground_truth=, extra_info=)`` per sample;
``load_reward_manager`` builds a manager as ``cls(tokenizer=, num_examine=, compute_score=,
reward_fn_key=, **reward_kwargs)`` and ``compute_reward`` calls ``manager(data,
return_dict=True)``) on a stand-in DataProto with the fields verl's BatchRewardManager reads.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from goodhartlab.integrations.feed import HACKING, NO_ALARM
from goodhartlab.integrations.verl import GoodhartRewardManager, make_compute_score
from goodhartlab.monitor.live import MonitorConfig
from goodhartlab.rewards import ProgrammaticReward

words = ProgrammaticReward(lambda p, c: float(len(c.split())), name="words", version="1")


def test_compute_score_returns_score_and_the_same_monitor_keys_every_call():
    config = MonitorConfig(detectors=["length_drift"], alarm=None, thresholds={"length_drift": 2})
    compute_score = make_compute_score(words, config, samples_per_point=2)
    results = [
        compute_score(data_source="d", solution_str=s, ground_truth=None,
                      extra_info={"prompt": "Q:"})
        for s in ["a b", "a b c d", "w " * 9, "w " * 9]
    ]  # fmt: skip
    assert [r["score"] for r in results] == [2.0, 4.0, 9.0, 9.0]
    assert len({frozenset(r) for r in results}) == 1
    assert math.isnan(results[0]["goodhart/length_drift"])  # no point closed yet
    assert results[1]["goodhart/length_drift"] == 0.0  # the reference (mean 3, sd 1)
    assert results[3]["goodhart/length_drift"] == 6.0 and results[3]["goodhart/alarm"] == 1.0
    # A response that is not text: scored as "", not monitored, counted.
    r = compute_score("d", None, None)
    assert r["score"] == 0.0
    assert dict(compute_score.scorer.feed.bad_rows) == {"not_text:completions": 1}


class DataProto:
    """The parts of verl's DataProto a reward manager reads."""

    def __init__(self, tokenizer, prompts, responses, uid, steps=None, P=8, T=12):
        pad = tokenizer.pad_token_id
        n = len(prompts)
        self.batch = {
            "prompts": torch.full((n, P), pad),
            "responses": torch.full((n, T), pad),
            "attention_mask": torch.zeros(n, P + T, dtype=torch.long),
        }
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
            pi = tokenizer(p, add_special_tokens=False).input_ids[-P:]
            ri = tokenizer(r, add_special_tokens=False).input_ids[:T]
            self.batch["prompts"][i, P - len(pi) :] = torch.tensor(pi)  # left-padded
            self.batch["responses"][i, : len(ri)] = torch.tensor(ri)
            self.batch["attention_mask"][i, P - len(pi) : P + len(ri)] = 1
        self.non_tensor_batch = {
            "data_source": np.array(["toy"] * n, dtype=object),
            "reward_model": np.array([{"ground_truth": "great"}] * n, dtype=object),
            "extra_info": np.array([{} for _ in range(n)], dtype=object),
            "uid": np.array(uid, dtype=object),
        }
        self.meta_info = {} if steps is None else {"global_steps": steps}

    def __len__(self):
        return len(self.batch["prompts"])


def rule_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    # verl's rule-based style: the ground truth's word counts, unbounded (a hackable rule).
    return {"score": float(solution_str.split().count(ground_truth)), "acc": 1.0}


def test_reward_manager_reads_each_batch_as_a_point(tiny_tokenizer):
    config = {"detectors": ["repetition_drift", "group_variance_collapse"], "alarm": None,
              "thresholds": {"repetition_drift": 0.3}}  # fmt: skip
    manager = GoodhartRewardManager(
        tokenizer=tiny_tokenizer, num_examine=0, compute_score=rule_score,
        reward_fn_key="data_source", goodhart_monitor=config,
    )  # fmt: skip
    prompts = ["review of a phone:"] * 2 + ["review of a book:"] * 2
    base = DataProto(
        tiny_tokenizer, prompts,
        [" the screen is great .", " it was nice .", " a great book .", " a fine book ."],
        uid=["a", "a", "b", "b"],
    )  # fmt: skip
    out = manager(base, return_dict=True)
    rt = out["reward_tensor"]
    assert rt.shape == base.batch["responses"].shape
    lengths = base.batch["attention_mask"][:, 8:].sum(-1)
    assert [rt[i, lengths[i] - 1].item() for i in range(4)] == [1.0, 0.0, 1.0, 0.0]
    assert rt.sum().item() == 2.0  # only at the last response token
    info = out["reward_extra_info"]
    assert info["score"] == [1.0, 0.0, 1.0, 0.0]
    assert info["goodhart/repetition_drift"] == [0.0] * 4
    assert info["goodhart/group_variance_collapse"] == [0.0] * 4
    point = manager.scorer.feed.monitor.points[0]
    np.testing.assert_array_equal(point.r_groups, [[1, 0], [1, 0]])  # verl's uid groups
    assert point.completion_ids is not None and point.completions[0] == " the screen is great ."
    assert manager.scorer.last.verdict == NO_ALARM
    hacked = DataProto(tiny_tokenizer, prompts, [" great great great great great"] * 4,
                       uid=["c", "c", "d", "d"])  # fmt: skip
    out = manager(hacked, return_dict=True)
    assert out["reward_extra_info"]["goodhart/alarm"] == [1.0] * 4
    # Every sample scores the same: the group spread collapsed entirely.
    assert out["reward_extra_info"]["goodhart/group_variance_collapse"] == [1.0] * 4
    assert manager.scorer.last.verdict == HACKING
    assert torch.is_tensor(manager(hacked))  # return_dict=False: the tensor only


def test_reward_manager_with_a_proxy_directory_and_verl_steps(
    tiny_tokenizer, tiny_reward_model, tmp_path
):
    from goodhartlab.rewards import RewardModel
    from goodhartlab.train.rm import save_reward_model

    rm_dir = save_reward_model(tiny_reward_model, tiny_tokenizer, tmp_path / "rm", {})
    manager = GoodhartRewardManager(
        tiny_tokenizer, 0, None, "data_source", goodhart_proxy=str(rm_dir),
        goodhart_monitor={"detectors": ["length_drift"], "alarm": None},
    )  # fmt: skip
    data = DataProto(tiny_tokenizer, ["review of a phone:"], [" nice."], uid=["a"], steps=3)
    out = manager(data, return_dict=True)
    expected = RewardModel.from_pretrained(rm_dir).score(["review of a phone:"], [" nice."])
    assert out["reward_extra_info"]["score"][0] == pytest.approx(expected.item(), abs=1e-6)
    assert manager.scorer.last.step == 3  # verl's global_steps
    # The latents come from the proxy's own forward pass (no engine gives them).
    point = manager.scorer.feed.monitor.points[0]
    assert point.latents.shape == (1, tiny_reward_model.config.hidden_size)
    with pytest.raises(ValueError, match="goodhart_proxy"):
        GoodhartRewardManager(tiny_tokenizer, 0, None)


INPUTS = ["entropy_collapse", "kl_acceleration", "proxy_gain_per_kl", "length_drift"]


def _with_log_probs(data, step: int, keys=("rollout_log_probs", "ref_log_prob")):
    """The per-token log-probs a verl batch may hold, (B, T) with padding after each response
    (filled with 0.5: a value the monitor would refuse, so reading past a response fails)."""
    n, t = data.batch["responses"].shape
    lengths = data.batch["attention_mask"][:, -t:].sum(-1)
    for key in keys:
        fill = -1.0 if key == "ref_log_prob" else -1.0 / (1 + step)
        value = torch.full((n, t), 0.5)
        for i, m in enumerate(lengths):
            value[i, : int(m)] = fill
        data.batch[key] = value
    return data


def _manager_run(tiny_tokenizer, keys, steps=6):
    manager = GoodhartRewardManager(
        tiny_tokenizer, 0, rule_score, "data_source",
        goodhart_monitor={"detectors": INPUTS, "alarm": None},
    )  # fmt: skip
    prompts = ["review of a phone:"] * 2
    for step in range(steps):
        responses = [" the screen is" + " great" * step, " it was" + " nice" * step]
        data = DataProto(tiny_tokenizer, prompts, responses, uid=["a", "a"], steps=step)
        manager(_with_log_probs(data, step, keys), return_dict=True)
    return manager


def test_reward_manager_reads_the_log_probs_the_batch_holds(tiny_tokenizer):
    manager = _manager_run(tiny_tokenizer, ("rollout_log_probs", "ref_log_prob"))
    points = manager.scorer.feed.monitor.points
    # Cut to each response's tokens, as its ids are.
    assert all(
        [a.size for a in p.logp]
        == [a.size for a in p.completion_ids]
        == [a.size for a in p.logp_ref]
        for p in points
    )
    last = manager.scorer.last.scores
    assert all(math.isfinite(last[n]) for n in INPUTS), last
    assert not manager.scorer.feed.bad_rows


def test_reward_manager_prefers_the_actors_log_probs_and_works_without_any(tiny_tokenizer):
    data = DataProto(tiny_tokenizer, ["review of a phone:"], [" nice ."], uid=["a"], steps=0)
    data = _with_log_probs(data, 1, ("rollout_log_probs",))
    data.batch["old_log_probs"] = data.batch["rollout_log_probs"] - 1.0
    manager = GoodhartRewardManager(
        tiny_tokenizer,
        0,
        rule_score,
        "data_source",
        goodhart_monitor={"detectors": INPUTS, "alarm": None},
    )
    manager(data)
    manager.scorer.feed.close()
    (logp,) = manager.scorer.feed.monitor.points[0].logp
    assert np.all(logp == -1.5)  # old_log_probs, not the rollout's -0.5
    # verl's default order: no reference log-probs at the reward; no log-probs at all.
    for keys in [("rollout_log_probs",), ()]:
        last = _manager_run(tiny_tokenizer, keys).scorer.last.scores
        assert math.isnan(last["kl_acceleration"]) and math.isfinite(last["length_drift"])
        assert math.isfinite(last["entropy_collapse"]) == bool(keys)
