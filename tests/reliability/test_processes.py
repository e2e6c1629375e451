"""Workers die with their parent, and one process owns a run directory at a time
(issue 17, defect 2: killed studies whose workers kept writing into a resumed run)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from goodhartlab.optimize.rundir import RunDir

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="kill -9 semantics of Linux")


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _wait_for(predicate, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _start(tmp_path: Path, body: str) -> subprocess.Popen:
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    return subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env)


def test_pool_workers_die_when_their_parent_is_killed(tmp_path):
    (tmp_path / "sleeper.py").write_text(
        textwrap.dedent(
            """
            import os, sys, time
            from pathlib import Path

            def sleep_here(where):
                Path(where, f"worker-{os.getpid()}").write_text("")
                time.sleep(120)
            """
        )
    )
    parent = _start(
        tmp_path,
        """
        import sys
        from goodhartlab.experiments.dispatch import Task, run_tasks
        from sleeper import sleep_here

        if __name__ == "__main__":
            where = sys.argv[1]
            run_tasks([Task(n, sleep_here, (where,)) for n in "ab"], workers=2)
        """,
    )
    try:
        assert _wait_for(lambda: len(list(tmp_path.glob("worker-*"))) == 2, 120)
        pids = [int(p.name.split("-")[1]) for p in tmp_path.glob("worker-*")]
        assert all(_alive(pid) for pid in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        # Without the fix the workers sleep on for two minutes (and write on in a real run).
        assert _wait_for(lambda: not any(_alive(pid) for pid in pids), 10), pids
    finally:
        parent.kill()
        for p in tmp_path.glob("worker-*"):
            try:
                os.kill(int(p.name.split("-")[1]), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_run_directory_is_owned_by_one_process(tmp_path):
    run_dir = tmp_path / "run"
    parent = _start(
        tmp_path,
        f"""
        import sys, time
        from pathlib import Path
        from goodhartlab.optimize.rundir import RunDir

        RunDir.open({str(run_dir)!r}, kind="rl", config={{"steps": 2}}, resume=False)
        Path(sys.argv[1], "ready").write_text("")
        time.sleep(120)
        """,
    )
    try:
        assert _wait_for(lambda: (tmp_path / "ready").exists(), 60)
        before = (run_dir / "manifest.json").read_text()
        with pytest.raises(ValueError, match=rf"in use by process {parent.pid} on "):
            RunDir.open(run_dir, kind="rl", config={"steps": 2}, resume=True)
        assert (run_dir / "manifest.json").read_text() == before  # nothing written
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        run = RunDir.open(run_dir, kind="rl", config={"steps": 2}, resume=True)
        run.finish()
    finally:
        parent.kill()
    # Finished: the directory is let go, so another process may resume it.
    again = _start(
        tmp_path,
        f"""
        from goodhartlab.optimize.rundir import RunDir
        RunDir.open({str(run_dir)!r}, kind="rl", config={{"steps": 2}}, resume=True).finish()
        """,
    )
    assert again.wait(60) == 0
