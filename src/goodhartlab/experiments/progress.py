"""The overall progress display of ``goodhart run``: a line per stage and the time left.

Every stage gets an a-priori time estimate from its size (:func:`estimate_stages`, constants
below), which the measured times of finished stages refine (:func:`remaining_seconds`).
On a terminal the block of stage lines is redrawn in place once a second; anywhere else
(CI, a log file) each change of a stage is one plain log line.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TextIO

__all__ = [
    "StageState",
    "StudyProgress",
    "estimate_stages",
    "format_duration",
    "remaining_seconds",
]

Status = Literal["pending", "running", "done", "skipped", "failed"]

def estimate_stages(
    config: Any, testbed_cached: bool = False, seconds_per: Mapping[str, float] | None = None
) -> dict[str, float]:
    """A-priori seconds of every stage of a study config (``StudyConfig``), in run order.

    ``seconds_per``: seconds per unit of work on the reference machine, the testbed's own
    calibration (``Testbed.seconds_per``; default: that of the config's testbed class).
    """
    if seconds_per is None:
        from goodhartlab.registry import TESTBEDS

        seconds_per = TESTBEDS[config.testbed].seconds_per
    c = seconds_per
    out = {"testbed": c["testbed_cached"] if testbed_cached else c["testbed_build"]}
    p = config.proxies
    out["proxies"] = (
        p.pairs * c["proxy_pair"] + p.pairs * len(p.seeds) * p.epochs * c["proxy_pair_epoch"]
    )
    if p.pretrain_seeds and not testbed_cached:
        out["proxies"] += (len(p.seeds) - 1) * c.get(f"backbone_{p.size}", c["backbone_large"])
    if config.bon.enabled:
        b = config.bon
        completions = b.prompts * b.pool_size
        scorers = 1 + len(p.seeds)  # gold and every member (the single proxy is member 0)
        out["bon"] = completions * (c["bon_completion"] + scorers * c["bon_score"])
    if config.rl.enabled:
        r = config.rl
        evals = r.steps // r.eval_every + 2
        one = (
            r.steps * r.prompts_per_step * r.group_size * c["rl_rollout"]
            + evals * r.eval_prompts * c["rl_eval"]
        )
        out.update({f"rl/{m.name}": one for m in r.methods})
    if config.daa.enabled:
        d = config.daa
        pairs = min(p.pairs, d.max_pairs or p.pairs)
        evals = d.epochs + len(d.eval_points_in_first_epoch) + 1
        one = pairs * d.epochs * c["daa_pair_epoch"] + evals * d.eval_prompts * c["daa_eval"]
        out.update({f"daa/{r.name}": one for r in d.runs})
    return out


@dataclass
class StageState:
    """What the display knows of one stage."""

    name: str
    estimate: float
    """A-priori seconds (estimate_stages)."""
    status: Status = "pending"
    elapsed: float = 0.0
    """running: seconds so far; done / skipped: the measured seconds (skipped: of the
    earlier invocation that did it)."""
    group: str = ""
    """Stages of one group (``rl``, ``daa``) cost alike: a finished one calibrates the rest."""
    parallel: bool = False
    """Runs on the worker pool (together with the other parallel stages)."""
    calibrates: bool = True
    """Whether its measured time says how fast this machine is (not for stages whose cost
    depends on a cache: testbed, proxies)."""


def _factor(stages: list[StageState], group: str) -> float:
    """Measured / estimated seconds of the finished stages of ``group`` (all calibrating
    stages when the group has none finished; 1 when nothing has finished)."""
    finished = [
        s
        for s in stages
        if s.status in ("done", "skipped") and s.calibrates and s.estimate > 0 and s.elapsed > 0
    ]
    for pool in ([s for s in finished if group and s.group == group], finished):
        if pool:
            return sum(s.elapsed for s in pool) / sum(s.estimate for s in pool)
    return 1.0


def remaining_seconds(stages: list[StageState], workers: int = 1) -> float:
    """Seconds until the study is done.

    Each unfinished stage is expected to take ``estimate × factor``, the factor being the
    measured / estimated time of finished stages of its group (e.g. the other RL runs),
    else of all finished calibrating stages, else 1; a running stage has its elapsed time
    taken off (never below 0). The sequential stages add up; the parallel ones are laid
    out on ``workers`` workers in order, the running ones first (greedy list scheduling),
    and add the time until the last worker is free.
    """
    if workers < 1:
        raise ValueError(f"workers: expected at least 1, got {workers}")
    left: list[tuple[StageState, float]] = []
    for s in stages:
        if s.status in ("pending", "running"):
            expected = s.estimate * _factor(stages, s.group)
            rest = expected - s.elapsed if s.status == "running" else expected
            left.append((s, max(rest, 0.0)))
    sequential = sum(t for s, t in left if not s.parallel)
    running = [t for s, t in left if s.parallel and s.status == "running"]
    pending = [t for s, t in left if s.parallel and s.status == "pending"]
    # More running than workers cannot happen in a study; such extras queue like pending.
    free = sorted(running[:workers] + [0.0] * max(0, workers - len(running)))
    for t in running[workers:] + pending:
        free[0] += t
        free.sort()
    return sequential + (max(free) if running or pending else 0.0)


def format_duration(seconds: float) -> str:
    """``42 s``, ``3:05``, ``1:02:03``."""
    s = round(max(seconds, 0.0))
    if s < 60:
        return f"{s} s"
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class StudyProgress:
    """One overall display of a study's stages (thread-safe; the study calls it from one
    thread, the redraw ticker runs in another).

    Args:
        stages: every stage, in run order.
        workers: workers of the parallel stages (for the estimate).
        stream: where to write (default stderr).
        enabled: False: track only, print nothing.
        live: redraw in place (default: when ``stream`` is a terminal).
    """

    def __init__(
        self,
        stages: list[StageState],
        *,
        workers: int = 1,
        stream: TextIO | None = None,
        enabled: bool = True,
        live: bool | None = None,
        interval: float = 1.0,
    ):
        self.stages = {s.name: s for s in stages}
        self.workers = workers
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.live = enabled and (isatty() if live is None else live)
        self.interval = interval
        self._started: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self._lock = threading.Lock()
        self._drawn = 0
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # -- state -------------------------------------------------------------------------
    def _now(self) -> list[StageState]:
        t = time.perf_counter()
        for name, t0 in self._started.items():
            if self.stages[name].status == "running":
                self.stages[name].elapsed = t - t0
        return list(self.stages.values())

    def remaining(self) -> float:
        with self._lock:
            return remaining_seconds(self._now(), self.workers)

    def _set(self, name: str, status: Status, seconds: float | None = None) -> None:
        with self._lock:
            s = self.stages[name]
            s.status = status
            if status == "running":
                self._started[name] = time.perf_counter()
                s.elapsed = 0.0
            elif seconds is not None:
                s.elapsed = seconds
            elif name in self._started:
                s.elapsed = time.perf_counter() - self._started[name]
            self._report(s)

    def start(self, name: str) -> None:
        self._set(name, "running")

    def done(self, name: str, seconds: float | None = None) -> None:
        self._set(name, "done", seconds)

    def skip(self, name: str, seconds: float = 0.0) -> None:
        """Already done by an earlier invocation (``--resume``) in ``seconds``."""
        self._set(name, "skipped", seconds)

    def fail(self, name: str) -> None:
        self._set(name, "failed")

    # -- output ------------------------------------------------------------------------
    def _line(self, s: StageState) -> str:
        if s.status == "pending":
            when = f"≈ {format_duration(s.estimate * _factor(list(self.stages.values()), s.group))}"
        elif s.status == "skipped":
            when = f"done earlier ({format_duration(s.elapsed)})"
        else:
            when = format_duration(s.elapsed)
        return f"  {s.name:<22} {s.status:<8} {when}"

    def _footer(self) -> str:
        stages = list(self.stages.values())
        finished = sum(s.status in ("done", "skipped") for s in stages)
        left = remaining_seconds(stages, self.workers)
        elapsed = format_duration(time.perf_counter() - self._t0)
        eta = "" if finished == len(stages) else f", about {format_duration(left)} left"
        return f"goodhart run: {finished}/{len(stages)} stages done, {elapsed} elapsed{eta}"

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed stream must not kill the study
            pass

    def _redraw(self) -> None:
        lines = [self._line(s) for s in self._now()] + [self._footer()]
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        self._write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
        self._drawn = len(lines)

    def _report(self, s: StageState) -> None:
        if not self.enabled:
            return
        if self.live:
            self._redraw()
            return
        self._now()
        if s.status == "running":
            text = f"[{s.name}] running"
        elif s.status == "skipped":
            text = f"[{s.name}] already done ({format_duration(s.elapsed)}), skipped"
        elif s.status == "failed":
            text = f"[{s.name}] failed after {format_duration(s.elapsed)}"
        else:
            text = f"[{s.name}] done in {format_duration(s.elapsed)}"
        self._write(f"{text}; {self._footer()}\n")

    def open(self) -> StudyProgress:
        """Show the plan (a line per stage) and, on a terminal, start redrawing."""
        if not self.enabled:
            return self
        with self._lock:
            if self.live:
                self._redraw()
            else:
                for s in self.stages.values():
                    self._write(f"{self._line(s).strip()}\n")
        if self.live:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                self._redraw()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self.enabled and self.live:
            with self._lock:
                self._redraw()

    def __enter__(self) -> StudyProgress:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
