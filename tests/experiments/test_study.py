"""Study configs and the study runner (a tiny end-to-end run)."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from goodhartlab.experiments.study import StudyConfig, load_config, run_study
from goodhartlab.optimize.rundir import read_jsonl
from tiny_study import tiny_study_config


def test_default_config_loads_with_the_documented_defaults():
    c = load_config()
    assert c.testbed == "toy_text" and c.proxies.noise == 0.25 and c.proxies.size == "small"
    assert len(c.proxies.seeds) == 5
    assert set(c.bon.aggregators) == {"mean", "wco", "uwo", "median", "mean_minus_std"}
    assert c.bon.aggregators["uwo"] == {"lam": 0.5}


def test_overrides_are_parsed_as_yaml_and_nested():
    c = load_config(None, ["bon.pool_size=64", "proxies.seeds=[0, 1]", "name=x"])
    assert c.bon.pool_size == 64 and c.proxies.seeds == [0, 1] and c.name == "x"


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("bon.pool_sise=3", "bon.pool_sise"),
        ("proxies.noise=0.9", "proxies.noise"),
        ("bon.pool_size=many", "bon.pool_size"),
        ("colour=red", "colour"),
    ],
)
def test_bad_config_names_the_field(override, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        load_config(None, [override])


def test_bad_yaml_file_names_the_file(tmp_path):
    bad = tmp_path / "study.yaml"
    bad.write_text("bon: [unclosed\n")
    with pytest.raises(ValueError, match=r"study\.yaml"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


TINY = tiny_study_config(
    rl={"methods": [{"name": "single"}, {"name": "mean", "aggregator": "mean"}]},
    daa={"runs": [{"name": "dpo", "loss": "dpo", "beta": 0.1}]},
)


def test_daa_stage_is_off_by_default_and_validated():
    c = load_config()
    assert not c.daa.enabled and [r.name for r in c.daa.runs] == ["dpo"]
    assert c.daa.runs[0].loss == "dpo" and c.daa.runs[0].beta == 0.05
    c = load_config(None, ["daa.enabled=true", "daa.runs=[{name: i, loss: ipo, beta: 0.5}]"])
    assert c.daa.enabled and c.daa.runs[0].loss == "ipo"
    with pytest.raises(ValueError, match=r"daa\.runs"):
        load_config(None, ["daa.runs=[{name: a}, {name: a}]"])
    with pytest.raises(ValueError, match=r"daa\.runs\.0\.loss"):
        load_config(None, ["daa.runs=[{name: a, loss: kto}]"])


def test_default_rl_stage_is_the_issue_six_set():
    c = load_config()
    assert c.rl.enabled and c.rl.algorithm == "grpo"
    methods = {m.name: m for m in c.rl.methods}
    assert set(methods) == {"single", "mean", "wco", "uwo", "par", "single-nokl"}
    assert methods["single"].aggregator is None and methods["single"].kl_coef == 0.01
    assert methods["uwo"].aggregator_params == {"lam": 0.1}
    assert methods["par"].shaping == "par" and methods["single-nokl"].kl_coef == 0.0
    with pytest.raises(ValueError, match=r"rl\.methods"):
        load_config(None, ["rl.methods=[{name: a}, {name: a}]"])
    with pytest.raises(ValueError, match=r"rl\.methods\.0\.shaping"):
        load_config(None, ["rl.methods=[{name: a, shaping: wiggle}]"])


def test_rl_seeds_run_every_method_once_per_seed_and_reload_to_the_same_runs():
    c = load_config(None, ["rl.seeds=[3, 4]", "rl.methods=[{name: a}, {name: b, kl_coef: 0}]"])
    assert [(m.name, m.seed, m.group) for m in c.rl.methods] == [
        ("a-s3", 3, "a"), ("b-s3", 3, "b"), ("a-s4", 4, "a"), ("b-s4", 4, "b"),
    ]  # fmt: skip
    assert c.rl.run_config(c.rl.methods[3], seed=0, device="cpu", max_new_tokens=8).seed == 4
    # A saved config holds the expanded runs and the seeds: it loads to the same runs.
    assert StudyConfig.model_validate(c.model_dump()).rl.methods == c.rl.methods
    with pytest.raises(ValueError, match=r"method a: seed is set by rl\.seeds"):
        load_config(None, ["rl.seeds=[0]", "rl.methods=[{name: a, seed: 1}]"])
    with pytest.raises(ValueError, match=r"baseline 'c' is not a method"):
        load_config(None, ["rl.methods=[{name: a}, {name: b, baseline: c}]"])
    with pytest.raises(ValueError, match=r"claims\.0: zz is not a method of the RL stage"):
        load_config(
            None,
            ["claims=[{paper: p, claim: c, check: better, methods: [zz], baseline: single}]"],
        )
    with pytest.raises(ValueError, match=r"claims\.0\.check"):
        load_config(None, ["claims=[{paper: p, claim: c, check: vibes, methods: [single]}]"])


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _killed_copy(run_dir, copy, keep, lost):
    """A copy of a finished study's directory as if killed: only the stages for which
    ``keep(name)`` holds are recorded done, the directories ``lost`` and the final
    summary, metrics and report are gone."""
    shutil.copytree(run_dir, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["stages"] = {k: v for k, v in m["stages"].items() if keep(k)}
    m["status"] = "failed"
    (copy / "manifest.json").write_text(json.dumps(m))
    for name in (*lost, "plots"):
        shutil.rmtree(copy / name)
    for name in ("summary.json", "metrics.jsonl", "report.html"):
        (copy / name).unlink()


def _without_runs(run_dir, copy):
    """A copy of a finished study's directory as if killed right after the BoN stage."""
    _killed_copy(run_dir, copy, lambda k: "/" not in k, ("rl", "daa"))


