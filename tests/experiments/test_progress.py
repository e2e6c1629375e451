"""The progress display of ``goodhart run``: the time-left estimate and the plain/live output."""

from __future__ import annotations

import io

import pytest

from goodhartlab.experiments.progress import (
    StageState,
    StudyProgress,
    estimate_stages,
    format_duration,
    list_schedule_seconds,
    remaining_seconds,
)
from goodhartlab.experiments.study import load_config
from goodhartlab.registry import TESTBEDS


def _study(bon_status="pending", bon_elapsed=0.0, runs=("pending",) * 3, run_elapsed=(0.0,) * 3):
    stages = [
        StageState("testbed", 150, "done", 1.0, calibrates=False),
        StageState("proxies", 100, "skipped", 3.0, calibrates=False),
        StageState("bon", 100, bon_status, bon_elapsed),
    ]
    for name, status, elapsed in zip("abc", runs, run_elapsed, strict=True):
        stages.append(StageState(f"rl/{name}", 40, status, elapsed, group="rl", parallel=True))
    return stages


def test_nothing_measured_uses_the_estimates_and_lays_runs_on_the_workers():
    # bon runs 30 of its 100 s: 70 left. Three 40 s runs on two workers: 40 + 40 on one.
    # testbed and proxies do not calibrate (their cost depends on the cache): factor 1.
    stages = _study("running", 30.0)
    assert remaining_seconds(stages, workers=2) == pytest.approx(70 + 80)
    assert remaining_seconds(stages, workers=1) == pytest.approx(70 + 120)
    assert remaining_seconds(stages, workers=3) == pytest.approx(70 + 40)
    assert remaining_seconds(stages, workers=8) == pytest.approx(70 + 40)


def test_a_finished_stage_rescales_the_others():
    # bon took 200 s for an estimate of 100: this machine is 2x slower, each run ~80 s.
    # rl/a has run 20 s (60 left); rl/b and rl/c wait: workers free at 60 and 0, b goes to
    # the idle one (0 -> 80), c to the first free (60 -> 140).
    stages = _study("done", 200.0, ("running", "pending", "pending"), (20.0, 0, 0))
    assert remaining_seconds(stages, workers=2) == pytest.approx(140)
    assert remaining_seconds(stages, workers=1) == pytest.approx(60 + 80 + 80)


def test_a_finished_run_calibrates_its_group_before_the_global_factor():
    # rl/a took 20 s for 40 estimated (factor 0.5 for RL), though bon's factor is 2:
    # rl/b and rl/c are expected to take 20 s each.
    stages = _study("done", 200.0, ("done", "pending", "pending"), (20.0, 0, 0))
    assert remaining_seconds(stages, workers=1) == pytest.approx(40)
    assert remaining_seconds(stages, workers=2) == pytest.approx(20)


def test_overrunning_stages_count_zero_and_a_finished_study_has_none_left():
    stages = _study("running", 500.0)
    assert remaining_seconds(stages, workers=3) == pytest.approx(40)
    done = _study("done", 90.0, ("done",) * 3, (30.0,) * 3)
    assert remaining_seconds(done, workers=2) == 0.0
    with pytest.raises(ValueError, match="workers"):
        remaining_seconds(done, workers=0)


#: The study of BENCHMARKS.md's "default goodhart run" (run B), spelled out so that a change
#: of the packaged defaults does not change what this test compares with.
BENCHMARKED = [
    "proxies.pairs=6000",
    "proxies.seeds=[0, 1, 2, 3, 4]",
    "proxies.pretrain_seeds=false",
    "proxies.epochs=2",
    "bon.prompts=200",
    "bon.pool_size=512",
    "rl.steps=60",
    "rl.eval_every=10",
    "rl.prompts_per_step=8",
    "rl.group_size=8",
    "rl.eval_prompts=100",
]


