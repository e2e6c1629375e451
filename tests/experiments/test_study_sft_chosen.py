"""A study RL method with the SFT term on chosen data (sft_source: chosen): the config takes
the row, and its run's targets are the chosen sides of the proxies' noisy training pairs."""

from __future__ import annotations

import json

import pytest
import yaml

from goodhartlab.data import read_pairs
from goodhartlab.experiments.study import StudyConfig, load_config, run_study
from goodhartlab.optimize.rundir import prompts_hash, read_jsonl
from tiny_study import tiny_study_config

ROW = {"name": "sft-chosen", "sft_coef": 0.3, "sft_source": "chosen"}


def test_a_chosen_sft_row_needs_its_coefficient():
    c = load_config(None, ["rl.methods=[{name: s, sft_coef: 0.3, sft_source: chosen}]"])
    cfg = c.rl.run_config(c.rl.methods[0], seed=0, device="cpu", max_new_tokens=8)
    assert cfg.sft_source == "chosen" and cfg.sft_coef == 0.3
    with pytest.raises(ValueError, match=r"methods\.0 \(s\): sft_source: 'chosen'"):
        load_config(None, ["rl.methods=[{name: s, sft_source: chosen}]"])


def test_the_chosen_sft_run_trains_on_the_proxies_pairs(tmp_path):
    tiny = tiny_study_config(rl={"steps": 2, "methods": [ROW]}, daa=None, bon=False)
    config = StudyConfig.model_validate({**tiny, "cache_dir": str(tmp_path / "cache")})
    run_dir = run_study(config, tmp_path / "run", progress=False, workers=1)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    pairs = read_pairs(manifest["stages"]["proxies"]["result"]["pairs"])
    assert len(pairs) == tiny["proxies"]["pairs"]
    saved = yaml.safe_load((run_dir / "rl" / "sft-chosen" / "config.yaml").read_text())
    # The run's targets are the labelled-chosen side of exactly those pairs, in file order.
    rows = [json.dumps([p.prompt, p.chosen]) for p in pairs]
    assert saved["identity"]["sft_pairs"] == {"count": len(rows), "sha256": prompts_hash(rows)}
    assert saved["config"]["sft_source"] == "chosen" and saved["config"]["sft_coef"] == 0.3
    train = read_jsonl(run_dir / "rl" / "sft-chosen" / "train.jsonl")
    assert len(train) == 2 and all(r["sft_nll"] > 0 for r in train)
    # toy_text's pairs are drawn from the training prompts: most of a step's prompts have some.
    assert all(0.0 <= r["sft_own_prompts"] <= 1.0 for r in train)
