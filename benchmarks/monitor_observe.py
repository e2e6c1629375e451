"""Cost of the live monitor: ``Monitor.observe`` over a run of K evaluation points, the
incremental detectors (``Monitor(...)``) against rerunning every detector's batch form over
the whole history at each point (``Monitor(..., incremental=False)``, what observe did before
issue 13), in the same process, on the same points.

Synthetic points shaped like the monitor-bench study's toy_text runs (``monitor.jsonl``): 128
completions of 12-28 token ids and their words, per-token log-probs, 5 ensemble members, a
held-out reward model, 48-dimensional reward-model latents, 32 groups of 4, the KL. Every
default detector and the packaged combined alarm (``toy_text-v2``). Each figure is the median
over ``--repeats`` replays of the whole run (after one warm-up of 5 points); the readings of
the two monitors are checked equal (scores to the bit, the alarm's probability to 1e-12).

    python benchmarks/monitor_observe.py [--points 50 100 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch

from goodhartlab.monitor import EvalPoint
from goodhartlab.monitor.live import Monitor, MonitorConfig

WORDS = "great bad fine slow fast cheap the screen is and it was very not a battery".split()


def synthetic_points(k: int, b: int = 128, seed: int = 0) -> list[EvalPoint]:
    """K points of a run that drifts (KL, members, latents, length) as it goes."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=48)
    points = []
    for j in range(k):
        t = j / max(k - 1, 1)
        ids = [rng.integers(0, len(WORDS), size=rng.integers(12, 29)) for _ in range(b)]
        honest = rng.normal(size=b) + t
        members = honest + rng.normal(0, 0.3, size=(5, b)) + t * rng.random((5, 1))
        points.append(
            EvalPoint(
                step=j,
                kl=2.0 * t**2,
                r_proxy=members.mean(axis=0),
                r_members=members,
                r_heldout=honest + rng.normal(0, 0.3, size=b),
                completions=[" ".join(WORDS[i] for i in row) for row in ids],
                completion_ids=ids,
                logp=[np.log(rng.uniform(0.2 + 0.5 * t, 1.0, size=row.size)) for row in ids],
                latents=rng.normal(size=(b, 48)) + t * direction,
                r_groups=members.mean(axis=0).reshape(32, 4),
            )
        )
    return points


def replay_seconds(points: list[EvalPoint], incremental: bool, repeats: int) -> tuple[float, list]:
    times, readings = [], None
    Monitor(MonitorConfig(), incremental=incremental).replay(points[:5])  # warm-up
    for _ in range(repeats):
        monitor = Monitor(MonitorConfig(), incremental=incremental)
        start = time.perf_counter()
        readings = monitor.replay(points)
        times.append(time.perf_counter() - start)
    return statistics.median(times), readings


def same(a: list, b: list) -> bool:
    for r, s in zip(a, b, strict=True):
        if (r.alarming, r.alarm_step, r.reasons) != (s.alarming, s.alarm_step, s.reasons):
            return False
        for n in r.scores:
            x, y = r.scores[n], s.scores[n]
            if not (x == y or (math.isnan(x) and math.isnan(y))):
                return False
        if abs(r.alarm_score - s.alarm_score) > 1e-12:
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'points':>6} {'batch (s)':>10} {'incremental (s)':>16} {'speed-up':>9}  readings")
    for k in args.points:
        points = synthetic_points(k)
        old, old_readings = replay_seconds(points, incremental=False, repeats=args.repeats)
        new, new_readings = replay_seconds(points, incremental=True, repeats=args.repeats)
        verdict = "equal" if same(old_readings, new_readings) else "DIFFER"
        print(f"{k:>6} {old:>10.2f} {new:>16.3f} {old / new:>8.1f}x  {verdict}", flush=True)


if __name__ == "__main__":
    main()
