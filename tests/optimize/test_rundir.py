"""RunDir: create or resume a run directory, one manifest schema, JSONL logs."""

from __future__ import annotations

import json

import pytest

from goodhartlab.optimize.rundir import MANIFEST_SCHEMA, RunDir, read_jsonl

CONFIG = {"config": {"steps": 4, "lr": 0.1, "device": "cpu"}, "launch": {"out": "x"}}


def _open(path, config=CONFIG, resume=False, **kw):
    return RunDir.open(
        path, kind="rl", config=config, resume=resume, name="m", seed=3,
        resumable=["config.steps", "launch."], **kw,
    )  # fmt: skip


def test_a_new_run_writes_config_and_manifest_and_refuses_to_overwrite(tmp_path):
    run = _open(tmp_path / "run")
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    assert manifest["schema"] == MANIFEST_SCHEMA and manifest["kind"] == "rl"
    assert manifest["status"] == "running" and manifest["seed"] == 3 and manifest["name"] == "m"
    assert {"python", "goodhart-lab", "torch", "transformers", "numpy"} <= set(manifest["versions"])
    assert "steps: 4" in (tmp_path / "run/config.yaml").read_text()
    run.finish(extra=1)
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["extra"] == 1 and manifest["finished"]
    with pytest.raises(ValueError, match="already holds a run"):
        _open(tmp_path / "run")


def test_resume_names_what_differs_and_allows_the_resumable(tmp_path):
    _open(tmp_path / "run")
    other = {"config": {"steps": 4, "lr": 0.5, "device": "cuda"}, "launch": {"out": "y"}}
    with pytest.raises(ValueError, match=r"differs in 2 setting\(s\): config\.device: 'cpu'"):
        _open(tmp_path / "run", other, resume=True)
    more = {"config": {"steps": 9, "lr": 0.1, "device": "cpu"}, "launch": {"out": "z"}}
    run = _open(tmp_path / "run", more, resume=True)  # steps and launch.* may change
    run.resumed(2)
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    assert manifest["resumes"][0]["from_step"] == 2
    assert "steps: 9" in (tmp_path / "run/config.yaml").read_text()
    with pytest.raises(FileNotFoundError, match=r"config\.yaml not found"):
        _open(tmp_path / "nothing", resume=True)


def test_a_hand_edited_config_is_refused_on_resume(tmp_path):
    _open(tmp_path / "run")
    path = tmp_path / "run/config.yaml"
    path.write_text(path.read_text().replace("lr: 0.1", "lr: 0.2"))
    edited = {"config": {"steps": 4, "lr": 0.2, "device": "cpu"}, "launch": {"out": "x"}}
    with pytest.raises(
        ValueError,
        match=r"was edited after the run started \(1 setting\(s\) differ.*"
        r"config\.lr: 0\.1 \(recorded\) vs 0\.2 \(file\)",
    ):
        _open(tmp_path / "run", edited, resume=True)


def test_a_reformatted_config_is_not_a_change(tmp_path):
    # Issue 17, defect 4: a harmless reformat was refused (the file's hash was compared).
    _open(tmp_path / "run")
    path = tmp_path / "run/config.yaml"
    path.write_text(
        "# my notes\nlaunch: {out: x}\nconfig:\n  device: cpu\n  lr: 1.0e-1\n  steps: 4\n"
    )
    _open(tmp_path / "run", resume=True).finish()


def test_unreadable_config_or_manifest_names_the_file(tmp_path):
    _open(tmp_path / "run").finish()
    (tmp_path / "run/config.yaml").write_text("config: [unclosed\n")
    with pytest.raises(ValueError, match=r"config\.yaml is not valid YAML"):
        _open(tmp_path / "run", resume=True)
    (tmp_path / "run/config.yaml").write_text("- a list\n")
    with pytest.raises(ValueError, match=r"config\.yaml: expected a mapping"):
        _open(tmp_path / "run", resume=True)
    (tmp_path / "run/manifest.json").write_text("{torn")
    with pytest.raises(ValueError, match=r"manifest\.json is not valid JSON"):
        _open(tmp_path / "run", resume=True)


def test_logs_append_truncate_and_fail(tmp_path):
    run = _open(tmp_path / "run")
    for step in range(4):
        run.append("metrics", {"step": step, "gold": float(step)})
    with open(run.log("metrics"), "a") as f:
        f.write('{"step": 4, "go')  # a line torn by a kill
    with pytest.raises(ValueError, match=r"metrics\.jsonl, line 5: not a JSON line"):
        read_jsonl(run.log("metrics"), torn_tail=False)  # a finished run's log: damage
    run.truncate(["metrics"], 2)
    assert [r["step"] for r in run.read("metrics")] == [0, 1, 2]
    run.truncate(["metrics", "train"], -1)
    assert run.read("metrics") == [] and run.read("train") == []
    run.fail(RuntimeError("boom"))
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"] == "RuntimeError: boom"


def test_replace_takes_over_a_run_with_another_config(tmp_path):
    _open(tmp_path / "run").finish()
    other = {"config": {"steps": 1}}
    run = _open(tmp_path / "run", other, replace=True)
    assert run.manifest["status"] == "running" and "resumes" not in run.manifest
    assert "steps: 1" in (tmp_path / "run/config.yaml").read_text()
