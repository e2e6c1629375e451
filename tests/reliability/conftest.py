"""The small study the kill / resume tests run (local workers and Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tiny_study import tiny_study_config

#: Proxies, best-of-n, two RL runs checkpointed every 2 steps, and one DAA run.
TINY_STUDY = tiny_study_config(
    rl={
        "steps": 6,
        "checkpoint_every": 2,
        "methods": [{"name": "single"}, {"name": "wco", "aggregator": "wco"}],
    },
    daa={"runs": [{"name": "dpo", "loss": "dpo", "beta": 0.1}]},
)


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
