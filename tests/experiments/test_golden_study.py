"""The refactor of issue 12 must not change a number: a tiny study's metrics.jsonl against the
one recorded on main before it (``data/golden_tiny_study.metrics.jsonl``, commit 29fa80e).

The study covers every part the refactor moves: best-of-n over every aggregator, GRPO against
the single proxy and WCO / UWO ensembles, PAR shaping, no KL penalty, and offline DPO and IPO.
Integers and strings must match exactly; floats to 1e-4 relative (the record is byte-identical
on the machine it was made on; the slack absorbs another CPU's rounding: on an AVX-512 machine
the float32 KL sums of the 4 RL steps differ by up to 4e-5 relative, measured 2026-12-07, while
a change of the computation moves them by far more). ``d`` = sqrt(KL) at step 0, where KL is
rounding noise around 0 (|KL| < 1e-6), is compared to 1e-3 absolute (the square root of that
noise), and any float to 1e-5 absolute.

A change that is *meant* to change the numbers re-records the file with
``GOODHART_RECORD_GOLDEN=1 python -m pytest tests/experiments/test_golden_study.py`` and says
so in its commit message.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from goodhartlab.experiments.study import StudyConfig, run_study
from tiny_study import tiny_study_config

RECORD = Path(__file__).parent / "data" / "golden_tiny_study.metrics.jsonl"

GOLDEN = tiny_study_config(
    rl={
        "methods": [
            {"name": "single"},
            {"name": "wco", "aggregator": "wco"},
            {"name": "uwo", "aggregator": "uwo", "aggregator_params": {"lam": 0.1}},
            {"name": "par", "shaping": "par"},
            {"name": "nokl", "kl_coef": 0.0},
        ]
    },
    daa={
        "runs": [
            {"name": "dpo", "loss": "dpo", "beta": 0.1},
            {"name": "ipo", "loss": "ipo", "beta": 0.5},
        ]
    },
)


def _same(a, b, where: str) -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, int | float) and isinstance(b, int | float), where
        abs_tol = 1e-3 if where.endswith(".d") and abs(b) < 1e-3 else 1e-5
        assert math.isclose(a, b, rel_tol=1e-4, abs_tol=abs_tol), f"{where}: {a} != {b} (recorded)"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r} (recorded)"


@pytest.mark.parametrize("workers", [1, 2])
def test_tiny_study_metrics_equal_the_record_made_before_the_refactor(tmp_path, workers):
    # workers=2: the testbed's models, the pairs, the members, the pool's chunks, its scores
    # and the RL and DAA runs are built in two spawned processes, from an empty cache, and
    # must give the record made when every stage ran in one process.
    config = StudyConfig.model_validate({**GOLDEN, "cache_dir": str(tmp_path / "cache")})
    run_dir = run_study(config, tmp_path / "run", progress=False, workers=workers)
    text = (run_dir / "metrics.jsonl").read_text()
    if os.environ.get("GOODHART_RECORD_GOLDEN") == "1" and workers == 1:
        RECORD.write_text(text)
    got = [json.loads(line) for line in text.splitlines()]
    want = [json.loads(line) for line in RECORD.read_text().splitlines()]
    assert len(got) == len(want) == 61
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        _same(g, w, f"line {i + 1} ({w.get('kind')} {w.get('method')})")