def test_estimates_of_the_benchmarked_study_match_the_benchmark():
    # BENCHMARKS.md, the default run: proxies 79 s, best-of-n 163 s, six RL runs 112 s.
    config = load_config(None, BENCHMARKED)
    est = estimate_stages(config)
    runs = [f"rl/{m.name}" for m in config.rl.methods]
    assert list(est) == ["testbed", "proxies", "bon", *runs]
    assert est["proxies"] == pytest.approx(79, rel=0.1)
    assert est["bon"] == pytest.approx(163, rel=0.1)
    assert all(est[r] == pytest.approx(112 / 6, rel=0.1) for r in runs)
    assert estimate_stages(config, testbed_cached=True)["testbed"] < est["testbed"] / 10
    # Pretrain-seed members: one more small backbone per member beyond the first.
    pseed = estimate_stages(load_config(None, [*BENCHMARKED, "proxies.pretrain_seeds=true"]))
    assert pseed["proxies"] - est["proxies"] == pytest.approx(4 * 28.0)
    daa = estimate_stages(load_config(None, ["daa.enabled=true", "rl.enabled=false"]))
    assert "daa/dpo" in daa and not any(k.startswith("rl/") for k in daa)


def test_list_schedule_lays_tasks_on_free_workers_after_what_they_need():
    # 5, 3, 3 s on two workers: 5 | 3 + 3 -> 6 s; on one: 11 s; on three: 5 s.
    assert list_schedule_seconds([5, 3, 3], 2) == 6
    assert list_schedule_seconds([5, 3, 3], 1) == 11
    assert list_schedule_seconds([5, 3, 3], 3) == 5
    # Task 2 needs task 0: worker B does task 1 (0-3) and waits for task 0 until 5, then
    # task 2 runs 5-8; task 3 (no needs) goes to worker A at 5 as well -> 8 s, not 7.
    assert list_schedule_seconds([5, 3, 3, 2], 2, needs=[(), (), (0,), ()]) == 8
    assert list_schedule_seconds([], 2) == 0.0
    with pytest.raises(ValueError, match="workers"):
        list_schedule_seconds([1.0], 0)


def test_estimates_lay_the_stages_pieces_on_the_workers():
    # The default study (pretrain-seed members), toy_text's calibration, from an empty cache.
    config = load_config(None, [])
    c = TESTBEDS["toy_text"].seconds_per
    one, two = estimate_stages(config, workers=1), estimate_stages(config, workers=2)
    # testbed, one worker: tokenizer, policy, backbone one after the other; two: tokenizer,
    # then the policy beside the testbed's own backbone and the seed-1 backbone (2 x 28 s
    # fit in the policy's 80 s).
    assert one["testbed"] == pytest.approx(c["tokenizer"] + c["policy"] + c["backbone_small"])
    assert two["testbed"] == pytest.approx(c["tokenizer"] + c["policy"])
    # proxies, two workers: the pairs (15 s) and backbones 2, 3, 4 (28 s each), and the five
    # members (~12.8 s each), each once its pairs and backbone are there.
    pairs, member = 6000 * c["proxy_pair"], 6000 * 2 * c["proxy_pair_epoch"]
    bb = c["backbone_small"]
    assert one["proxies"] == pytest.approx(pairs + 4 * bb + 5 * member)
    # A: pairs 0-15, backbone 3 15-43, member 0 43-55.8, member 1, member 3 -81.5;
    # B: backbone 2 0-28, backbone 4 28-56, member 2 56-68.8, member 4 -81.7.
    assert two["proxies"] == pytest.approx(2 * bb + 2 * member)
    # bon: the pool in 8 equal shares, halved; then 6 scorers, each in a block per worker.
    rows = 200 * 1024
    assert one["bon"] == pytest.approx(rows * (c["bon_completion"] + 6 * c["bon_score"]))
    assert two["bon"] == pytest.approx(rows * c["bon_completion"] / 2 + 3 * rows * c["bon_score"])
    # The RL runs are stages of their own, laid on the workers by remaining_seconds.
    assert all(one[k] == two[k] for k in one if k.startswith("rl/"))
    # A testbed calibrated for its whole build only keeps that figure.
    whole = {k: v for k, v in c.items() if k not in ("policy", "tokenizer")}
    assert estimate_stages(config, seconds_per=whole | {"testbed_build": 99.0}, workers=2)[
        "testbed"
    ] == pytest.approx(99.0)


