"""kill -9 of `goodhart run` at any stage, on two workers, then an immediate `--resume`: the
study ends with the metrics.jsonl and summary.json of a study never interrupted (issue 17:
workers outlived their parent and a resume duplicated and lost lines)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from goodhartlab.cli import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="kill -9 semantics of Linux"),
]


def _results(run_dir: Path) -> tuple[str, dict]:
    return (run_dir / "metrics.jsonl").read_text(), json.loads(
        (run_dir / "summary.json").read_text()
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_study):
    tmp = tmp_path_factory.mktemp("straight")
    run_dir = tmp / "run"
    argv = ["run", str(tiny_study(tmp)), "--workers", "2", "--run-dir", str(run_dir)]
    assert main(argv) == 0
    return _results(run_dir)


def _spawned_by(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize(
    "stage, sign",
    [
        ("testbed", "cache/toy_text/*/lm-small-seed0-steps40/goodhart_artifact.json"),
        ("proxies", "cache/toy_text/*/proxies/*/member_0/goodhart_rm.json"),
        ("bon", "run/bon/pool/scores/*.safetensors"),
        ("rl", "run/rl/*/checkpoints/step_000002/goodhart_artifact.json"),
    ],
)
def test_kill_9_at_a_stage_then_resume_gives_the_uninterrupted_results(
    tmp_path, uninterrupted, tiny_study, stage, sign
):
    run_dir = tmp_path / "run"
    argv = ["run", str(tiny_study(tmp_path)), "--workers", "2", "--run-dir", str(run_dir)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    study = subprocess.Popen(
        [sys.executable, "-m", "goodhartlab.cli", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        end = time.monotonic() + 300
        workers: set[int] = set()
        while not list(tmp_path.glob(sign)):
            assert study.poll() is None, f"the study ended before {sign} appeared"
            assert time.monotonic() < end, f"{sign} did not appear"
            workers |= set(_spawned_by(study.pid))
            time.sleep(0.05)
        workers |= set(_spawned_by(study.pid))
        study.send_signal(signal.SIGKILL)
        study.wait(10)
    finally:
        study.kill()
    # No worker outlives the study: nothing writes into the directory the resume now owns.
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers), f"workers still alive after the kill ({stage})"

    assert main(["run", "--resume", str(run_dir), "--workers", "2"]) == 0
    metrics, summary = _results(run_dir)
    assert metrics == uninterrupted[0]
    assert summary == uninterrupted[1]
