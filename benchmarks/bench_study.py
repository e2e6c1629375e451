"""Wall time of the default `goodhart run`, from an empty testbed cache, stage by stage.

    python benchmarks/bench_study.py [--runs 1] [--keep DIR] [key=value ...]

Each run uses a fresh cache directory and a fresh run directory, so the testbed is built from
nothing every time (the figure the README and issue 6 care about). Prints the per-stage
seconds of every run and the median, as a markdown table for BENCHMARKS.md. With ``--keep``,
each run's metrics.jsonl and manifest.json are copied to ``DIR/run<i>/`` so that two
versions' runs can be compared line by line (``cmp``).

To time another version side by side, run this script with that version's sources first on
the path: ``PYTHONPATH=/tmp/oldmain/src python benchmarks/bench_study.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(overrides: list[str], keep: Path | None = None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env_cache = Path(tmp) / "cache"
        run_dir = Path(tmp) / "run"
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "goodhartlab.cli",
                "run",
                f"cache_dir={env_cache}",
                *overrides,
                "--run-dir",
                str(run_dir),
            ],
            check=True,
        )
        wall = time.perf_counter() - t0
        manifest = json.loads((run_dir / "manifest.json").read_text())
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for name in ("metrics.jsonl", "manifest.json"):
                shutil.copy2(run_dir / name, keep / name)
    stages = {name: s["seconds"] for name, s in manifest["stages"].items()}
    rl = sum(v for k, v in stages.items() if k.startswith("rl/"))
    out = {k: v for k, v in stages.items() if not k.startswith("rl/")}
    if rl:
        out["rl (all runs)"] = rl
    out["total (wall, incl. start-up and report)"] = wall
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="copy each run's metrics and manifest here")
    ap.add_argument("overrides", nargs="*", help="study overrides, e.g. bon.pool_size=256")
    args = ap.parse_args()
    results = [
        one_run(args.overrides, args.keep / f"run{i + 1}" if args.keep else None)
        for i in range(args.runs)
    ]
    print(f"\n| stage | {' | '.join(f'run {i + 1}' for i in range(len(results)))} | median |")
    print(f"|---|{'---:|' * (len(results) + 1)}")
    for key in results[0]:
        vals = [r.get(key, float("nan")) for r in results]
        print(
            f"| {key} | {' | '.join(f'{v:.0f} s' for v in vals)} | {statistics.median(vals):.0f} s |"
        )


if __name__ == "__main__":
    main()
