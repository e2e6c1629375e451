"""A reward file for OpenRLHF (``--reward.remote_url`` pointed at this file), set up from the
environment. Its path: ``python -c "import goodhartlab.integrations.openrlhf_reward as m;
print(m.__file__)"``.

- ``GOODHART_PROXY``: a reward-model directory, or ``GOODHART_ENSEMBLE``: member
  directories (or one ensemble directory), separated by ``,``;
- ``GOODHART_AGGREGATOR`` (default ``mean``), ``GOODHART_HELDOUT`` (a reward-model directory
  the policy is not trained on), ``GOODHART_DEVICE`` (default ``cpu``);
- ``GOODHART_MONITOR``: a JSON or YAML file of a ``MonitorConfig`` (default: the default
  config), ``GOODHART_SAMPLES_PER_POINT`` (default 128).

The reward model is loaded on the first call, not on import.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_func = None


def _monitor_config():
    from goodhartlab.monitor.live import MonitorConfig

    path = os.environ.get("GOODHART_MONITOR")
    if not path:
        return MonitorConfig()
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    try:
        return MonitorConfig(**(yaml.safe_load(text) or {}))
    except Exception as e:
        raise ValueError(f"GOODHART_MONITOR={path}: not a monitor config ({e})") from None


def _build():
    from goodhartlab.integrations.openrlhf import make_reward_func

    ensemble = os.environ.get("GOODHART_ENSEMBLE")
    return make_reward_func(
        None,
        _monitor_config(),
        proxy=os.environ.get("GOODHART_PROXY") or None,
        ensemble=[p for p in ensemble.split(",") if p] if ensemble else None,
        heldout=os.environ.get("GOODHART_HELDOUT") or None,
        aggregator=os.environ.get("GOODHART_AGGREGATOR", "mean"),
        samples_per_point=int(os.environ.get("GOODHART_SAMPLES_PER_POINT", "128")),
        device=os.environ.get("GOODHART_DEVICE", "cpu"),
    )


def reward_func(queries, prompts, labels=None, **kwargs) -> dict[str, Any]:
    """OpenRLHF's reward function: see :func:`goodhartlab.integrations.openrlhf.make_reward_func`."""
    global _func
    with _lock:
        if _func is None:
            _func = _build()
    return _func(queries, prompts, labels, **kwargs)
