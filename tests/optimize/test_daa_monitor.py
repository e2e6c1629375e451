"""The live monitor in direct alignment (optimize/daa.py with ``monitor``): the same logs as the
RL loop's (monitor.jsonl of EvalPoint records without gold, readings in metrics.jsonl, the
alarm record, stop_on_alarm), offline and online, and a resumed run equal to an uninterrupted
one."""

from __future__ import annotations

import json
import shutil

import pytest
from test_daa import TINY as DAA_TINY  # the tiny world of the DAA loop tests

from goodhartlab.models.tiny import build_causal_lm, build_reward_model
from goodhartlab.monitor.history import EvalPoint
from goodhartlab.monitor.live import Monitor, MonitorConfig, default_detectors
from goodhartlab.optimize.daa import DAAConfig, run_daa
from goodhartlab.optimize.rundir import read_jsonl
from goodhartlab.rewards import ProgrammaticReward, RewardModel

NOUNS = ("phone", "laptop", "camera", "book", "movie", "song")
PROMPTS = [f"review of a {n}:" for n in NOUNS]
EVAL_PROMPTS = ["review of a chair:", "review of a coffee:"]
# Gold: a count of "e" the tests can recompute, so that they can look for it in the logs.
GOLD = ProgrammaticReward(lambda p, c: c.count("e") + 0.125, name="gold_e", version="1")
WORDS = ProgrammaticReward(lambda p, c: float(len(c.split())), name="words", version="1")
TINY = {  # test_daa's tiny run, online
    **DAA_TINY,
    "online": True,
    "rounds": 2,
    "pairs_per_round": 8,
    "epochs": 1,
    "eval_points_in_first_epoch": (0.5,),
}
QUIET = MonitorConfig(alarm=None)  # every detector, no alarm rule
FLAT = [p for p in EVAL_PROMPTS for _ in range(2)]  # the evaluation rows: 2 samples a prompt


def _pairs():
    from goodhartlab.data.schema import PreferencePair

    return [PreferencePair(prompt=p, chosen="", rejected="") for p in PROMPTS]


def _run(tmp_path, tokenizer, name, monitor, resume=False, **overrides):
    proxy = RewardModel(build_reward_model("small", tokenizer, seed=3), tokenizer)
    return run_daa(
        tmp_path / name,
        policy=build_causal_lm("small", tokenizer, seed=0),
        tokenizer=tokenizer,
        pairs=_pairs(),
        gold=GOLD,
        eval_prompts=EVAL_PROMPTS,
        config=DAAConfig(**{**TINY, **overrides}, monitor=monitor),
        proxy=proxy,
        resume=resume,
        monitor_sources={"heldout": WORDS},
    )


def test_every_evaluation_logs_the_monitor_inputs_without_gold(tmp_path, tiny_tokenizer):
    result = _run(tmp_path, tiny_tokenizer, "run", QUIET)
    lines = result.metrics
    run_dir = tmp_path / "run"
    records = read_jsonl(run_dir / "monitor.jsonl")
    # One record per evaluation: step 0, half of round 1, the end of rounds 1 and 2.
    assert [r["step"] for r in records] == [m["step"] for m in lines] == [0, 1, 2, 4]
    base = read_jsonl(run_dir / "base_eval.jsonl")
    for line, record in zip(lines, records, strict=True):
        point = EvalPoint.from_record(record)
        # 2 prompts x 2 samples: tokens, log-probs, the proxy's latents, held-out scores
        # (words), groups by prompt, and the evaluation's KL.
        assert point.batch_size == 4 and point.latents.shape[0] == 4
        assert point.r_groups.shape == (2, 2)
        assert len(point.logp) == len(point.completion_ids) == 4
        want = WORDS.score(FLAT, list(point.completions)).tolist()
        assert point.r_heldout.tolist() == pytest.approx(want)
        assert point.kl == pytest.approx(line["kl"], abs=1e-5)
        # No gold: no key names it, and no logged score is the gold of these completions.
        assert not [k for k in record if "gold" in k]
        gold = GOLD.score(FLAT, list(point.completions)).tolist()
        for key in ("r_proxy", "r_heldout"):
            assert record[key] != pytest.approx(gold), key
        assert set(line["monitor"]["scores"]) == set(default_detectors())
        assert line["monitor"]["alarm"] is False
    assert records[0]["completions"] == [s["completion"] for s in base]
    # The logged readings are what a monitor fed the logged points computes (offline = live).
    offline = Monitor(QUIET).replay([EvalPoint.from_record(r) for r in records])
    for line, reading in zip(lines, offline, strict=True):
        assert line["monitor"] == reading.to_json()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["alarm_step"] is None and summary["stopped_at_step"] is None
    assert not (run_dir / "alarm.json").exists()


