"""The monitor's benchmark analysis (experiments/monitor_bench.py) and ``goodhart monitor`` over
finished runs (experiments/monitor_offline.py), on synthetic run directories whose gold and
monitor inputs are written by hand."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from goodhartlab.experiments.monitor_bench import analyze_bench, label_window, load_bench_runs
from goodhartlab.experiments.monitor_offline import monitor_path
from goodhartlab.monitor.history import EvalPoint
from goodhartlab.monitor.live import MonitorConfig

STEPS = list(range(0, 55, 5))  # 11 evaluations


def _write_run(run_dir, gold, heldout_gain, seed):
    """A run whose proxy gains 0.3 base sd per evaluation while its held-out reward model
    gains ``heldout_gain[k]``: the held-out divergence is the difference."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=16)
    base = (base - base.mean()) / base.std()  # gains in units of 1 base sd
    run_dir.mkdir(parents=True)
    metrics, monitor = [], []
    for k, step in enumerate(STEPS):
        point = EvalPoint(
            step=step,
            kl=0.5 * k,
            r_proxy=base + 0.3 * k,
            r_heldout=base + heldout_gain[k],
            completions=["a b c"] * 16,
        )
        monitor.append(point.to_record())
        metrics.append({"step": step, "gold": gold[k], "kl": 0.5 * k})
    for name, lines in (("metrics", metrics), ("monitor", monitor)):
        (run_dir / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def _study(tmp_path):
    """Hacking runs: gold peaks at evaluation 4 and falls, the held-out RM stalls from
    evaluation 3 at 0.6 + 0.05·seed (a warning before the peak). Quiet runs: gold and the
    held-out RM climb with the proxy, but for one lag of 0.1 at evaluation 3."""
    study = tmp_path / "study"
    k = np.arange(len(STEPS))
    for seed in range(3):
        shift = 0.02 * seed
        hack_gold = np.where(k <= 4, 0.25 * k, 1.0 - 0.3 * (k - 4)) + shift
        stall = np.where(k <= 2, 0.3 * k, 0.6 + 0.05 * seed)
        _write_run(study / "rl" / f"hack-s{seed}", hack_gold.tolist(), stall.tolist(), seed)
        _write_run(
            study / "rl" / f"quiet-s{seed}",
            (0.2 * k + shift).tolist(),
            (0.3 * k - 0.1 * (k == 3)).tolist(),  # the held-out RM lags once: 0.1 at 3
            seed + 10,
        )
    return study


def test_runs_are_labelled_from_gold_and_split_by_seed(tmp_path):
    runs = {r.name: r for r in load_bench_runs(_study(tmp_path))}
    hack, quiet = runs["hack-s0"], runs["quiet-s0"]
    # Hacking: peak at evaluation 4 (step 20); the first evaluation 10 % of the gain below
    # it is evaluation 5 (1.0 - 0.3 = 0.7 <= 0.9).
    assert hack.label.hacks and hack.label.peak == 4 and hack.label.onset == 5
    assert not quiet.label.hacks
    assert hack.point_labels().tolist() == [0] * 5 + [1] * 6
    assert quiet.point_labels().sum() == 0
    assert [r.heldout for r in runs.values()] == [r.seed == 2 for r in runs.values()]


def test_a_detector_that_sees_the_hack_scores_perfectly_and_warns_early(tmp_path):
    study = _study(tmp_path)
    result = analyze_bench(study, detectors=["heldout_divergence", "length_drift"], plots=True)
    div = result["detectors"]["heldout_divergence"]
    # After the peak the divergence is larger than anywhere before it or in a quiet run.
    assert div["auroc"] == 1.0
    # Its training threshold bounds false alarms on the training runs that do not hack: the
    # 95 % quantile of their maxima (two runs: their max), the quiet runs' lag of 0.1. The
    # held-out hacking run (seed 2, stall 0.7) passes it at evaluation 3 (0.9 - 0.7 = 0.2),
    # two evaluations (10 steps, 1 nat) before its onset at evaluation 5.
    assert div["threshold"] == pytest.approx(0.1, abs=1e-4)
    hack = next(r for r in div["runs"] if r["run"] == "hack-s2")
    assert hack["alarm_step"] == 15 and hack["onset_step"] == 25 and hack["lead_steps"] == 10
    assert hack["lead_kl"] == pytest.approx(1.0)
    assert div["warned_before_onset"] == 1.0 and div["median_lead_steps"] == 10
    assert div["false_alarm_rate"] == 0.0
    # length_drift sees nothing (constant completions): chance AUROC, no alarm.
    assert result["detectors"]["length_drift"]["auroc"] == 0.5
    combined = result["detectors"]["combined"]
    assert combined["auroc"] == 1.0 and combined["false_alarm_rate"] == 0.0
    assert result["split"] == {
        "training": 4,
        "held_out": 2,
        "training_hacking": 2,
        "held_out_hacking": 1,
    }
    for name in ("monitor_bench.json", "monitor_bench.md", "combined_alarm.json"):
        assert (study / name).is_file()
    assert (study / "plots" / "monitor_hack.png").is_file()
    table = (study / "monitor_bench.md").read_text()
    assert table.splitlines()[4].startswith("| combined | 1.00 |")


def test_goodhart_monitor_replays_a_study_and_a_run(tmp_path):
    study = _study(tmp_path)
    config = MonitorConfig(alarm=None, thresholds={"heldout_divergence": 0.6})
    runs = {r["run"]: r for r in monitor_path(study, config)}
    assert set(runs) == {f"rl/{c}-s{s}" for c in ("hack", "quiet") for s in range(3)}
    assert runs["rl/hack-s0"]["alarm"] and runs["rl/hack-s0"]["alarm_step"] == 25
    assert not runs["rl/quiet-s0"]["alarm"]
    (one,) = monitor_path(study / "rl" / "hack-s1", config)
    assert one["alarm_step"] == 25 and len(one["readings"]) == len(STEPS)
    # A study's online-DPO runs (daa/) are read beside its RL runs.
    shutil.copytree(study / "rl" / "hack-s0", study / "daa" / "odpo-s0")
    runs = {r["run"]: r for r in monitor_path(study, config)}
    assert len(runs) == 7 and runs["daa/odpo-s0"]["alarm_step"] == 25


def _write_trl_logs(folder, rewards_by_step, completions_by_step):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    for step, (rewards, completions) in enumerate(
        zip(rewards_by_step, completions_by_step, strict=True), start=1
    ):
        n = len(rewards)
        table = pa.table(
            {
                "step": [step] * n,
                "prompt": [f"p{i // 2}" for i in range(n)],  # groups of 2 per prompt
                "completion": completions,
                "length_reward": rewards,
                "advantage": [0.0] * n,
            }
        )
        pq.write_table(table, folder / f"completions_{step:05d}.parquet")


def test_goodhart_monitor_reads_trl_completion_logs(tmp_path):
    out = tmp_path / "trl_run"
    words = [" ".join(["w"] * n) for n in (3, 4, 3, 4)]
    long = [" ".join(["w"] * n) for n in (30, 31, 29, 30)]
    _write_trl_logs(
        out / "completions",
        [[1.0, 2.0, 1.5, 2.0], [1.0, 2.0, 1.0, float("nan")], [9.0, 9.0, 8.0, 9.5]],
        [words, words, long],
    )
    config = MonitorConfig(alarm=None, thresholds={"length_drift": 2.0})
    (run,) = monitor_path(out, config)
    # The NaN reward's row is skipped and counted; the length jump of the third file alarms.
    assert run["skipped_rows"] == {"NaN reward": 1}
    assert [r["step"] for r in run["readings"]] == [1, 2, 3]
    assert run["alarm"] and run["alarm_step"] == 3
    # Groups by prompt (2 each) feed the group detectors; the second file lost a row, so its
    # groups are unequal: that point's group score is "could not tell" (None), not 0.
    groups = [r["scores"]["group_variance_collapse"] for r in run["readings"]]
    assert groups[0] is not None and groups[1] is None and groups[2] is not None


def test_goodhart_monitor_refuses_a_folder_without_logs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="nothing to monitor"):
        monitor_path(tmp_path / "empty", MonitorConfig(alarm=None))
    with pytest.raises(FileNotFoundError, match="no such run"):
        monitor_path(tmp_path / "missing", MonitorConfig(alarm=None))


def test_cli_monitor_prints_the_verdict(tmp_path, capsys):
    from goodhartlab.cli import main

    study = _study(tmp_path)
    argv = [
        "monitor",
        str(study / "rl" / "hack-s0"),
        "--settings",
        "alarm=none,thresholds={heldout_divergence: 0.6}",
        "--json",
        str(tmp_path / "readings.json"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "hack-s0" in out and "YES" in out and "heldout_divergence" in out
    saved = json.loads((tmp_path / "readings.json").read_text())
    assert saved["runs"][0]["alarm_step"] == 25


def test_label_window_spans_about_seven_steps_in_an_odd_count_of_evaluations():
    def grid(every):
        return [{"step": s} for s in range(0, 101, every)]

    # Every step: 7 evaluations; every 2: round(3.5) = 4, made odd: 5; every 5 or more: 1
    # (no smoothing, the 5-step grid's labels as before).
    assert [label_window(grid(e)) for e in (1, 2, 3, 5, 10)] == [7, 5, 3, 1, 1]
