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

The study's other stages go through the same workers, as smaller tasks: a task may name the
tasks it ``needs`` (a reward-model member needs its pairs and its backbone), and a task can
say how far it is with :func:`report_progress` (pairs sampled, pool chunks written), which
reaches the caller's ``on_progress`` from this process and from a local pool (not from Ray:
there only a task's start and end are seen). A :class:`WorkerPool` keeps the local worker
processes (or the Ray session started here) for several :func:`run_tasks` calls, so the
stages of a study start them once.
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
    "WorkerPool",
    "available_cpus",
    "import_ray",
    "report_progress",
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
    needs: tuple[str, ...] = ()
    """Names of earlier tasks of the same call that must finish before this one starts."""


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


#: Where :func:`report_progress` sends ``(done, total)`` of the task running in this
#: process: set around each task by :func:`run_tasks` (in-process) or by the pool worker.
_reporter: Callable[[int, int], None] | None = None
#: A local pool worker's queue to the caller (set by :func:`_init_worker`).
_progress_queue: Any = None
#: Seconds between two reports of one task that reach the caller (its last always does).
REPORT_EVERY = 0.5


def report_progress(done: int, total: int) -> None:
    """Say, from inside a task, that ``done`` of its ``total`` units of work are done.

    Reaches the ``on_progress(name, done, total)`` of :func:`run_tasks` (at most every
    :data:`REPORT_EVERY` seconds per task, and always when ``done == total``); a no-op
    outside a task and on Ray. Lower layers take it as a plain callback.
    """
    if _reporter is not None:
        _reporter(int(done), int(total))


def _throttled(send: Callable[[int, int], None]) -> Callable[[int, int], None]:
    last = [float("-inf")]

    def report(done: int, total: int) -> None:
        now = time.perf_counter()
        if done >= total or now - last[0] >= REPORT_EVERY:
            last[0] = now
            send(done, total)

    return report


def _init_worker(queue, parent: int) -> None:
    global _progress_queue
    _progress_queue = queue
    _die_with(parent)


def _die_with(parent: int) -> None:
    """End this worker process when ``parent`` (the process that started it) dies.

    A worker that outlived a killed study would keep writing into run directories that a
    ``--resume`` now owns. On Linux the kernel sends the worker SIGKILL when its parent
    exits, however it exits (``prctl(PR_SET_PDEATHSIG)``; the pool's processes are started
    by the thread that submits, the study's main thread). Elsewhere a daemon thread polls
    the parent's pid every half second.
    """
    import signal

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        armed = False
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(1)
    if not armed:
        import threading

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, name="goodhart-parent-watch", daemon=True).start()


def _in_worker(threads: int, fn: Callable[..., Any], args: tuple, name: str | None = None) -> Any:
    """Run ``fn(*args)`` in a worker process with ``threads`` torch threads."""
    global _reporter
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()  # one "Loading weights" bar per model and worker
    queue = _progress_queue
    if queue is not None and name is not None:
        _reporter = _throttled(lambda done, total: queue.put((name, done, total)))
    try:
        return fn(*args)
    finally:
        _reporter = None


Callback = Callable[..., None]


class WorkerPool:
    """The workers of several :func:`run_tasks` calls, started once.

    ``local``: a pool of ``workers`` spawned processes, started on first use (each task sets
    its own torch threads, so calls with different ``threads`` share it); ``ray``: the Ray
    session, started on first use unless one is running (and then shut down by
    :meth:`close`). Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, backend: str = "local", workers: int = 1):
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
        if workers < 1:
            raise ValueError(f"workers: expected at least 1, got {workers}")
        self.backend = backend
        self.workers = workers
        self._executor = None
        self._queue = None
        self._ray_started = False

    def _local(self):
        """The process pool and its progress queue (started now if not yet)."""
        if self._executor is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: a forked torch process can deadlock in OpenMP, and spawned
            # workers start from the same clean state on every platform.
            ctx = mp.get_context("spawn")
            self._queue = ctx.Queue()
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(self._queue, os.getpid()),
            )
        return self._executor, self._queue

    def _ray(self):
        ray = import_ray()
        if not ray.is_initialized():
            # RAY_ADDRESS, when set, makes this connect to that cluster instead of starting one.
            ray.init(include_dashboard=False)
            self._ray_started = True
        return ray

    def _discard(self) -> None:
        """Drop the local processes at once (after an interrupt they may still be busy)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            self._queue = None

    def close(self) -> None:
        """Stop the local processes (after their tasks), or the Ray session started here."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
            self._queue = None
        if self._ray_started:
            import_ray().shutdown()
            self._ray_started = False

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_needs(tasks: Sequence[Task]) -> None:
    """Each task's ``needs`` name earlier tasks (so the given order is one that works)."""
    earlier: set[str] = set()
    for task in tasks:
        unknown = [n for n in task.needs if n not in earlier]
        if unknown:
            raise ValueError(f"task {task.name}: needs {unknown}, which are not earlier tasks")
        earlier.add(task.name)


