"""OpenRLHF: a ``reward_func`` for ``--reward.remote_url /path/to/file.py``, with the monitor inside.

OpenRLHF (``openrlhf/utils/agent.py``, ``SingleTurnAgentExecutor``) loads the file given as
``--reward.remote_url`` when it ends in ``.py`` and calls its module-level
``reward_func(queries, prompts, labels)`` once per sample (a list of one), from worker
threads. ``queries`` are prompt and response decoded together; the function returns
``{"rewards": Tensor (B,), "scores": Tensor (B,), "extra_logs": {name: Tensor (B,)}}``
(``scores`` feed dynamic filtering; ``extra_logs`` are logged, and must carry the same keys
for every sample, as OpenRLHF stacks them).

:func:`make_reward_func` builds such a function around a reward source and a monitor. The
rewards are the proxy's scores (``scores`` the same, as OpenRLHF's reference reward server
sends); ``extra_logs`` carry the last closed evaluation point's ``goodhart/<detector>``,
``goodhart/alarm`` and ``goodhart/could_tell`` (NaN until the first point closes: could not
tell). Points hold ``samples_per_point`` samples each; the first is the reference (the base
policy's samples, when the monitor starts with the run).

A file to point OpenRLHF at (``goodhart_reward.py``)::

    from goodhartlab.integrations.openrlhf import make_reward_func
    from goodhartlab.monitor.live import MonitorConfig

    reward_func = make_reward_func(
        proxy="/path/to/rm", monitor=MonitorConfig(thresholds={"length_drift": 2.0}, alarm=None)
    )

Or point it at ``goodhartlab/integrations/openrlhf_reward.py`` and configure it with
environment variables (see that file).

Log-probs and latents. OpenRLHF hands the reward only ``queries``, ``prompts`` and
``labels`` (the Python file's ``reward_func`` and the HTTP body alike; read from
OpenRLHF/OpenRLHF ``openrlhf/utils/agent.py``): the sampler's ``rollout_log_probs`` stay in
the executor's output and the reference's log-probs are computed later, when the experience
is made. So ``entropy_collapse``, ``kl_acceleration`` and ``proxy_gain_per_kl`` read NaN
(could not tell) here. The latents (``mahalanobis_outliers``) come from our own reward model:
by default the optimized ``RewardModel`` (member 0 of an ensemble), from the pass that scores
(``latents=``, ``integrations.scoring.latent_model``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from goodhartlab.integrations.scoring import MonitoredScorer, load_reward, split_query
from goodhartlab.monitor.live import Monitor, MonitorConfig

__all__ = ["make_reward_func", "openrlhf_reply"]

logger = logging.getLogger("goodhartlab.integrations")


def openrlhf_reply(
    scorer: MonitoredScorer, queries: Any, prompts: Any, labels: Any = None
) -> tuple[list[float | None], dict[str, float]]:
    """Score an OpenRLHF request: ``(rewards (B,), the monitor's metrics)``.

    ``queries``: B texts (prompt + response). ``prompts``: their B prompts, or None; a query
    that does not contain its prompt is scored whole (prompt "") and left out of the monitor
    (counted as ``unsplit:query``). ``labels`` are not read (a proxy has no ground truth).
    """
    if isinstance(queries, str) or not isinstance(queries, Sequence):
        raise ValueError(f"query: expected a list of texts; got {type(queries).__name__}")
    queries = list(queries)
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise ValueError(f"query[{i}]: expected a string; got {type(q).__name__}")
    if prompts is None or isinstance(prompts, str) or len(prompts) != len(queries):
        if prompts is not None:
            scorer.feed.skip("length_mismatch:prompts", len(queries))
        else:
            scorer.feed.skip("missing:prompts", len(queries))
        prompts = [None] * len(queries)
    completions = [split_query(q, p) for q, p in zip(queries, prompts, strict=True)]
    readable = [c is not None for c in completions]
    if not all(readable) and any(p is not None for p in prompts):
        scorer.feed.skip("unsplit:query", readable.count(False))
    scores = scorer.score(
        [p if ok else "" for p, ok in zip(prompts, readable, strict=True)],
        [c if ok else q for q, c, ok in zip(queries, completions, readable, strict=True)],
        monitored=readable,
    )
    return scores, scorer.metrics()


def make_reward_func(
    reward: Any = None,
    monitor: Monitor | MonitorConfig | None = None,
    *,
    proxy: str | None = None,
    ensemble: Sequence[str] | None = None,
    heldout: Any = None,
    aggregator: str = "mean",
    samples_per_point: int = 128,
    device: str = "cpu",
    latents: Any = "auto",
) -> Callable[..., dict[str, Any]]:
    """An OpenRLHF ``reward_func(queries, prompts, labels, **kwargs)`` scoring with ``reward``
    (a source object) or the reward model at ``proxy`` / the ensemble ``ensemble``, and
    monitoring what it scores. ``heldout``: a source object or a reward-model directory.
    ``latents``: the reward model whose last hidden state the monitor reads
    (:func:`~goodhartlab.integrations.scoring.latent_model`). The returned function has
    ``.scorer`` (its :class:`MonitoredScorer`)."""
    if reward is None:
        reward = load_reward(proxy, ensemble, device=device)
    if isinstance(heldout, str):
        heldout = load_reward(heldout, device=device)
    scorer = MonitoredScorer(
        reward, monitor, heldout=heldout, aggregator=aggregator,
        samples_per_point=samples_per_point, latents=latents,
    )  # fmt: skip

    def reward_func(queries, prompts, labels=None, **kwargs) -> dict[str, Any]:
        scores, metrics = openrlhf_reply(scorer, queries, prompts, labels)
        r = torch.tensor([float("nan") if s is None else s for s in scores], dtype=torch.float32)
        n = r.shape[0]
        return {
            "rewards": r,
            "scores": r.clone(),
            "extra_logs": {k: torch.full((n,), v, dtype=torch.float32) for k, v in metrics.items()},
        }

    reward_func.scorer = scorer
    return reward_func
