"""``goodhart monitor PATH``: the monitor over a finished run, after the fact.

Reads what a run logged, never gold, and replays the monitor over it evaluation by evaluation
(the same readings a live monitor would have given, since every detector is causal):

- a goodhart RL run directory (its ``monitor.jsonl``, written with ``--monitor``), or a study
  directory (each ``rl/*/monitor.jsonl`` and ``daa/*/monitor.jsonl``);
- the completion logs TRL's GRPOTrainer writes with ``log_completions=True``
  (``OUTPUT_DIR/completions/completions_NNNNN.parquet``: columns ``step``, ``prompt``,
  ``completion``, one column per reward function, ``advantage``): each file is one point, the
  first one the reference. The optimized reward is the sum of the reward columns (TRL's
  default weights of 1) unless ``reward_columns`` names them; completions are grouped by
  prompt for the group detectors. Reading Parquet needs ``pyarrow``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from goodhartlab.monitor.history import EvalPoint
from goodhartlab.monitor.live import Monitor, MonitorConfig, Reading
from goodhartlab.optimize.monitoring import MONITOR_LOG
from goodhartlab.optimize.rundir import read_jsonl

__all__ = ["monitor_path", "run_dir_points", "trl_points"]

_TRL_FILE = re.compile(r"^completions_(\d+)\.parquet$")
_TRL_FIXED = {"step", "prompt", "completion", "advantage", "images"}


def run_dir_points(run_dir: Path) -> list[EvalPoint]:
    """The evaluation points a goodhart run logged (``monitor.jsonl``)."""
    path = run_dir / f"{MONITOR_LOG}.jsonl"
    return [
        EvalPoint.from_record(r, f"{path} line {i}")
        for i, r in enumerate(read_jsonl(path, torn_tail=False), start=1)
    ]


def _text(x: Any) -> str:
    """A TRL completion: a string, or conversational messages (their contents joined)."""
    if isinstance(x, str):
        return x
    if hasattr(x, "tolist"):
        x = x.tolist()
    if isinstance(x, list | tuple):
        return "".join(_text(m.get("content", "")) if isinstance(m, dict) else _text(m) for m in x)
    if isinstance(x, dict):
        return _text(x.get("content", ""))
    raise ValueError(f"expected a string or a list of messages; got {type(x).__name__}")


def trl_points(
    folder: Path, reward_columns: Sequence[str] | None = None
) -> tuple[list[EvalPoint], dict[str, int]]:
    """One point per TRL completions file, and the count of unreadable rows skipped by reason."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(
            "reading TRL's completion logs (Parquet) needs pyarrow: pip install pyarrow"
        ) from None
    files = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _TRL_FILE.match(p.name)))
    if not files:
        raise ValueError(f"{folder}: no completions_NNNNN.parquet files (TRL log_completions)")
    points, skipped = [], {}
    for step, path in files:
        table = pq.read_table(path).to_pylist()
        if not table:
            skipped["empty file"] = skipped.get("empty file", 0) + 1
            continue
        columns = reward_columns or [c for c in table[0] if c not in _TRL_FIXED]
        missing = [c for c in columns if c not in table[0]]
        if missing or not columns:
            raise ValueError(
                f"{path}: reward column(s) {missing or '(none)'} not found; columns are "
                f"{sorted(table[0])}"
            )
        prompts, texts, rewards = [], [], []
        for row in table:
            try:
                values = [float(row[c]) for c in columns]
                text = _text(row["completion"])
            except (TypeError, ValueError, KeyError):
                skipped["unreadable row"] = skipped.get("unreadable row", 0) + 1
                continue
            if not all(math.isfinite(v) for v in values):
                skipped["NaN reward"] = skipped.get("NaN reward", 0) + 1
                continue
            prompts.append(json.dumps(row.get("prompt"), sort_keys=True, default=str))
            texts.append(text)
            rewards.append(sum(values))
        if not texts:
            skipped["file without a readable row"] = (
                skipped.get("file without a readable row", 0) + 1
            )
            continue
        groups = {}
        for p, r in zip(prompts, rewards, strict=True):
            groups.setdefault(p, []).append(r)
        sizes = {len(g) for g in groups.values()}
        r_groups = list(groups.values()) if len(sizes) == 1 and sizes.pop() >= 2 else None
        step = step if not points or step > points[-1].step else points[-1].step + 1
        points.append(EvalPoint(step=step, r_proxy=rewards, completions=texts, r_groups=r_groups))
    if not points:
        raise ValueError(f"{folder}: no readable completion in any file ({skipped})")
    return points, skipped


def _replay(points: list[EvalPoint], config: MonitorConfig) -> list[Reading]:
    return Monitor(config).replay(points)


def _summary(name: str, readings: list[Reading]) -> dict[str, Any]:
    last = readings[-1]
    return {
        "run": name,
        "points": len(readings),
        "alarm": last.alarm,
        "alarm_step": last.alarm_step,
        "readings": [{"step": r.step, **r.to_json()} for r in readings],
    }


def monitor_path(
    path: str | Path,
    config: MonitorConfig | None = None,
    reward_columns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The monitor's readings over every run found at ``path`` (see the module docstring)."""
    path = Path(path)
    config = config or MonitorConfig()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run directory or folder")
    if (path / f"{MONITOR_LOG}.jsonl").is_file():
        return [_summary(path.name, _replay(run_dir_points(path), config))]
    runs = [
        run
        for stage in ("rl", "daa")
        if (path / stage).is_dir()
        for run in sorted((path / stage).iterdir())
        if (run / f"{MONITOR_LOG}.jsonl").is_file()
    ]
    if runs:
        return [
            _summary(f"{p.parent.name}/{p.name}", _replay(run_dir_points(p), config)) for p in runs
        ]
    trl = path / "completions" if (path / "completions").is_dir() else path
    if any(_TRL_FILE.match(p.name) for p in trl.iterdir()):
        points, skipped = trl_points(trl, reward_columns)
        out = _summary(path.name, _replay(points, config))
        out["skipped_rows"] = skipped
        return [out]
    raise ValueError(
        f"{path}: nothing to monitor: expected a goodhart RL run directory with monitor.jsonl "
        "(goodhart rl --monitor), a study directory with rl/*/ or daa/*/monitor.jsonl, or TRL's "
        "completions/completions_NNNNN.parquet"
    )