def run_tasks(
    tasks: Sequence[Task],
    *,
    backend: str = "local",
    workers: int = 1,
    threads: int = 1,
    on_start: Callback | None = None,
    on_done: Callback | None = None,
    on_progress: Callback | None = None,
    pool: WorkerPool | None = None,
) -> dict[str, Any]:
    """Run independent tasks; returns ``{task.name: result}``.

    At most ``workers`` tasks run at once, started in the order given (a task once the
    tasks it ``needs`` are done). ``on_start(name)`` is called when a task is handed to a
    worker, ``on_progress(name, done, total)`` when it reports (:func:`report_progress`)
    and ``on_done(name, result, seconds)`` when it finished, all in this thread, so the
    caller can record each result as it arrives (a study killed later keeps the runs that
    finished). When a task fails, no further task is started, the running ones finish (and
    are reported), and the first error is raised again (its type kept, a note naming the
    run added).

    Args:
        tasks: the runs, each with a distinct name.
        backend: ``"local"`` (this process for one worker, else a process pool) or ``"ray"``.
        workers: tasks in flight at once.
        threads: torch threads of each worker process (not set for the in-process case:
            that is the caller's setting).
        pool: the :class:`WorkerPool` to run on (of this backend and at least ``workers``
            processes); default: one started and stopped by this call.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
    if workers < 1:
        raise ValueError(f"workers: expected at least 1, got {workers}")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be unique; got {names}")
    _check_needs(tasks)
    if pool is not None and (pool.backend != backend or pool.workers < workers):
        raise ValueError(
            f"pool: a {pool.backend} pool of {pool.workers} workers cannot run {workers} "
            f"{backend} workers"
        )
    on_start = on_start or (lambda name: None)
    on_done = on_done or (lambda name, result, seconds: None)
    on_progress = on_progress or (lambda name, done, total: None)
    if not tasks:
        return {}
    if backend == "local" and workers == 1:
        return _run_here(list(tasks), on_start, on_done, on_progress)
    own = pool is None
    pool = pool or WorkerPool(backend, workers)
    try:
        run = _run_ray if backend == "ray" else _run_pool
        return run(list(tasks), workers, threads, pool, on_start, on_done, on_progress)
    finally:
        if own:
            pool.close()


def _run_here(tasks, on_start, on_done, on_progress) -> dict[str, Any]:
    """One after the other in this process, in the order given."""
    global _reporter
    results = {}
    for task in tasks:
        on_start(task.name)
        t0 = time.perf_counter()
        _reporter = _throttled(lambda done, total, name=task.name: on_progress(name, done, total))
        try:
            results[task.name] = task.fn(*task.args)
        finally:
            _reporter = None
        on_done(task.name, results[task.name], time.perf_counter() - t0)
    return results


def _raise_first(errors: list[tuple[str, BaseException]]) -> None:
    """Re-raise the first failure as itself (a ValueError stays a ValueError), naming its run."""
    if errors:
        name, e = errors[0]
        e.add_note(f"(in run {name})")
        raise e


def _schedule(
    tasks,
    workers,
    submit,
    wait_any,
    result_of,
    on_start,
    on_done,
    poll=lambda: (),
    on_progress=lambda name, done, total: None,
) -> dict[str, Any]:
    """Keep up to ``workers`` tasks in flight: ``submit(task)`` starts one and returns a handle,
    ``wait_any(handles)`` returns the finished ones (possibly none, after a while),
    ``result_of(handle)`` their result (or raises the task's error), ``poll()`` the
    ``(name, done, total)`` reports that arrived. A task starts once the tasks it needs are
    done, the first such in the order given. After a failure nothing new starts; the
    running tasks finish and are recorded, then the first failure is raised. On an
    interrupt the caller cancels what :func:`_schedule` leaves in ``running`` (the dict is
    shared through the exception)."""
    results: dict[str, Any] = {}
    errors: list[tuple[str, BaseException]] = []
    pending = list(tasks)
    running: dict[Any, tuple[str, float]] = {}
    try:
        while pending or running:
            while not errors and len(running) < workers:
                task = next((t for t in pending if all(n in results for n in t.needs)), None)
                if task is None:
                    break
                pending.remove(task)
                running[submit(task)] = (task.name, time.perf_counter())
                on_start(task.name)
            if not running:  # a failure: nothing more starts (needs are earlier tasks)
                break
            finished = wait_any(list(running))
            names = {name for name, _ in running.values()}
            for name, done, total in poll():
                if name in names:  # a report can arrive after its task's result
                    on_progress(name, done, total)
            for handle in finished:
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


def _drain(queue) -> list[tuple[str, int, int]]:
    import queue as queue_module

    out = []
    while True:
        try:
            out.append(queue.get_nowait())
        except (queue_module.Empty, OSError, ValueError):
            return out


def _run_pool(tasks, workers, threads, pool, on_start, on_done, on_progress) -> dict[str, Any]:
    from concurrent.futures import FIRST_COMPLETED, wait

    executor, queue = pool._local()
    try:
        return _schedule(
            tasks,
            workers,
            submit=lambda task: executor.submit(_in_worker, threads, task.fn, task.args, task.name),
            wait_any=lambda futures: wait(
                futures, timeout=REPORT_EVERY, return_when=FIRST_COMPLETED
            )[0],
            result_of=lambda future: future.result(),
            on_start=on_start,
            on_done=on_done,
            poll=lambda: _drain(queue),
            on_progress=on_progress,
        )
    except BaseException as e:
        from concurrent.futures.process import BrokenProcessPool

        # Interrupted with tasks still running on the workers, or a worker died: the
        # processes cannot serve another call.
        if (
            not isinstance(e, Exception)
            or getattr(e, "running_handles", None)
            or isinstance(e, BrokenProcessPool)
        ):
            pool._discard()
        raise


def _run_ray(tasks, workers, threads, pool, on_start, on_done, on_progress) -> dict[str, Any]:
    ray = pool._ray()
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