def test_tiny_study_writes_every_artifact_and_resumes_without_recomputing(
    tmp_path, monkeypatch, fake_ray
):
    config = StudyConfig.model_validate({**TINY, "cache_dir": str(tmp_path / "cache")})
    # The RL and DAA runs go to a local pool of two worker processes.
    run_dir = run_study(config, tmp_path / "run", progress=False, workers=2)
    for name in (
        "config.yaml",
        "manifest.json",
        "summary.json",
        "metrics.jsonl",
        "report.html",
        "plots/curves.png",
        "plots/curves.svg",
        "plots/disagreement.png",
        "plots/disagreement.svg",
        "bon/metrics.jsonl",
        "bon/plots/bon.png",
        "rl/single/metrics.jsonl",
        "rl/single/samples.jsonl",
        "rl/mean/metrics.jsonl",
        "daa/dpo/metrics.jsonl",
        "daa/dpo/samples.jsonl",
        "daa/dpo/base_eval.jsonl",
        "daa/dpo/summary.json",
    ):
        assert (run_dir / name).is_file(), name
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["schema"] == "goodhart-run/v2"
    assert manifest["kind"] == "study" and manifest["versions"]["torch"]
    assert set(manifest["stages"]) == {
        "testbed",
        "proxies",
        "bon",
        "rl/single",
        "rl/mean",
        "daa/dpo",
    }
    methods = {line["method"] for line in _lines(run_dir / "bon/metrics.jsonl")}
    aggregators = {"mean", "wco", "uwo", "median", "mean_minus_std"}
    assert methods == {
        "single",
        "oracle",
        "ensemble/member0",
        "ensemble/member1",
        "ensemble/members_avg",
    } | {f"ensemble/{a}" for a in aggregators}

    # Every method has complete metrics in the study's metrics.jsonl, each line once.
    points = _lines(run_dir / "metrics.jsonl")
    assert {p["kind"] for p in points} == {"bon", "rl", "daa"}
    for p in points:
        assert all(p.get(k) is not None for k in ("method", "d", "kl", "gold", "proxy")), p
    rl_steps = {}
    for p in points:
        if p["kind"] == "rl":
            rl_steps.setdefault(p["method"], []).append(p["step"])
    assert rl_steps == {"single": [0, 2, 4], "mean": [0, 2, 4]}
    # DAA: 16 pairs in batches of 8, evaluated at step 0, half an epoch and the epoch end.
    daa = [p for p in points if p["kind"] == "daa"]
    assert [(p["method"], p["step"], p["epoch_fraction"]) for p in daa] == [
        ("dpo", 0, 0.0),
        ("dpo", 1, 0.5),
        ("dpo", 2, 1.0),
    ]
    assert daa[0]["win_rate"] == 0.5 and daa[0]["gold"] == 0.0 and daa[0]["curve"] == "daa"
    assert all(p.get("length") is not None and p.get("win_rate") is not None for p in daa)
    assert len(points) == len(_lines(run_dir / "bon/metrics.jsonl")) + 6 + 3
    summary = json.loads((run_dir / "summary.json").read_text())
    table = {(r["kind"], r["method"]) for r in summary["report"]["table"]}
    assert {("rl", "single"), ("rl", "mean"), ("bon", "single"), ("bon", "ensemble/wco")} <= table
    assert ("daa", "dpo") in table
    assert summary["report"]["verdict"] and set(summary["rl"]) == {"single", "mean"}
    assert set(summary["daa"]) == {"dpo"} and summary["daa"]["dpo"]["loss"] == "dpo"
    assert "- direct alignment 'dpo' " in summary["report"]["verdict"]

    # Best-of-n samples at n = 1, the peak n and N = 8, read back from the pool: nested
    # draws (n = 1 is pool sample 0 for every method), and at N the study's own best-of-N
    # picks (bon/samples.jsonl, computed independently at the end of the BoN stage).
    import goodhartlab.report.picks as picks_module

    bon_methods = ["single", *(f"ensemble/{a}" for a in aggregators), "oracle"]
    picks = picks_module.picks_at_n(run_dir / "bon", {m: [1, 3, 8] for m in bon_methods}, 2)
    assert len(picks) == 2 * len(bon_methods) * 3
    assert all(p["sample"] == 0 for p in picks if p["n"] == 1)
    assert all(p["sample"] < 3 for p in picks if p["n"] == 3)
    best_of_all = {
        (s["prompt"], s["method"]): s["completion"]
        for s in _lines(run_dir / "bon/samples.jsonl")
        if s.get("n") == 8
    }
    for p in picks:
        if p["n"] == 8:
            assert p["completion"] == best_of_all[(p["prompt"], p["method"])], p
    page = (run_dir / "report.html").read_text()
    single = sorted(
        (p for p in points if p["kind"] == "bon" and p["method"] == "single"), key=lambda p: p["n"]
    )
    peak = max(single, key=lambda p: p["gold"])["n"]
    assert "best-of-n · single · start (n = 1)" in page
    assert f"(n = {peak})" in page and "end (n = 8)" in page and "pool sample 0" in page

    # A model-written <script> is escaped in the rebuilt report: in an RL sample, and in
    # every best-of-n pick (the pool's completions replaced as the report reads them).
    from dataclasses import replace

    from goodhartlab.report import build_report

    samples = run_dir / "rl/single/samples.jsonl"
    original = samples.read_text()
    evil = {"step": 0, "prompt": "p", "completion": "<script>alert(1)</script>", "gold": 0.0}
    samples.write_text(json.dumps(evil) + "\n" + original)
    load_pool = picks_module.load_pool

    def evil_pool(path):
        pool = load_pool(path)
        rows = [[f"<script>bon({p},{j})</script>" for j in range(8)] for p in range(6)]
        return replace(pool, completions=rows)

    monkeypatch.setattr(picks_module, "load_pool", evil_pool)
    build_report(run_dir)
    monkeypatch.setattr(picks_module, "load_pool", load_pool)
    page = (run_dir / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;script&gt;bon(0,0)&lt;/script&gt;" in page  # n = 1, every method
    assert "&lt;script&gt;bon(1,0)&lt;/script&gt;" in page  # the second prompt
    assert "<script" not in page.lower() and "http://" not in page and "https://" not in page
    assert "data:image/png;base64," in page
    samples.write_text(original)
    build_report(run_dir)
    assert json.loads((run_dir / "summary.json").read_text()) == summary

    # The same runs one after the other in this process, and as (faked) Ray tasks, give the
    # same metrics and summary: each run seeds itself, whichever worker runs it.
    for backend, workers in (("local", 1), ("ray", 2)):
        other = tmp_path / f"{backend}-{workers}"
        _without_runs(run_dir, other)
        run_study(config, other, resume=True, progress=False, backend=backend, workers=workers)
        assert _lines(other / "metrics.jsonl") == points, backend
        assert len(fake_ray.calls) == (3 if backend == "ray" else 0)  # rl/single, rl/mean, daa/dpo
        assert json.loads((other / "summary.json").read_text()) == summary, backend
        for name in ("rl/single", "rl/mean", "daa/dpo"):
            assert (other / name / "samples.jsonl").read_text() == (
                run_dir / name / "samples.jsonl"
            ).read_text(), (backend, name)

    # A run killed after its first stages (the BoN stage and one RL run lost, another RL
    # run half-written) resumes to the same summary and the same metrics.
    killed = tmp_path / "killed"
    _killed_copy(run_dir, killed, lambda k: k in ("testbed", "proxies"), ("bon", "rl/single"))
    # rl/mean was killed after its first evaluation, before any checkpoint: the study
    # resumes that run directory instead of refusing it.
    shutil.rmtree(killed / "rl/mean/checkpoints")
    for name in ("metrics.jsonl", "train.jsonl", "samples.jsonl"):
        path = killed / "rl/mean" / name
        path.write_text("".join(path.read_text().splitlines(keepends=True)[:1]))
    (killed / "rl/mean/summary.json").unlink()
    # daa/dpo was killed after its half-epoch checkpoint: it resumes from step 1.
    shutil.rmtree(killed / "daa/dpo/checkpoints/step_000002")
    (killed / "daa/dpo/summary.json").unlink()
    run_study(config, killed, resume=True, progress=False, workers=1)
    resumes = json.loads((killed / "daa/dpo/manifest.json").read_text())["resumes"]
    assert [r["from_step"] for r in resumes] == [1]
    assert json.loads((killed / "summary.json").read_text()) == summary
    assert _lines(killed / "metrics.jsonl") == points

    # A resumed finished study recomputes nothing and keeps the same summary.
    import goodhartlab.experiments.proxies as proxies_module
    import goodhartlab.optimize.daa as daa_module
    import goodhartlab.optimize.rl as rl_module

    monkeypatch.setattr(proxies_module, "train_proxies", lambda *a, **k: pytest.fail("recomputed"))
    monkeypatch.setattr(rl_module, "run_rl", lambda *a, **k: pytest.fail("recomputed"))
    monkeypatch.setattr(daa_module, "run_daa", lambda *a, **k: pytest.fail("recomputed"))
    again = run_study(config, run_dir, resume=True, progress=False)
    assert json.loads((again / "summary.json").read_text()) == summary
    assert _lines(again / "metrics.jsonl") == points

    with pytest.raises(ValueError, match=r"differs in 1 setting\(s\): seed: 0 \(saved\) vs 1"):
        run_study(config.model_copy(update={"seed": 1}), run_dir, resume=True, progress=False)
    # A config.yaml edited by hand after the study started is refused on resume.
    edited = run_dir / "config.yaml"
    original = edited.read_text()
    edited.write_text(original.replace("seed: 0", "seed: 7"))
    with pytest.raises(ValueError, match="was edited after the study started"):
        run_study(config, run_dir, resume=True, progress=False)
    edited.write_text(original)
    with pytest.raises(ValueError, match="not empty"):
        run_study(config, run_dir, progress=False)


def test_missing_ray_fails_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    from goodhartlab.cli import main
    from goodhartlab.experiments.dispatch import MissingExtraError

    with pytest.raises(MissingExtraError, match=r"pip install 'goodhart-lab\[ray\]'"):
        run_study(load_config(), tmp_path / "run", progress=False, backend="ray")
    assert not (tmp_path / "run").exists()
    assert main(["run", "--backend", "ray", "--run-dir", str(tmp_path / "run")]) == 2
    assert "pip install 'goodhart-lab[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="workers"):
        run_study(load_config(), tmp_path / "run", progress=False, workers=0)


def test_a_watched_study_logs_the_monitor_in_every_rl_run(tmp_path):
    """rl.monitor={} watches each RL run with the packaged alarm: readings in metrics.jsonl,
    inputs in monitor.jsonl (the ensemble's members, member 0's latents, the held-out mean
    of the members a single-proxy run is not trained on), and the report's monitor plot."""
    methods = [{"name": "single"}, {"name": "on-gold", "optimize": "gold", "seed": 3}]
    tiny = tiny_study_config(rl={"monitor": {}, "methods": methods}, daa=None, bon=False)
    config = StudyConfig.model_validate({**tiny, "cache_dir": str(tmp_path / "cache")})
    run_dir = run_study(config, tmp_path / "run", progress=False, workers=1)
    for name in ("single", "on-gold"):
        lines = read_jsonl(run_dir / "rl" / name / "metrics.jsonl")
        records = read_jsonl(run_dir / "rl" / name / "monitor.jsonl")
        assert [r["step"] for r in records] == [r["step"] for r in lines] == [0, 2, 4]
        assert all(0 <= line["monitor"]["alarm_score"] <= 1 for line in lines)
        assert all(len(r["r_members"]) == 2 and "latents" in r for r in records)
        # The held-out mean of members 1.. (member 0 is the single proxy; a gold run is
        # trained on neither).
        assert all("r_heldout" in r for r in records)
    assert (run_dir / "plots" / "monitor.png").is_file()


def test_a_methods_own_monitor_keeps_its_none_values():
    # alarm: null on one method means "no alarm rule", not the packaged alarm (a dump with
    # exclude_none dropped the nested None once).
    c = load_config(
        None, ["rl.methods=[{name: a, monitor: {alarm: null, patience: 2}}, {name: b}]"]
    )
    watched, plain = (c.rl.run_config(m, seed=0, device="cpu") for m in c.rl.methods)
    assert watched.monitor is not None and watched.monitor.alarm is None
    assert watched.monitor.patience == 2
    assert plain.monitor is None
