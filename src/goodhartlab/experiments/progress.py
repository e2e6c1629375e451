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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TextIO

__all__ = [
    "StageState",
    "StudyProgress",
    "estimate_stages",
    "format_duration",
    "list_schedule_seconds",
    "remaining_seconds",
]

Status = Literal["pending", "running", "done", "skipped", "failed"]


def list_schedule_seconds(
    seconds: Sequence[float], workers: int, needs: Sequence[Sequence[int]] | None = None
) -> float:
    """Seconds until ``workers`` workers have done every task: greedy list scheduling as
    ``experiments.dispatch`` does it (a free worker takes the first task, in the order
    given, whose ``needs`` (indices of earlier tasks) are done)."""
    if workers < 1:
        raise ValueError(f"workers: expected at least 1, got {workers}")
    needs = [tuple(n) for n in needs] if needs is not None else [()] * len(seconds)
    end: dict[int, float] = {}
    free = [0.0] * workers
    pending = list(range(len(seconds)))
    while pending:
        t = min(free)
        ready = [i for i in pending if all(n in end and end[n] <= t for n in needs[i])]
        if not ready:  # wait for the next task to finish
            t = min(e for e in end.values() if e > t)
            free = [max(f, t) for f in free]
            continue
        i = ready[0]
        pending.remove(i)
        w = free.index(t)
        end[i] = free[w] = t + seconds[i]
    return max(end.values(), default=0.0)


def estimate_stages(
    config: Any,
    testbed_cached: bool = False,
    seconds_per: Mapping[str, float] | None = None,
    workers: int = 1,
) -> dict[str, float]:
    """A-priori seconds of every stage of a study config (``StudyConfig``), in run order.

    ``seconds_per``: seconds per unit of work on the reference machine, the testbed's own
    calibration (``Testbed.seconds_per``; default: that of the config's testbed class).
    ``workers``: the study's workers. The testbed, proxies and best-of-n stages are laid
    out on them piece by piece as ``experiments.parallel_stages`` cuts them
    (:func:`list_schedule_seconds`); the RL and DAA runs are one stage each, laid out on
    the workers by :func:`remaining_seconds`.
    """
    from goodhartlab.experiments.parallel_stages import (
        SHARES_PER_WORKER,
        pretrain_seeds_beside_policy,
    )

    if seconds_per is None:
        from goodhartlab.registry import TESTBEDS

        seconds_per = TESTBEDS[config.testbed].seconds_per
    c = seconds_per
    p = config.proxies
    backbone = c.get(f"backbone_{p.size}", c["backbone_large"])
    beside = pretrain_seeds_beside_policy(p, c, workers)  # built in the testbed stage
    if testbed_cached:
        out = {"testbed": c["testbed_cached"]}
    elif "policy" in c:
        # The testbed's own backbone, then the pretrain-seed ones beside the policy (the
        # first of them is the testbed's own).
        builds = [c["policy"], backbone] + [backbone] * max(0, len(beside) - 1)
        out = {"testbed": c.get("tokenizer", 0.0) + list_schedule_seconds(builds, workers)}
    else:  # a testbed calibrated for the whole build only
        out = {"testbed": c["testbed_build"]}
    # proxies: pairs, the remaining pretrain-seed backbones, members (each after its pairs
    # and its backbone).
    seconds, needs = [p.pairs * c["proxy_pair"]], [()]
    built = set(p.seeds[: max(1, len(beside))])  # the first seed's is the testbed's own
    backbone_of = {}
    if p.pretrain_seeds and not testbed_cached:
        for s in p.seeds:
            if s not in built:
                backbone_of[s] = len(seconds)
                seconds.append(backbone)
                needs.append(())
    for s in p.seeds:
        seconds.append(p.pairs * p.epochs * c["proxy_pair_epoch"])
        needs.append((0, backbone_of[s]) if s in backbone_of else (0,))
    variants = getattr(p, "variants", {}) or {}
    # Reward-model variants: one member per seed each, trained as a member is (after the
    # pairs; their objectives' extra cost is not calibrated).
    variant_members = 0
    for name, v in variants.items():
        epochs = v.rm.get("epochs", p.epochs)
        for _ in p.variant_seeds(name):
            variant_members += 1
            seconds.append(p.pairs * epochs * c["proxy_pair_epoch"])
            needs.append((0,))
    out["proxies"] = list_schedule_seconds(seconds, workers, needs)
    if config.bon.enabled:
        b = config.bon
        completions = b.prompts * b.pool_size
        chunks = -(-completions // b.chunk_size)
        shares = min(chunks, SHARES_PER_WORKER * workers)
        sampling = [completions / shares * c["bon_completion"]] * shares
        # gold, every member (the single proxy is member 0) and every variant's model
        scorers = 1 + len(p.seeds) + variant_members
        scoring = [completions / workers * c["bon_score"]] * (scorers * workers)  # blocks
        out["bon"] = list_schedule_seconds(sampling, workers) + list_schedule_seconds(
            scoring, workers
        )
    if config.rl.enabled:
        r = config.rl
        evals = r.steps // r.eval_every + 2
        one = (
            r.steps * r.prompts_per_step * r.group_size * c["rl_rollout"]
            + evals * r.eval_prompts * c["rl_eval"]
        )
        out.update({f"rl/{m.name}": one for m in r.methods})
    if config.daa.enabled:
        for run in config.daa.runs:
            d = config.daa.run_config(run)
            if d.online:  # K rounds, each sampling 2 completions per prompt (as evaluations do)
                pairs, epochs = d.pairs_per_round * d.rounds, d.epochs * d.rounds
                sampling = pairs * 2 / d.eval_samples * c["daa_eval"]
            else:
                pairs, epochs, sampling = min(p.pairs, d.max_pairs or p.pairs), d.epochs, 0.0
            evals = epochs + len(d.eval_points_in_first_epoch) + 1
            prompts = d.eval_prompts or 100
            one = pairs * d.epochs * c["daa_pair_epoch"] + evals * prompts * c["daa_eval"]
            out[f"daa/{run.name}"] = one + sampling
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
    detail: str = ""
    """What a running stage has done so far (``pairs 2,048/6,000 · members 1/5``)."""


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
        interval: seconds between redraws (live).
        detail_every: seconds between two log lines of a running stage's progress (plain
            output; a live display shows every change at its next redraw).
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
        detail_every: float = 15.0,
    ):
        self.stages = {s.name: s for s in stages}
        self.workers = workers
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.live = enabled and (isatty() if live is None else live)
        self.interval = interval
        self.detail_every = detail_every
        self._detail_logged: dict[str, float] = {}
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

    def update(self, name: str, detail: str) -> None:
        """What running stage ``name`` has done so far, in words (its pieces' progress)."""
        with self._lock:
            s = self.stages[name]
            s.detail = detail
            if not self.enabled or self.live:
                return  # the next redraw shows it
            now = time.perf_counter()
            last = self._detail_logged.get(name, self._started.get(name, now))
            if now - last < self.detail_every:
                return
            self._detail_logged[name] = now
            self._now()
            self._write(f"[{name}] {detail}; {self._footer()}\n")

    # -- output ------------------------------------------------------------------------
    def _line(self, s: StageState) -> str:
        if s.status == "pending":
            when = f"≈ {format_duration(s.estimate * _factor(list(self.stages.values()), s.group))}"
        elif s.status == "skipped":
            when = f"done earlier ({format_duration(s.elapsed)})"
        else:
            when = format_duration(s.elapsed)
        detail = f"  {s.detail}" if s.status == "running" and s.detail else ""
        return f"  {s.name:<22} {s.status:<8} {when}{detail}"

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
