"""The small study the kill / resume tests run (local workers and Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

#: Proxies, best-of-n, two RL runs checkpointed every 2 steps, and one DAA run.
TINY_STUDY = {
    "testbed_options": {
        "policy_steps": 40,
        "pretrain_steps": {"small": 40, "medium": 40, "large": 2},
        "pretrain_batch_size": 16,
        "tokenizer_corpus": 400,
        "max_new_tokens": 24,
    },
    "proxies": {"pairs": 120, "seeds": [0, 1], "epochs": 1},
    "bon": {"pool_size": 8, "prompts": 6, "n_boot": 50},
    "rl": {
        "steps": 6,
        "eval_every": 2,
        "checkpoint_every": 2,
        "prompts_per_step": 2,
        "group_size": 2,
        "eval_prompts": 4,
        "lr": 1e-3,
        "methods": [{"name": "single"}, {"name": "wco", "aggregator": "wco"}],
    },
    "daa": {
        "enabled": True,
        "max_pairs": 16,
        "batch_size": 8,
        "eval_points_in_first_epoch": [0.5],
        "eval_prompts": 4,
        "lr": 1e-3,
        "runs": [{"name": "dpo", "loss": "dpo", "beta": 0.1}],
    },
}


@pytest.fixture(scope="session")
def tiny_study():
    """``tiny_study(directory, daa=True) -> path``: the study's YAML written there, its cache
    in ``directory/cache``."""

    def write(directory: Path, daa: bool = True) -> Path:
        config = {**TINY_STUDY, "cache_dir": str(directory / "cache")}
        if not daa:
            config.pop("daa")
        path = directory / "tiny.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return write
