"""Where the independent runs of a study go: in this process, a local process pool, or Ray.

A study's RL and DAA runs do not depend on each other: each reads the shared artifacts
(base policy, proxies, pairs), seeds itself from the study seed and its own name, and writes
only its own run directory. :func:`run_tasks` hands them to

- ``local`` with one worker: this process, one after the other (what ``goodhart run`` did
  before there were backends);
- ``local`` with ``workers > 1``: a pool of ``workers`` spawned processes;
- ``ray``: Ray tasks (``pip install 'goodhart-lab[ray]'``), ``workers`` in flight at a time,
  on the local machine or on the cluster that ``RAY_ADDRESS`` / an earlier ``ray.init`` names
  (then every node must see the run directory and the testbed cache at the same paths).

Each worker sets its torch threads first (:func:`threads_per_worker`: workers × threads ≤
cores), so runs on two workers compute exactly what they compute one after the other in a
one-thread process. A task's result is returned to the caller unchanged whatever the backend,
so the study's summary and metrics do not depend on it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BACKENDS",
    "MissingExtraError",
    "Task",
    "available_cpus",
    "import_ray",
    "run_tasks",
    "threads_per_worker",
]

BACKENDS = ("local", "ray")

RAY_INSTALL = "pip install 'goodhart-lab[ray]'"


class MissingExtraError(ImportError):
    """An optional dependency of the requested feature is not installed."""


@dataclass(frozen=True)
class Task:
    """One independent run: ``fn(*args)`` with ``fn`` a module-level (importable) function."""

    name: str
    fn: Callable[..., Any] = field(repr=False)
    args: tuple = field(default=(), repr=False)


def available_cpus() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, cores: int, requested: int = 1) -> int:
    """torch threads for each of ``workers`` workers: ``requested``, capped so that
    workers × threads ≤ cores, and at least 1 (more workers than cores oversubscribe)."""
    if workers < 1 or cores < 1 or requested < 1:
        raise ValueError(
            f"workers, cores and threads must be ≥ 1; got {workers}, {cores}, {requested}"
        )
    return max(1, min(requested, cores // workers))


def import_ray():
    """The ``ray`` module, or :class:`MissingExtraError` naming the install command."""
    try:
        import ray
    except ImportError:
        raise MissingExtraError(
            f"--backend ray needs Ray, which is not installed: {RAY_INSTALL}"
        ) from None
    return ray


def _in_worker(threads: int, fn: Callable[..., Any], args: tuple) -> Any:
    """Run ``fn(*args)`` in a worker process with ``threads`` torch threads."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()  # one "Loading weights" bar per model and worker
    return fn(*args)


Callback = Callable[..., None]


def run_tasks(
    tasks: Sequence[Task],
    *,
    backend: str = "local",
    workers: int = 1,
    threads: int = 1,
    on_start: Callback | None = None,
    on_done: Callback | None = None,
) -> dict[str, Any]:
    """Run independent tasks; returns ``{task.name: result}``.

    At most ``workers`` tasks run at once, started in the order given. ``on_start(name)`` is
    called when a task is handed to a worker and ``on_done(name, result, seconds)`` when it
    finished, both in this thread, so the caller can record each result as it arrives (a
    study killed later keeps the runs that finished). When a task fails, no further task is
    started, the running ones finish (and are reported), and the first error is raised
    again (its type kept, a note naming the run added).

    Args:
        tasks: the runs, each with a distinct name.
        backend: ``"local"`` (this process for one worker, else a process pool) or ``"ray"``.
        workers: tasks in flight at once.
        threads: torch threads of each worker process (not set for the in-process case:
            that is the caller's setting).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
    if workers < 1:
        raise ValueError(f"workers: expected at least 1, got {workers}")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be unique; got {names}")
    on_start = on_start or (lambda name: None)
    on_done = on_done or (lambda name, result, seconds: None)
    if not tasks:
        return {}
    if backend == "ray":
        return _run_ray(list(tasks), workers, threads, on_start, on_done)
    if workers == 1:
        results = {}
        for task in tasks:
            on_start(task.name)
            t0 = time.perf_counter()
            results[task.name] = task.fn(*task.args)
            on_done(task.name, results[task.name], time.perf_counter() - t0)
        return results
    return _run_pool(list(tasks), workers, threads, on_start, on_done)


def _raise_first(errors: list[tuple[str, BaseException]]) -> None:
    """Re-raise the first failure as itself (a ValueError stays a ValueError), naming its run."""
    if errors:
        name, e = errors[0]
        e.add_note(f"(in run {name})")
        raise e


def _schedule(tasks, workers, submit, wait_any, result_of, on_start, on_done) -> dict[str, Any]:
    """Keep up to ``workers`` tasks in flight: ``submit(task)`` starts one and returns a handle,
    ``wait_any(handles)`` returns the finished ones, ``result_of(handle)`` their result (or
    raises the task's error). After a failure nothing new starts; the running tasks finish
    and are recorded, then the first failure is raised. On an interrupt the caller cancels
    what :func:`_schedule` leaves in ``running`` (the dict is shared through the exception)."""
    results: dict[str, Any] = {}
    errors: list[tuple[str, BaseException]] = []
    pending = list(tasks)
    running: dict[Any, tuple[str, float]] = {}
    try:
        while pending or running:
            while pending and not errors and len(running) < workers:
                task = pending.pop(0)
                running[submit(task)] = (task.name, time.perf_counter())
                on_start(task.name)
            if errors and not running:
                break
            for handle in wait_any(list(running)):
                name, t0 = running.pop(handle)
                try:
                    result = result_of(handle)
                except Exception as e:  # Ray wraps the task's error in RayTaskError
                    errors.append((name, e))
                    continue
                results[name] = result
                on_done(name, result, time.perf_counter() - t0)
    except BaseException as e:
        e.running_handles = list(running)
        raise
    _raise_first(errors)
    return results


def _run_pool(tasks, workers, threads, on_start, on_done) -> dict[str, Any]:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # spawn, not fork: a forked torch process can deadlock in OpenMP, and spawned workers
    # start from the same clean state on every platform.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
    try:
        results = _schedule(
            tasks,
            workers,
            submit=lambda task: pool.submit(_in_worker, threads, task.fn, task.args),
            wait_any=lambda futures: wait(futures, return_when=FIRST_COMPLETED)[0],
            result_of=lambda future: future.result(),
            on_start=on_start,
            on_done=on_done,
        )
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


def _run_ray(tasks, workers, threads, on_start, on_done) -> dict[str, Any]:
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        # RAY_ADDRESS, when set, makes this connect to that cluster instead of starting one.
        ray.init(include_dashboard=False)
    remote = ray.remote(num_cpus=threads)(_in_worker)
    try:
        return _schedule(
            tasks,
            workers,
            submit=lambda task: remote.remote(threads, task.fn, task.args),
            wait_any=lambda refs: ray.wait(refs, num_returns=1)[0],
            result_of=ray.get,
            on_start=on_start,
            on_done=on_done,
        )
    except BaseException as e:
        for ref in getattr(e, "running_handles", []):
            ray.cancel(ref)
        raise
    finally:
        if started_here:
            ray.shutdown()
