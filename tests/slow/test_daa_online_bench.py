"""A tiny study whose DAA stage runs online DPO labelled by the study's proxies with the monitor
on, read by the monitor's benchmark (slow: builds a tiny toy_text testbed and its proxies)."""

from __future__ import annotations

import json

import pytest

from goodhartlab.experiments.monitor_bench import load_bench_runs
from goodhartlab.experiments.study import StudyConfig, run_study
from goodhartlab.monitor.history import EvalPoint
from goodhartlab.optimize.rundir import read_jsonl
from tiny_study import tiny_study_config

pytestmark = pytest.mark.slow

TINY = {
    **tiny_study_config(rl=None, daa=None, bon=False),
    "daa": {
        "enabled": True,
        "online": True,
        "rounds": 2,
        "pairs_per_round": 8,
        "batch_size": 4,
        "eval_points_in_first_epoch": [0.5],
        "eval_prompts": 4,
        "eval_samples": 2,
        "lr": 1e-3,
        "monitor": {"alarm": None},
        "runs": [
            {"name": "odpo-single-s1", "loss": "dpo", "beta": 0.1, "seed": 1},
            {"name": "odpo-mean-s0", "loss": "dpo", "beta": 0.1, "aggregator": "mean"},
        ],
    },
}


def test_an_online_study_run_is_a_benchmark_run(tmp_path):
    config = StudyConfig.model_validate({**TINY, "cache_dir": str(tmp_path / "cache")})
    study = run_study(config, tmp_path / "study", progress=False, workers=1)
    runs = {r.name: r for r in load_bench_runs(study)}
    assert set(runs) == {"odpo-single-s1", "odpo-mean-s0"}
    for name, run in runs.items():
        run_dir = study / "daa" / name
        metrics = read_jsonl(run_dir / "metrics.jsonl")
        records = read_jsonl(run_dir / "monitor.jsonl")
        # 2 rounds of 2 steps: step 0, half of round 1, the end of each round.
        assert run.steps.tolist() == [m["step"] for m in metrics] == [0, 1, 2, 4]
        assert run.kl.tolist() == [m["kl"] for m in metrics]
        assert run.gold.tolist() == [m["gold"] for m in metrics]
        assert [m["round"] for m in metrics] == [0, 1, 1, 2]
        assert all(m["monitor"]["alarm"] is False for m in metrics)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert set(manifest["rounds"]) == {"1", "2"}  # online: labelled round by round
        for record in records:
            point = EvalPoint.from_record(record)
            assert point.r_members.shape == (2, 8) and point.latents.shape[0] == 8
            assert not [k for k in record if "gold" in k]
        # The single proxy's run is watched by the member it is not trained on; the mean's
        # by none (it is trained on every member).
        assert all(("r_heldout" in r) == (name == "odpo-single-s1") for r in records)
    assert runs["odpo-single-s1"].seed == 1 and runs["odpo-mean-s0"].seed == 0
    assert runs["odpo-single-s1"].config == "odpo-single"
    # The seed is the run's: its config says so.
    saved = (study / "daa" / "odpo-single-s1" / "config.yaml").read_text()
    assert "seed: 1" in saved
