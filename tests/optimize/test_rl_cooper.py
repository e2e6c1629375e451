"""Cooper in the RL loop (Hong et al. 2025): the reward model's copy trains, the proxy on disk
does not change, the gold is never read by the method, and a resumed run equals an
uninterrupted one."""

from __future__ import annotations

import copy
import hashlib
import inspect

import pytest
import torch
from test_rl_mitigations import EVAL_PROMPTS, PROMPTS, TINY, WORDS

from goodhartlab.models.tiny import build_causal_lm, build_reward_model
from goodhartlab.optimize.rl import RLConfig, run_rl
from goodhartlab.optimize.rundir import read_jsonl
from goodhartlab.rewards import RewardModel

# The tiny prompts are not toy_text's: the rule passes everything, so every prompt has a
# reference (the best of K) and a negative (the policy's top-scored sample).
COOPER = {"check": "none", "reference_samples": 2, "lr": 1e-2, "updates": 2}


class WatchedGold:
    """The gold, recording any call made from Cooper's code (rewards.cooper, core.cooper)."""

    name, version = "watched_words", "1"

    def __init__(self):
        self.calls_from_cooper = 0
        self.calls = 0

    def score(self, prompts, completions):
        self.calls += 1
        files = [f.filename for f in inspect.stack()]
        if any(f.endswith(("rewards/cooper.py", "core/cooper.py")) for f in files):
            self.calls_from_cooper += 1
        return WORDS.score(prompts, completions)

    __call__ = score


