"""Scoring text with goodhart reward sources and feeding the monitor: what verl, OpenRLHF and
``goodhart serve`` share (TRL's wrapper uses :func:`score_with`).

A reward is given as an object (a :class:`~goodhartlab.rewards.RewardModel`,
:class:`~goodhartlab.rewards.Ensemble`, :class:`~goodhartlab.rewards.ProgrammaticReward`, a
testbed's gold, or a callable ``f(prompts, completions) -> B numbers``), or loaded from
directories by :func:`load_reward` through the registry ``reward_source`` (``reward_model``
for one directory, ``ensemble`` for several or for an ensemble directory), as ``goodhart rl
--proxy / --ensemble`` loads them.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from goodhartlab.integrations.feed import FeedReading, MonitorFeed
from goodhartlab.monitor.live import Monitor, MonitorConfig

__all__ = ["MonitoredScorer", "load_reward", "score_with", "split_query"]

logger = logging.getLogger("goodhartlab.integrations")


def load_reward(
    proxy: str | None = None, ensemble: Sequence[str] | None = None, device: str = "cpu"
) -> Any:
    """The reward source of a reward-model directory (``proxy``) or of an ensemble
    (``ensemble``: member directories, or one ensemble directory); exactly one of them."""
    from goodhartlab.rewards import REWARD_SOURCES

    if (proxy is None) == (not ensemble):
        raise ValueError("give exactly one of a proxy directory or ensemble directories")
    if proxy is not None:
        return REWARD_SOURCES["reward_model"](str(proxy), device=device)
    return REWARD_SOURCES["ensemble"]([str(p) for p in ensemble], device=device)


def score_with(
    reward: Any, prompts: Sequence[str], completions: Sequence[str], aggregator: str = "mean"
) -> tuple[list[float | None], np.ndarray | None]:
    """Score texts with a reward source: ``(r_proxy (B,), r_members (M, B) | None)``.

    An ensemble (anything with ``score_members``) is aggregated with ``aggregator``; a source
    with ``score`` or a plain callable ``f(prompts, completions)`` is called as is. Values are
    passed on as the source gives them (a NaN stays NaN: the monitor counts it, the engine
    decides what a NaN reward does); the source's own errors propagate.
    """
    prompts, completions = list(prompts), list(completions)
    if callable(getattr(reward, "score_members", None)):
        from goodhartlab.core.aggregate import get_aggregator

        members = torch.as_tensor(reward.score_members(prompts, completions), dtype=torch.float32)
        r = get_aggregator(aggregator)(members)
        return [float(x) for x in r.detach().cpu().tolist()], members.detach().cpu().numpy()
    fn = reward.score if callable(getattr(reward, "score", None)) else reward
    out = fn(prompts, completions)
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu().tolist()
    return [None if x is None else float(x) for x in out], None


def split_query(query: Any, prompt: Any) -> str | None:
    """The completion of an OpenRLHF ``query`` (prompt and response decoded together): the
    text after ``prompt``; None when the query does not contain the prompt (or either is not
    text)."""
    if not isinstance(query, str) or not isinstance(prompt, str):
        return None
    if query.startswith(prompt):
        return query[len(prompt) :]
    i = query.rfind(prompt) if prompt else -1
    return query[i + len(prompt) :] if i >= 0 else None


class MonitoredScorer:
    """A reward source with a monitor attached: score a batch, feed the monitor, never let
    the monitor break the scoring.

    Args:
        reward: the optimized reward (module docstring).
        monitor: a :class:`Monitor` or :class:`MonitorConfig` (None: the default config).
        heldout: a reward source the policy is not trained on (for ``heldout_divergence``).
        aggregator: how an ensemble's members become the reward.
        samples_per_point: rows per evaluation point when calls carry no step.
    """

    def __init__(
        self,
        reward: Any,
        monitor: Monitor | MonitorConfig | None = None,
        *,
        heldout: Any = None,
        aggregator: str = "mean",
        samples_per_point: int | None = 128,
    ):
        self.reward = reward
        self.heldout = heldout
        self.aggregator = aggregator
        self.feed = MonitorFeed(monitor, samples_per_point=samples_per_point)
        self._lock = threading.Lock()

    def score(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        *,
        monitored: Sequence[bool] | None = None,
        step: int | None = None,
        group_ids: Sequence[Any] | None = None,
        completion_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float | None]:
        """The rewards of B (prompt, completion) pairs; the rows where ``monitored`` is
        False (e.g. a query the caller could not split into prompt and completion) are scored
        but left out of the monitor. ``group_ids`` (default: the prompts) as in
        :meth:`MonitorFeed.add`."""
        with self._lock:
            scores, members = score_with(self.reward, prompts, completions, self.aggregator)
            self._record(
                prompts, completions, scores, members, monitored, step, group_ids, completion_ids
            )
            return scores

    def _record(
        self, prompts, completions, scores, members, monitored, step, group_ids, completion_ids
    ):
        try:
            keep = [i for i in range(len(completions)) if monitored is None or monitored[i]]
            if not keep:
                return
            pick = lambda xs: None if xs is None else [xs[i] for i in keep]  # noqa: E731
            texts, ptexts = pick(list(completions)), pick(list(prompts))
            heldout = None
            if self.heldout is not None:
                heldout, _ = score_with(self.heldout, ptexts, texts)
            self.feed.add(
                ptexts, texts, r_proxy=pick(scores),
                r_members=None if members is None else members[:, keep], r_heldout=heldout,
                group_ids=pick(None if group_ids is None else list(group_ids)), step=step,
                completion_ids=pick(None if completion_ids is None else list(completion_ids)),
            )  # fmt: skip
        except Exception:
            logger.exception("goodhart monitor: could not record a batch")

    @property
    def last(self) -> FeedReading | None:
        return self.feed.last

    def metrics(self, prefix: str = "goodhart/") -> dict[str, float]:
        """The last closed point's metrics (:meth:`FeedReading.metrics`), with the same keys
        (NaN values: could not tell) before the first point closes."""
        last = self.feed.last
        if last is not None:
            return last.metrics(prefix)
        out = dict.fromkeys(self.feed.metric_names(prefix), math.nan)
        out[f"{prefix}alarm"] = 0.0
        out[f"{prefix}could_tell"] = 0.0
        return out
