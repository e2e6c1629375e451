"""A study row for Nash-MP against a pairwise preference model trained beside the proxies
(issue 18 item 8): the variant is trained by the proxies stage and loaded as a pairwise model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from goodhartlab.experiments.study import StudyConfig, run_study, variant_bon_proxies
from tiny_study import tiny_study_config

VARIANTS = {"pw": {"rm": {"objective": "pairwise"}, "seeds": [0]}}


def _config(tmp_path, methods, bon=False):
    raw = tiny_study_config(rl={"methods": methods}, daa=None, bon=bon)
    raw["proxies"] = {**raw["proxies"], "variants": VARIANTS}
    return StudyConfig.model_validate({**raw, "cache_dir": str(tmp_path / "cache")})


def test_a_pairwise_variant_is_refused_by_an_algorithm_that_needs_scores(tmp_path):
    with pytest.raises(ValueError, match=r"pw.*pairwise.*nash_mp.*'grpo'"):
        _config(tmp_path, [{"name": "grpo-pw", "proxy": "pw"}])


def test_nash_mp_optimizes_the_pairwise_variant_of_the_study(tmp_path):
    config = _config(tmp_path, [{"name": "nashmp-pw", "algorithm": "nash_mp", "proxy": "pw"}])
    run_dir = run_study(config, tmp_path / "run", progress=False, workers=1)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    info = manifest["stages"]["proxies"]["result"]
    (pw_dir,) = info["variants"]["pw"]["members"]
    assert json.loads((Path(pw_dir) / "goodhart_rm.json").read_text())["kind"] == "pairwise"
    run_config = json.loads((run_dir / "rl" / "nashmp-pw" / "summary.json").read_text())
    assert run_config["steps"] == 4
    rows = [json.loads(x) for x in (run_dir / "rl" / "nashmp-pw" / "metrics.jsonl").open()]
    evals = [r for r in rows if "gold" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]
    # The pairwise model has no per-completion score: best-of-n leaves it out.
    assert variant_bon_proxies(config.proxies, info) == {}