def _proxy_dir(tmp_path, tokenizer):
    d = tmp_path / "proxy"
    build_reward_model("small", tokenizer, seed=2).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def _digest(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def _run(tmp_path, tokenizer, name, proxy, steps, resume=False, gold=None, **overrides):
    return run_rl(
        tmp_path / name,
        policy=build_causal_lm("small", tokenizer, seed=0),
        tokenizer=tokenizer,
        reward=proxy,
        gold=gold or WatchedGold(),
        train_prompts=PROMPTS,
        eval_prompts=EVAL_PROMPTS,
        config=RLConfig(**{**TINY, "steps": steps, "cooper": COOPER, **overrides}),
        resume=resume,
    )


def test_cooper_trains_a_copy_of_the_reward_model_and_never_the_proxy_or_its_files(
    tmp_path, tiny_tokenizer
):
    d = _proxy_dir(tmp_path, tiny_tokenizer)
    on_disk = _digest(d)
    proxy = RewardModel.from_pretrained(d)
    before = {k: v.clone() for k, v in proxy.model.state_dict().items()}
    gold = WatchedGold()
    _run(tmp_path, tiny_tokenizer, "cooper", proxy, 2, gold=gold)
    train = read_jsonl(tmp_path / "cooper" / "train.jsonl")
    assert all(r["cooper_pairs"] == 4 for r in train)  # one pair per prompt (B = 4)
    # Step 1 rewards with the copy before any update (= the frozen proxy); by step 2 the
    # copy has moved and scores the batch differently from the frozen proxy.
    assert train[0]["r_proxy"] == pytest.approx(train[0]["r_proxy_frozen"], abs=1e-6)
    assert train[1]["r_proxy"] != pytest.approx(train[1]["r_proxy_frozen"], abs=1e-4)
    # The proxy passed in and its directory are unchanged.
    assert all(torch.equal(before[k], v) for k, v in proxy.model.state_dict().items())
    assert _digest(d) == on_disk
    # The gold was read by the evaluations only, never by Cooper's code.
    assert gold.calls > 0 and gold.calls_from_cooper == 0


def test_cooper_weights_change_against_the_loaded_copy(tmp_path, tiny_tokenizer):
    from goodhartlab.optimize.rl import _build_run, rl_step

    proxy = RewardModel.from_pretrained(_proxy_dir(tmp_path, tiny_tokenizer))
    policy = build_causal_lm("small", tiny_tokenizer, seed=0)

    cfg = RLConfig(**{**TINY, "steps": 1, "cooper": COOPER})
    run = _build_run(
        cfg, policy, copy.deepcopy(policy), tiny_tokenizer, proxy, PROMPTS, torch.device("cpu")
    )
    assert run.cooper.model is not proxy and run.pipeline.source is run.cooper.model
    start = {k: v.clone() for k, v in run.cooper.model.model.state_dict().items()}
    rl_step(run, 1)
    after = run.cooper.model.model.state_dict()
    assert any(not torch.equal(start[k], after[k]) for k in start)
    assert all(torch.equal(start[k], v) for k, v in proxy.model.state_dict().items())


def test_a_resumed_cooper_run_equals_an_uninterrupted_one(tmp_path, tiny_tokenizer):
    d = _proxy_dir(tmp_path, tiny_tokenizer)
    settings = dict(checkpoint_every=3)
    straight = _run(
        tmp_path, tiny_tokenizer, "straight", RewardModel.from_pretrained(d), 6, **settings
    )
    _run(tmp_path, tiny_tokenizer, "resumed", RewardModel.from_pretrained(d), 3, **settings)
    resumed = _run(
        tmp_path, tiny_tokenizer, "resumed", RewardModel.from_pretrained(d), 6, resume=True,
        **settings,
    )  # fmt: skip
    assert resumed.metrics == straight.metrics
    untimed = [
        [
            {k: v for k, v in r.items() if not k.endswith("_s")}
            for r in read_jsonl(tmp_path / n / "train.jsonl")
        ]
        for n in ("straight", "resumed")
    ]
    assert untimed[0] == untimed[1]


def test_the_run_saves_its_co_trained_reward_model_and_it_loads_as_a_proxy(
    tmp_path, tiny_tokenizer
):
    import json

    from goodhartlab.optimize.rl import COOPER_RM, _build_run, rl_step

    d = _proxy_dir(tmp_path, tiny_tokenizer)
    frozen = RewardModel.from_pretrained(d)
    _run(tmp_path, tiny_tokenizer, "cooper", frozen, 2)
    run_dir = tmp_path / "cooper"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary[COOPER_RM] == COOPER_RM
    saved = RewardModel.from_pretrained(run_dir / COOPER_RM)  # sealed: verified on load
    info = json.loads((run_dir / COOPER_RM / "goodhart_rm.json").read_text())
    assert info["objective"] == "cooper" and info["cooper"]["steps"] == 2
    # The same two steps again, in memory: the saved model is the copy at the run's end.
    policy = build_causal_lm("small", tiny_tokenizer, seed=0)
    cfg = RLConfig(**{**TINY, "steps": 2, "cooper": COOPER})
    run = _build_run(
        cfg, policy, copy.deepcopy(policy), tiny_tokenizer, RewardModel.from_pretrained(d),
        PROMPTS, torch.device("cpu"),
    )  # fmt: skip
    for step in (1, 2):
        rl_step(run, step)
    texts = ["a b c", "c c", "b a"]
    prompts = [EVAL_PROMPTS[0]] * len(texts)
    expected = run.cooper.model.score(prompts, texts)
    assert torch.allclose(saved.score(prompts, texts), expected, atol=1e-5)
    # ... and it is not the frozen proxy any more.
    assert not torch.allclose(saved.score(prompts, texts), frozen.score(prompts, texts), atol=1e-4)


def test_the_saved_co_trained_model_is_a_proxy_for_rl_and_the_monitor(tmp_path, tiny_tokenizer):
    import numpy as np

    from goodhartlab.monitor.history import EvalPoint
    from goodhartlab.monitor.live import MonitorConfig
    from goodhartlab.optimize.rl import COOPER_RM

    d = _proxy_dir(tmp_path, tiny_tokenizer)
    _run(tmp_path, tiny_tokenizer, "cooper", RewardModel.from_pretrained(d), 2)
    co_trained = RewardModel.from_pretrained(tmp_path / "cooper" / COOPER_RM)
    # Optimized against in a new run (no Cooper), the frozen proxy as the monitor's held-out.
    frozen = RewardModel.from_pretrained(d)
    run_rl(
        tmp_path / "next",
        policy=build_causal_lm("small", tiny_tokenizer, seed=0),
        tokenizer=tiny_tokenizer,
        reward=co_trained,
        gold=WORDS,
        train_prompts=PROMPTS,
        eval_prompts=EVAL_PROMPTS,
        config=RLConfig(
            **{**TINY, "steps": 2, "eval_every": 1, "monitor": MonitorConfig(alarm=None)}
        ),
        monitor_sources={"heldout": frozen},
    )
    points = [
        EvalPoint.from_record(r, f"line {i}")
        for i, r in enumerate(read_jsonl(tmp_path / "next" / "monitor.jsonl"))
    ]
    assert len(points) == 3 and all(np.isfinite(p.r_heldout).all() for p in points)
    assert all(p.latents is not None for p in points)  # read from the co-trained model
    # The optimized scores are the co-trained model's, the held-out ones the frozen proxy's.
    assert not np.allclose(points[0].r_heldout, points[0].r_proxy, atol=1e-4)


def test_cooper_refuses_a_reward_model_with_a_feature_layer(tmp_path, tiny_tokenizer):
    from goodhartlab.rewards.cooper import CooperConfig, CooperReward
    from goodhartlab.rewards.feature_head import FeatureHead

    proxy = RewardModel.from_pretrained(_proxy_dir(tmp_path, tiny_tokenizer))
    proxy.feature_head = FeatureHead("toy_text_domain", torch.zeros(16), torch.ones(16))
    with pytest.raises(ValueError, match="feature_head"):
        CooperReward(CooperConfig(check="none"), proxy, lambda p: ["a"])


def test_cooper_refuses_a_reward_that_is_not_a_reward_model(tmp_path, tiny_tokenizer):
    from test_rl_mitigations import E_COUNT

    with pytest.raises(ValueError, match="cooper"):
        _run(tmp_path, tiny_tokenizer, "bad", E_COUNT, 1)


def test_goodhart_rl_takes_cooper_as_a_yaml_mapping(tmp_path, tiny_tokenizer):
    from goodhartlab.cli import main

    policy_dir, gold_dir = tmp_path / "policy", tmp_path / "gold"
    build_causal_lm("small", tiny_tokenizer, seed=0).save_pretrained(policy_dir)
    build_reward_model("small", tiny_tokenizer, seed=1).save_pretrained(gold_dir)
    for x in (policy_dir, gold_dir):
        tiny_tokenizer.save_pretrained(x)
    proxy_dir = _proxy_dir(tmp_path, tiny_tokenizer)
    on_disk = _digest(proxy_dir)
    (tmp_path / "train.txt").write_text("\n".join(PROMPTS))
    (tmp_path / "eval.txt").write_text("\n".join(EVAL_PROMPTS))
    argv = (
        f"rl --policy {policy_dir} --prompts {tmp_path / 'train.txt'} --gold {gold_dir} "
        f"--eval-prompts-file {tmp_path / 'eval.txt'} --proxy {proxy_dir} --max-new-tokens 6 "
        "--prompts-per-step 2 --group-size 2 --eval-every 1 --eval-prompts 2 --steps 1 "
        f"--out {tmp_path / 'run'}"
    ).split()
    assert main([*argv, "--cooper", "{check: none, reference_samples: 2, lr: 0.01}"]) == 0
    train = read_jsonl(tmp_path / "run" / "train.jsonl")
    assert train[0]["cooper_pairs"] == 2
    assert _digest(proxy_dir) == on_disk
