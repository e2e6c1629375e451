"""The live monitor in the RL loop (optimize/monitoring.py): logged readings, the alarm record,
--stop-on-alarm with the last policy before the alarm, and resumption."""

from __future__ import annotations

import json
import math

import pytest

from goodhartlab.models.tiny import build_causal_lm, build_reward_model
from goodhartlab.monitor.history import EvalPoint
from goodhartlab.monitor.live import Monitor, MonitorConfig, default_detectors
from goodhartlab.optimize.rl import RLConfig, run_rl
from goodhartlab.optimize.rundir import read_jsonl
from goodhartlab.rewards import ProgrammaticReward, RewardModel

PROMPTS = [f"review of a {n}:" for n in ("phone", "laptop", "camera", "book", "movie", "song")]
EVAL_PROMPTS = ["review of a chair:", "review of a coffee:"]
E_COUNT = ProgrammaticReward(lambda p, c: c.count("e") / 4, name="e_count", version="1")
WORDS = ProgrammaticReward(lambda p, c: float(len(c.split())), name="words", version="1")
TINY = dict(
    prompts_per_step=4,
    group_size=8,
    max_new_tokens=8,
    lr=1e-2,
    eval_every=2,
    eval_prompts=2,
    eval_samples=2,
    checkpoint_every=3,
    steps=6,
)
QUIET = MonitorConfig(alarm=None)  # every detector, no alarm rule


def _run(tmp_path, tokenizer, name, monitor, reward=E_COUNT, resume=False, sources=None):
    return run_rl(
        tmp_path / name,
        policy=build_causal_lm("small", tokenizer, seed=0),
        tokenizer=tokenizer,
        reward=reward,
        gold=WORDS,
        train_prompts=PROMPTS,
        eval_prompts=EVAL_PROMPTS,
        config=RLConfig(**TINY, monitor=monitor),
        resume=resume,
        monitor_sources=sources,
    )


def test_every_evaluation_logs_the_monitor_inputs_and_readings(tmp_path, tiny_tokenizer):
    rm = RewardModel(build_reward_model("small", tiny_tokenizer, seed=3), tiny_tokenizer)
    result = _run(tmp_path, tiny_tokenizer, "run", QUIET, reward=rm, sources={"heldout": E_COUNT})
    lines = result.metrics
    records = read_jsonl(tmp_path / "run" / "monitor.jsonl")
    assert [r["step"] for r in records] == [r["step"] for r in lines] == [0, 2, 4, 6]
    for line, record in zip(lines, records, strict=True):
        point = EvalPoint.from_record(record)
        # 2 prompts x 2 samples, with tokens, log-probs, latents of the optimized RM, held-out
        # scores, groups by prompt, and the evaluation's KL; no gold anywhere.
        assert point.batch_size == 4 and point.latents.shape[0] == 4
        assert point.r_groups.shape == (2, 2) and point.r_heldout is not None
        assert point.kl == pytest.approx(line["kl"], abs=1e-5)
        assert "gold" not in record
        assert set(line["monitor"]["scores"]) == set(default_detectors())
        assert line["monitor"]["alarm"] is False
    # The logged readings are what a monitor fed the logged points computes (offline = live).
    offline = Monitor(QUIET).replay([EvalPoint.from_record(r) for r in records])
    for line, reading in zip(lines, offline, strict=True):
        assert line["monitor"] == reading.to_json()
    assert not (tmp_path / "run" / "alarm.json").exists()


def _rising_detector(lines):
    """A detector whose score at the last evaluation is above all earlier ones, and a
    threshold between (the run is deterministic, so a second run alarms exactly there)."""
    for name in default_detectors():
        xs = [line["monitor"]["scores"][name] for line in lines]
        if all(x is not None for x in xs) and xs[2] > max(xs[:2]):
            return name, (xs[2] + max(xs[:2])) / 2
    raise AssertionError(f"no detector rises by step 4: {[line['monitor'] for line in lines]}")


def test_stop_on_alarm_stops_and_keeps_the_policy_before_it(tmp_path, tiny_tokenizer):
    quiet = _run(tmp_path, tiny_tokenizer, "quiet", QUIET)
    name, threshold = _rising_detector(quiet.metrics)
    config = MonitorConfig(alarm=None, thresholds={name: threshold}, stop_on_alarm=True)
    result = _run(tmp_path, tiny_tokenizer, "stopped", config)
    run_dir = tmp_path / "stopped"
    # Alarm at the step-4 evaluation: the run stops there, a checkpoint is written.
    assert [r["step"] for r in result.metrics] == [0, 2, 4]
    alarm = json.loads((run_dir / "alarm.json").read_text())
    assert alarm["step"] == 4 and alarm["reasons"] == [name]
    assert alarm["scores"][name] > threshold
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["alarm_step"] == 4 and summary["stopped_at_step"] == 4
    # before_alarm/ holds the step-2 policy (the last quiet evaluation), loadable.
    assert json.loads((run_dir / "before_alarm" / "goodhart_step.json").read_text()) == {"step": 2}
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(run_dir / "before_alarm")
    assert (run_dir / "checkpoints").is_dir()