def test_a_running_stage_shows_what_it_has_done():
    out = io.StringIO()
    stages = [StageState("proxies", 100)]
    p = StudyProgress(stages, stream=out, live=True, interval=3600).open()
    p.start("proxies")
    p.update("proxies", "pairs 2,048/6,000 · members 0/5")
    p._redraw()
    assert "running  0 s  pairs 2,048/6,000 · members 0/5" in out.getvalue().splitlines()[-2]
    p.done("proxies", 3.0)
    assert "members" not in out.getvalue().splitlines()[-2]  # a finished stage: its time
    p.close()
    # Plain output: a line when a stage starts and ends, and at most one progress line per
    # detail_every seconds between.
    out = io.StringIO()
    p = StudyProgress([StageState("bon", 100)], stream=out, detail_every=3600).open()
    p.start("bon")
    p.update("bon", "pool chunks 1/200")
    p.detail_every = 0.0
    p.update("bon", "pool chunks 2/200")
    p.update("bon", "pool chunks 3/200")
    lines = out.getvalue().splitlines()[1:]
    assert [line.split(";")[0] for line in lines] == [
        "[bon] running",
        "[bon] pool chunks 2/200",
        "[bon] pool chunks 3/200",
    ]
    p.close()


def test_format_duration():
    assert [format_duration(s) for s in (0, 42.4, 60, 185, 3723)] == [
        "0 s",
        "42 s",
        "1:00",
        "3:05",
        "1:02:03",
    ]


def test_plain_output_is_a_line_per_stage_then_a_line_per_change():
    out = io.StringIO()  # not a terminal: plain log lines
    stages = [StageState("bon", 100), StageState("rl/a", 40, group="rl", parallel=True)]
    with StudyProgress(stages, stream=out) as p:
        plan = out.getvalue().splitlines()
        assert len(plan) == 2 and plan[0].startswith("bon") and "pending" in plan[0]
        assert "≈ 1:40" in plan[0]
        p.start("bon")
        p.done("bon", 50.0)
        p.skip("rl/a", 7.0)
    lines = out.getvalue().splitlines()[2:]
    assert lines[0].startswith("[bon] running;") and "about 2:20 left" in lines[0]
    # bon took half its estimate, so rl/a would take 20 s: the footer says so.
    assert lines[1].startswith("[bon] done in 50 s;") and "about 20 s left" in lines[1]
    assert lines[2].startswith("[rl/a] already done (7 s), skipped;") and "2/2 stages" in lines[2]
    assert "\x1b" not in out.getvalue()
    assert [s.status for s in p.stages.values()] == ["done", "skipped"]


def test_live_output_redraws_the_block_in_place():
    out = io.StringIO()
    stages = [StageState("bon", 100), StageState("rl/a", 40)]
    p = StudyProgress(stages, stream=out, live=True, interval=3600).open()
    first = out.getvalue()
    assert first.count("\n") == 3 and not first.startswith("\x1b[3F")  # 2 stages + footer
    p.start("bon")
    second = out.getvalue()[len(first) :]
    assert second.startswith("\x1b[3F") and "bon" in second and "running" in second
    p.close()


def test_disabled_progress_prints_nothing():
    out = io.StringIO()
    with StudyProgress([StageState("bon", 1)], stream=out, enabled=False) as p:
        p.start("bon")
        p.done("bon")
    assert out.getvalue() == "" and p.stages["bon"].status == "done"


def test_each_variant_model_adds_a_member_to_the_proxies_and_a_scorer_to_best_of_n():
    c = TESTBEDS["toy_text"].seconds_per
    base = load_config(None, [])
    two = load_config(
        None, ["proxies.variants={o: {rm: {objective: ordinal, epochs: 1}, seeds: [0, 1]}}"]
    )
    a, b = estimate_stages(base, workers=1), estimate_stages(two, workers=1)
    assert b["proxies"] - a["proxies"] == pytest.approx(2 * 6000 * 1 * c["proxy_pair_epoch"])
    assert b["bon"] - a["bon"] == pytest.approx(2 * 200 * 1024 * c["bon_score"])
