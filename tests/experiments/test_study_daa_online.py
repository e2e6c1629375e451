"""The study's DAA stage online (experiments/study.py): runs labelled by the study's proxies,
with their own seeds and the monitor; bad settings name the field. And the monitor's benchmark
reading DAA runs beside RL runs (experiments/monitor_bench.py), on hand-written run dirs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from goodhartlab.experiments.monitor_bench import load_bench_runs
from goodhartlab.experiments.study import load_config
from goodhartlab.monitor.history import EvalPoint

ONLINE = "{name: o-s1, online: true, rounds: 4, pairs_per_round: 64, seed: 1}"


def test_online_runs_take_the_proxy_pipeline_seed_and_monitor():
    c = load_config(
        None,
        [
            "daa.enabled=true",
            "daa.monitor={alarm: null}",
            f"daa.runs=[{ONLINE}, {{name: u, online: true, aggregator: uwo, "
            "aggregator_params: {lam: 0.2}, monitor: {alarm: null, patience: 2}}]",
        ],
    )
    study = dict(seed=0, device="cpu", max_new_tokens=8)
    single, uwo = (c.daa.run_config(r, **study) for r in c.daa.runs)
    assert single.online and single.rounds == 4 and single.pairs_per_round == 64
    assert single.seed == 1 and uwo.seed == 0
    assert single.monitor.alarm is None and single.monitor.patience == 1  # the stage's
    # A run's own monitor keeps its None values (alarm: null is not the packaged alarm).
    assert uwo.monitor.alarm is None and uwo.monitor.patience == 2
    assert uwo.reward.aggregator == "uwo" and uwo.reward.aggregator_params == {"lam": 0.2}
    assert c.daa.runs[0].aggregator is None  # the single proxy
    assert not load_config(None, []).daa.run_config(load_config().daa.runs[0]).online


@pytest.mark.parametrize(
    ("runs", "field"),
    [
        ("[{name: a, rounds: 3}]", r"runs\.0 \(a\)\.rounds: only an online run"),
        ("[{name: a, online: true, aggregator: nope}]", r"daa\.runs\.0\.aggregator"),
        ("[{name: a, aggregator_params: {lam: 1}}]", r"aggregator_params: the single proxy"),
        ("[{name: a, aggregator: uwo, aggregator_params: {zz: 1}}]", r"aggregator_params"),
        ("[{name: a, online: true, monitor: {patiense: 2}}]", r"daa\.runs\.0\.monitor\.patiense"),
        ("[{name: a, online: true, pairs_per_round: 0}]", r"runs\.0\.pairs_per_round"),
    ],
)
def test_bad_online_settings_name_the_field(runs, field):
    with pytest.raises(ValueError, match=field):
        load_config(None, ["daa.enabled=true", f"daa.runs={runs}"])


def _write_run(run_dir, gold, steps):
    run_dir.mkdir(parents=True)
    rng = np.random.default_rng(len(steps))
    monitor, metrics = [], []
    for k, step in enumerate(steps):
        point = EvalPoint(step=step, kl=0.1 * k, r_proxy=rng.normal(size=8) + k)
        monitor.append(point.to_record())
        metrics.append({"step": step, "gold": gold[k], "kl": 0.1 * k, "round": k})
    for name, lines in (("metrics", metrics), ("monitor", monitor)):
        (run_dir / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_bench_reads_daa_runs_beside_rl_runs(tmp_path):
    study = tmp_path / "study"
    _write_run(study / "rl" / "grpo-s0", [0.0, 1.0, 2.0], [0, 5, 10])
    # DAA steps every 8 (a coarse grid: the labels smooth nothing; 4 points: no noise floor).
    _write_run(study / "daa" / "odpo-b0.05-s1", [0.0, 1.0, 0.2, 0.1], [0, 8, 16, 24])
    (study / "daa" / "offline-dpo").mkdir()  # no monitor.jsonl: not a benchmark run
    runs = load_bench_runs(study)
    assert [r.name for r in runs] == ["grpo-s0", "odpo-b0.05-s1"]
    daa = runs[1]
    assert (daa.config, daa.seed) == ("odpo-b0.05", 1)
    assert daa.steps.tolist() == [0, 8, 16, 24]  # DAA steps
    assert daa.kl.tolist() == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert daa.label.hacks and daa.label.peak == 1 and not runs[0].label.hacks
    # A study with DAA runs alone is a benchmark too.
    alone = tmp_path / "alone"
    _write_run(alone / "daa" / "odpo-s0", [0.0, 1.0], [0, 4])
    assert [r.name for r in load_bench_runs(alone)] == ["odpo-s0"]
    # An RL and a DAA run of one name would be one run to the analysis: refused.
    _write_run(study / "daa" / "grpo-s0", [0.0, 1.0], [0, 4])
    with pytest.raises(ValueError, match=r"daa/grpo-s0: run name 'grpo-s0' is also"):
        load_bench_runs(study)
    with pytest.raises(ValueError, match=r"no RL or DAA run with a monitor\.jsonl"):
        load_bench_runs(tmp_path / "empty")