def test_patience_needs_consecutive_alarming_points(tmp_path, tiny_tokenizer):
    quiet = _run(tmp_path, tiny_tokenizer, "quiet", QUIET)
    name, threshold = _rising_detector(quiet.metrics)
    points = [EvalPoint.from_record(r) for r in read_jsonl(tmp_path / "quiet" / "monitor.jsonl")]
    one = Monitor(MonitorConfig(alarm=None, thresholds={name: threshold}))
    two = Monitor(MonitorConfig(alarm=None, thresholds={name: threshold}, patience=2))
    first = [r.alarm_step for r in one.replay(points)]
    assert first[2] == 4
    # With patience 2 the alarm needs step 6 to alarm too; raised, it names step 4.
    readings = two.replay(points)
    assert readings[2].alarm is False
    assert readings[3].alarm == readings[3].alarming
    if readings[3].alarm:
        assert readings[3].alarm_step == 4


class KilledAt:
    name, version = "e_count", "1"

    def __init__(self, calls: int):
        self.left = calls

    def score(self, prompts, completions):
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt("killed")
        return E_COUNT.score(prompts, completions)


def test_a_resumed_monitored_run_equals_an_uninterrupted_one(tmp_path, tiny_tokenizer):
    _run(tmp_path, tiny_tokenizer, "straight", QUIET, reward=KilledAt(10**6))
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, tiny_tokenizer, "killed", QUIET, reward=KilledAt(7))
    _run(tmp_path, tiny_tokenizer, "killed", QUIET, reward=KilledAt(10**6), resume=True)
    for log in ("metrics.jsonl", "monitor.jsonl"):
        assert (tmp_path / "killed" / log).read_text() == (tmp_path / "straight" / log).read_text()


def test_a_bad_monitor_record_names_the_file_and_line(tmp_path, tiny_tokenizer):
    _run(tmp_path, tiny_tokenizer, "run", QUIET)
    path = tmp_path / "run" / "monitor.jsonl"
    records = read_jsonl(path)
    records[1]["r_proxy"][0] = math.nan
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    from goodhartlab.optimize.monitoring import RunMonitor
    from goodhartlab.optimize.rundir import RunDir

    class Dir:  # what RunMonitor reads of a RunDir
        path = tmp_path / "run"
        log = RunDir.log
        read = RunDir.read

    with pytest.raises(ValueError, match=r"monitor\.jsonl line 2.*r_proxy.*NaN"):
        RunMonitor(Dir(), QUIET, start=6)


def test_cli_rl_monitor_flags(tmp_path, tiny_tokenizer):
    from goodhartlab.cli import main

    policy_dir, gold_dir, proxy_dir = tmp_path / "policy", tmp_path / "gold", tmp_path / "proxy"
    build_causal_lm("small", tiny_tokenizer, seed=0).save_pretrained(policy_dir)
    build_reward_model("small", tiny_tokenizer, seed=1).save_pretrained(gold_dir)
    build_reward_model("small", tiny_tokenizer, seed=2).save_pretrained(proxy_dir)
    for d in (policy_dir, gold_dir, proxy_dir):
        tiny_tokenizer.save_pretrained(d)
    (tmp_path / "train.txt").write_text("\n".join(PROMPTS))
    (tmp_path / "eval.txt").write_text("\n".join(EVAL_PROMPTS))
    argv = (
        f"rl --policy {policy_dir} --prompts {tmp_path / 'train.txt'} --gold {gold_dir} "
        f"--eval-prompts-file {tmp_path / 'eval.txt'} --proxy {proxy_dir} "
        f"--monitor-heldout {gold_dir} --max-new-tokens 6 --prompts-per-step 2 --group-size 2 "
        f"--eval-every 1 --eval-prompts 2 --steps 2 --out {tmp_path / 'run'}"
    ).split()
    # A threshold every point passes after the base one: the alarm fires at step 1 and stops.
    argv += ["--monitor", "alarm=none,thresholds={length_drift: -1000}", "--stop-on-alarm"]
    assert main(argv) == 0
    lines = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in lines] == [0, 1]
    assert lines[1]["monitor"]["alarm"] and lines[1]["monitor"]["alarm_step"] == 1
    records = read_jsonl(tmp_path / "run" / "monitor.jsonl")
    assert all("r_heldout" in r for r in records)
    saved = json.loads((tmp_path / "run" / "alarm.json").read_text())
    assert saved["config"]["stop_on_alarm"] is True and saved["step"] == 1