def test_stop_on_alarm_stops_the_run_and_keeps_the_policy_before_it(tmp_path, tiny_tokenizer):
    # A threshold every point after the base one passes: the alarm fires at step 1.
    config = MonitorConfig(alarm=None, thresholds={"length_drift": -1000.0}, stop_on_alarm=True)
    result = _run(tmp_path, tiny_tokenizer, "stopped", config)
    run_dir = tmp_path / "stopped"
    assert [m["step"] for m in result.metrics] == [0, 1]
    assert result.metrics[1]["monitor"]["alarm"] is True
    alarm = json.loads((run_dir / "alarm.json").read_text())
    assert alarm["step"] == 1 and alarm["reasons"] == ["length_drift"]
    assert alarm["kl"] == result.metrics[1]["kl"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["alarm_step"] == 1 and summary["stopped_at_step"] == 1
    assert json.loads((run_dir / "before_alarm" / "goodhart_step.json").read_text()) == {"step": 0}
    assert not (run_dir / "rounds" / "round_2.jsonl").exists()  # round 2 never sampled


def test_a_resumed_monitored_run_equals_an_uninterrupted_one(tmp_path, tiny_tokenizer):
    _run(tmp_path, tiny_tokenizer, "full", QUIET)
    part = _run(tmp_path, tiny_tokenizer, "part", QUIET)
    # Killed after round 1's last checkpoint (step 2), its later monitor line torn.
    for ckpt in sorted((part.out_dir / "checkpoints").glob("step_*")):
        if ckpt.name != "step_000002":
            shutil.rmtree(ckpt)
    (part.out_dir / "rounds" / "round_2.jsonl").unlink()
    log = part.out_dir / "monitor.jsonl"
    log.write_text(log.read_text()[:-40])
    _run(tmp_path, tiny_tokenizer, "part", QUIET, resume=True)
    for name in ("metrics.jsonl", "monitor.jsonl"):
        assert (tmp_path / "part" / name).read_text() == (tmp_path / "full" / name).read_text()


def test_monitor_config_errors_name_the_field(tmp_path, tiny_tokenizer):
    with pytest.raises(ValueError, match=r"monitor\.patiense"):
        DAAConfig(monitor={"patiense": 2})
    with pytest.raises(ValueError, match="proxy: the monitor reads the proxy"):
        run_daa(
            tmp_path / "x",
            policy=build_causal_lm("small", tiny_tokenizer, seed=0),
            tokenizer=tiny_tokenizer,
            pairs=_pairs(),
            gold=GOLD,
            eval_prompts=EVAL_PROMPTS,
            config=DAAConfig(monitor=QUIET),
        )


def test_goodhart_dpo_monitor_reads_the_held_out_and_ensemble_flags(
    tmp_path, tiny_tokenizer, monkeypatch
):
    from types import SimpleNamespace

    from goodhartlab import cli

    dirs = {}
    for name, seed in (("policy", 0), ("proxy", 3), ("heldout", 4), ("m1", 5), ("m2", 6)):
        dirs[name] = tmp_path / name
        build = build_causal_lm if name == "policy" else build_reward_model
        build("small", tiny_tokenizer, seed=seed).save_pretrained(dirs[name])
        tiny_tokenizer.save_pretrained(dirs[name])
    fake = SimpleNamespace(
        policy_path=dirs["policy"], tokenizer=tiny_tokenizer, gold=GOLD,
        eval_prompts=EVAL_PROMPTS, train_prompts=PROMPTS, max_new_tokens=6,
    )  # fmt: skip
    monkeypatch.setattr(cli, "_testbed", lambda args: fake)
    argv = (
        f"dpo --online --rounds 1 --pairs-per-round 8 --epochs 1 --batch-size 4 "
        f"--eval-prompts 2 --eval-points 0.5 --proxy {dirs['proxy']} "
        f"--monitor-heldout {dirs['heldout']} --monitor-ensemble {dirs['m1']} {dirs['m2']}"
    ).split()
    # Without --monitor the flags would be ignored: refused, nothing written.
    assert cli.main([*argv, "--out", str(tmp_path / "refused")]) == 2
    assert not (tmp_path / "refused").exists()
    assert cli.main([*argv, "--monitor", "alarm=none", "--out", str(tmp_path / "run")]) == 0
    records = read_jsonl(tmp_path / "run" / "monitor.jsonl")
    points = [EvalPoint.from_record(r, f"line {i}") for i, r in enumerate(records)]
    assert len(points) >= 2
    heldout = RewardModel.from_pretrained(dirs["heldout"])
    m1 = RewardModel.from_pretrained(dirs["m1"])
    for p in points:
        assert p.r_members is not None and p.r_members.shape[0] == 2
        # The held-out scores are the --monitor-heldout model's, recomputed here.
        rows = [EVAL_PROMPTS[i // 2] for i in range(len(p.completions))]
        assert p.r_heldout == pytest.approx(heldout.score(rows, p.completions).numpy(), abs=1e-5)
        assert p.r_members[0] == pytest.approx(m1.score(rows, p.completions).numpy(), abs=1e-5)


def test_dpo_refuses_a_pairwise_preference_model_as_its_proxy(tmp_path, tiny_tokenizer):
    from goodhartlab.rewards.pairwise import PairwisePreferenceModel

    proxy = PairwisePreferenceModel.__new__(PairwisePreferenceModel)  # no scores needed
    with pytest.raises(ValueError, match="pairwise preference model"):
        run_daa(
            tmp_path / "run",
            policy=build_causal_lm("small", tiny_tokenizer, seed=0),
            tokenizer=tiny_tokenizer,
            pairs=_pairs(),
            gold=GOLD,
            eval_prompts=EVAL_PROMPTS,
            config=DAAConfig(**TINY),
            proxy=proxy,
        )
    assert not (tmp_path / "run").exists()
