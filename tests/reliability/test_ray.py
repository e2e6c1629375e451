"""The distributed path for real: a study's stages and two RL runs on a local Ray (two CPUs),
the driver killed mid-run, a resume on Ray, and metrics.jsonl byte-identical to the local
pool's (issue 17)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from goodhartlab.cli import main
from goodhartlab.optimize.rundir import LOCK

pytest.importorskip("ray")  # in the dev extra; only a bare install lacks it
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="kill -9 semantics of Linux"),
]


def _free(lock: Path) -> bool:
    """Nobody holds the run directory's lock (a killed driver's Ray workers may take a
    moment to go)."""
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_a_study_on_ray_killed_and_resumed_equals_the_local_pools(
    tmp_path, monkeypatch, tiny_study
):
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local = tmp_path / "local"
    local.mkdir()
    argv = [
        "run",
        str(tiny_study(local, daa=False)),
        "--workers",
        "2",
        "--run-dir",
        str(local / "run"),
    ]
    assert main(argv) == 0

    on_ray = tmp_path / "ray"
    on_ray.mkdir()
    run_dir = on_ray / "run"
    argv = ["run", str(tiny_study(on_ray, daa=False)), "--backend", "ray", "--workers", "2"]
    driver = subprocess.Popen(
        [sys.executable, "-m", "goodhartlab.cli", *argv, "--run-dir", str(run_dir)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sign = "run/rl/*/checkpoints/step_000002/goodhart_artifact.json"
    try:
        end = time.monotonic() + 400
        while not list(on_ray.glob(sign)):
            assert driver.poll() is None, "the study ended before an RL checkpoint appeared"
            assert time.monotonic() < end, "no RL checkpoint appeared"
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
    finally:
        driver.kill()
    assert not (run_dir / "summary.json").exists()  # killed mid-study
    for lock in run_dir.glob(f"rl/*/{LOCK}"):
        end = time.monotonic() + 60
        while not _free(lock):
            assert time.monotonic() < end, f"{lock.parent} still held after the driver died"
            time.sleep(0.2)

    assert main(["run", "--resume", str(run_dir), "--backend", "ray", "--workers", "2"]) == 0
    assert (run_dir / "metrics.jsonl").read_text() == (local / "run" / "metrics.jsonl").read_text()
