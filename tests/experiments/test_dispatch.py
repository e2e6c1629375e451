"""Where a study's independent runs go: in-process, a local process pool, Ray (faked here)."""

from __future__ import annotations

import sys
import time

import pytest
import torch

from goodhartlab.experiments import dispatch
from goodhartlab.experiments.dispatch import MissingExtraError, Task, run_tasks, threads_per_worker


def square(x: int) -> int:
    return x * x


def fail_on_three(x: int, pause: float = 0.0) -> int:
    if x == 3:
        raise ValueError("three is bad")
    time.sleep(pause)
    return x


def torch_threads(_: int) -> int:
    return torch.get_num_threads()


def test_threads_per_worker_keeps_workers_times_threads_within_the_cores():
    assert threads_per_worker(2, 2) == 1
    assert threads_per_worker(2, 8, requested=4) == 4
    assert threads_per_worker(3, 8, requested=4) == 2  # 3 x 2 <= 8
    assert threads_per_worker(4, 2, requested=2) == 1  # oversubscribed: still 1 each
    with pytest.raises(ValueError, match="workers"):
        threads_per_worker(0, 2)


def test_in_process_runs_in_order_and_reports_each_run():
    events = []
    results = run_tasks(
        [Task(f"t{i}", square, (i,)) for i in (3, 1, 2)],
        workers=1,
        on_start=lambda name: events.append(("start", name)),
        on_done=lambda name, result, seconds: events.append(("done", name, result)),
    )
    assert results == {"t3": 9, "t1": 1, "t2": 4}
    assert events == [
        ("start", "t3"),
        ("done", "t3", 9),
        ("start", "t1"),
        ("done", "t1", 1),
        ("start", "t2"),
        ("done", "t2", 4),
    ]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="backend"):
        run_tasks([Task("a", square, (1,))], backend="slurm")
    with pytest.raises(ValueError, match="workers"):
        run_tasks([Task("a", square, (1,))], workers=0)
    with pytest.raises(ValueError, match="unique"):
        run_tasks([Task("a", square, (1,)), Task("a", square, (2,))])


def test_local_pool_returns_what_in_process_returns_with_the_workers_threads():
    tasks = [Task(f"t{i}", square, (i,)) for i in range(5)]
    done = []
    pooled = run_tasks(
        [*tasks, Task("threads", torch_threads, (0,))],
        workers=2,
        threads=1,
        on_done=lambda name, result, s: done.append(name),
    )
    assert pooled.pop("threads") == 1  # the worker's torch threads, whatever this process has
    assert pooled == run_tasks(tasks, workers=1) == {f"t{i}": i * i for i in range(5)}
    assert sorted(done) == sorted([*pooled, "threads"])


def test_local_pool_failure_keeps_the_error_type_names_the_run_and_starts_nothing_more():
    # t3 fails at once while t1 takes a second: the failure is seen before t1 is done.
    started, done = [], []
    with pytest.raises(ValueError, match="three is bad") as info:
        run_tasks(
            [Task(f"t{i}", fail_on_three, (i, 1.0)) for i in (3, 1, 5, 7, 9)],
            workers=2,
            on_start=started.append,
            on_done=lambda name, result, s: done.append(name),
        )
    assert "(in run t3)" in info.value.__notes__
    assert done == ["t1"]  # the running run finished and was reported
    assert started == ["t3", "t1"]  # nothing was started after the failure


def test_ray_backend_dispatches_tasks_with_their_threads_and_at_most_workers_in_flight(fake_ray):
    order = []
    results = run_tasks(
        [Task(f"t{i}", square, (i,)) for i in range(5)],
        backend="ray",
        workers=2,
        threads=1,
        on_start=lambda name: order.append(name),
    )
    assert results == {f"t{i}": i * i for i in range(5)}
    assert order == [f"t{i}" for i in range(5)]
    assert fake_ray.max_in_flight == 2
    assert all(options == {"num_cpus": 1} for options, _ in fake_ray.calls)
    assert [e[0] for e in fake_ray.events] == ["init", "shutdown"]  # started here, stopped here


def test_ray_backend_uses_a_running_ray_and_reraises_a_task_error(fake_ray):
    fake_ray.initialized = True  # e.g. the user called ray.init(address=...)
    with pytest.raises(ValueError, match="three is bad") as info:
        run_tasks([Task(f"t{i}", fail_on_three, (i,)) for i in (1, 3, 5)], backend="ray")
    assert "(in run t3)" in info.value.__notes__
    assert fake_ray.events == [] and fake_ray.initialized  # neither started nor shut down


def test_missing_ray_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'goodhart-lab\[ray\]'"):
        dispatch.import_ray()
    with pytest.raises(MissingExtraError, match="goodhart-lab"):
        run_tasks([Task("a", square, (1,))], backend="ray")


def count_to(n: int, pause: float = 0.0) -> int:
    """A task that reports each of its ``n`` units of work, ``pause`` seconds apart."""
    for i in range(1, n + 1):
        dispatch.report_progress(i, n)
        time.sleep(pause)
    return n


def pid(_: int) -> int:
    import os

    return os.getpid()


def test_a_task_starts_after_the_tasks_it_needs_and_needs_name_earlier_tasks():
    # On one worker the order given is kept; on two, "c" (needing the slow "a") waits while
    # "b" takes the free worker, though it comes after "c".
    started = []
    tasks = [
        Task("a", fail_on_three, (1, 1.0)),
        Task("c", square, (3,), needs=("a",)),
        Task("b", square, (2,)),
    ]
    assert run_tasks(tasks, workers=2, on_start=started.append) == {"a": 1, "c": 9, "b": 4}
    assert started == ["a", "b", "c"]
    started.clear()
    run_tasks(tasks, workers=1, on_start=started.append)
    assert started == ["a", "c", "b"]
    with pytest.raises(ValueError, match=r"task c: needs \['b'\], which are not earlier"):
        run_tasks([Task("c", square, (3,), needs=("b",)), Task("b", square, (2,))])


def test_progress_reported_inside_a_task_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(dispatch, "REPORT_EVERY", 0.0)  # every report, not one per 0.5 s
    here, pooled = [], []
    run_tasks([Task("t", count_to, (3,))], workers=1, on_progress=lambda *r: here.append(r))
    assert here == [("t", 1, 3), ("t", 2, 3), ("t", 3, 3)]
    # A spawned worker keeps REPORT_EVERY's default (0.5 s): of reports 0.3 s apart the
    # second is skipped, the last (all done) never.
    run_tasks([Task("t", count_to, (3, 0.3))], workers=2, on_progress=lambda *r: pooled.append(r))
    assert pooled == [("t", 1, 3), ("t", 3, 3)]
    dispatch.report_progress(1, 2)  # outside a task: nothing to report to, no error


def test_a_worker_pool_serves_several_calls_with_the_same_processes():
    with dispatch.WorkerPool("local", 2) as pool:
        first = run_tasks([Task(f"p{i}", pid, (i,)) for i in range(4)], workers=2, pool=pool)
        second = run_tasks([Task(f"p{i}", pid, (i,)) for i in range(4)], workers=2, pool=pool)
        assert set(second.values()) <= set(first.values()) and len(set(first.values())) <= 2
        with pytest.raises(ValueError, match="pool: a local pool of 2 workers cannot run 3"):
            run_tasks([Task("a", square, (1,))], workers=3, pool=pool)
    assert pool._executor is None  # closed: its processes are gone
