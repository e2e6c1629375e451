"""Scoring text with goodhart reward sources and feeding the monitor: what verl, OpenRLHF and
``goodhart serve`` share (TRL's wrapper uses :func:`score_with`).

A reward is given as an object (a :class:`~goodhartlab.rewards.RewardModel`,
:class:`~goodhartlab.rewards.Ensemble`, :class:`~goodhartlab.rewards.ProgrammaticReward`, a
testbed's gold, or a callable ``f(prompts, completions) -> B numbers``), or loaded from
directories by :func:`load_reward` through the registry ``reward_source`` (``reward_model``
for one directory, ``ensemble`` for several or for an ensemble directory), as ``goodhart rl
--proxy / --ensemble`` loads them.

The monitor's latents (the reward model's last hidden state, for ``mahalanobis_outliers``)
come from our own reward model, since no engine hands them to a reward hook:
:func:`latent_model` picks it (by default the optimized :class:`~goodhartlab.rewards.RewardModel`,
member 0 of an ensemble, as ``goodhart rl --monitor`` does) and :func:`score_with_latents`
scores with it in the same forward pass when it is the optimized reward.
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

__all__ = [
    "LatentScorer",
    "MonitoredScorer",
    "latent_model",
    "load_reward",
    "score_with",
    "score_with_latents",
    "split_query",
]

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


def latent_model(reward: Any, latents: Any = "auto") -> Any:
    """The reward model whose last hidden state the monitor reads as latents (InfoRM's).

    ``latents``: ``"auto"``, the optimized reward when it is a goodhart ``RewardModel``
    (member 0 of an ``Ensemble``; None for any other source, e.g. a rule), as
    ``optimize.monitoring.resolve_sources`` picks it for ``goodhart rl --monitor``; None: no
    latents; or an object with ``score_with_latents(prompts, completions) -> (rewards (B,),
    hidden (B, D))`` (a ``RewardModel``, e.g. a held-out one).
    """
    if isinstance(latents, str):
        if latents != "auto":
            raise ValueError(f"latents: expected 'auto', None or a reward model; got {latents!r}")
        from goodhartlab.optimize.monitoring import resolve_sources

        return resolve_sources(reward, None)["latents"]
    if latents is not None and not callable(getattr(latents, "score_with_latents", None)):
        raise ValueError(
            f"latents: expected a reward model with score_with_latents; got {type(latents).__name__}"
        )
    return latents


def score_with_latents(
    reward: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    aggregator: str = "mean",
    latents: Any = None,
) -> tuple[list[float | None], np.ndarray | None, np.ndarray | None]:
    """:func:`score_with` and the latents of ``latents`` (a :func:`latent_model`; None: none):
    ``(r_proxy (B,), r_members (M, B) | None, latents (B, D) | None)``. When ``latents`` is the
    optimized reward itself, one forward pass gives both."""
    if latents is None:
        return (*score_with(reward, prompts, completions, aggregator), None)
    prompts, completions = list(prompts), list(completions)
    if latents is reward:
        r, h = reward.score_with_latents(prompts, completions)
        return [float(x) for x in r.tolist()], None, h.detach().cpu().numpy()
    scores, members = score_with(reward, prompts, completions, aggregator)
    _, h = latents.score_with_latents(prompts, completions)
    return scores, members, h.detach().cpu().numpy()


class LatentScorer:
    """Scores with a reward and gives the monitor's latents (:func:`latent_model`); a latent
    model that cannot give them (e.g. no per-token score head) is dropped, with a warning,
    and the scores computed without it."""

    def __init__(self, reward: Any, latents: Any = "auto", aggregator: str = "mean"):
        self.reward, self.aggregator = reward, aggregator
        self.model = latent_model(reward, latents)

    def score(
        self, prompts: Sequence[str], completions: Sequence[str]
    ) -> tuple[list[float | None], np.ndarray | None, np.ndarray | None]:
        """``(r_proxy (B,), r_members (M, B) | None, latents (B, D) | None)``; the reward's
        own errors propagate."""
        if self.model is not None:
            try:
                return score_with_latents(
                    self.reward, prompts, completions, self.aggregator, self.model
                )
            except ValueError:
                self._drop()
        return (*score_with(self.reward, prompts, completions, self.aggregator), None)

    def latents_only(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray | None:
        """The latents alone (B, D), for a reward scored elsewhere; None without a model."""
        if self.model is None:
            return None
        try:
            _, h = self.model.score_with_latents(list(prompts), list(completions))
        except ValueError:
            self._drop()
            return None
        return h.detach().cpu().numpy()

    def _drop(self) -> None:
        logger.warning(
            "goodhart monitor: %s gives no latents; monitoring without them",
            type(self.model).__name__,
            exc_info=True,
        )
        self.model = None


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
        latents: the reward model whose last hidden state the monitor reads
            (:func:`latent_model`; default ``"auto"``: the optimized reward model's). A model
            that cannot give them (no per-token score head) is dropped with a warning.
    """

    def __init__(
        self,
        reward: Any,
        monitor: Monitor | MonitorConfig | None = None,
        *,
        heldout: Any = None,
        aggregator: str = "mean",
        samples_per_point: int | None = 128,
        latents: Any = "auto",
    ):
        self.reward = reward
        self.heldout = heldout
        self.aggregator = aggregator
        self.latents = LatentScorer(reward, latents, aggregator)
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
        logp: Sequence[Sequence[float]] | None = None,
        logp_ref: Sequence[Sequence[float]] | None = None,
    ) -> list[float | None]:
        """The rewards of B (prompt, completion) pairs; the rows where ``monitored`` is
        False (e.g. a query the caller could not split into prompt and completion) are scored
        but left out of the monitor. ``group_ids`` (default: the prompts), ``logp`` and
        ``logp_ref`` (per-token log-probs of each completion under the policy and the
        reference, where the engine gives them) as in :meth:`MonitorFeed.add`."""
        with self._lock:
            scores, members, latents = self.latents.score(prompts, completions)
            self._record(
                prompts, completions, scores, members, monitored, step, group_ids,
                completion_ids, logp, logp_ref, latents,
            )  # fmt: skip
            return scores

    def _record(
        self,
        prompts,
        completions,
        scores,
        members,
        monitored,
        step,
        group_ids,
        completion_ids,
        logp,
        logp_ref,
        latents,
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
                logp=pick(None if logp is None else list(logp)),
                logp_ref=pick(None if logp_ref is None else list(logp_ref)),
                latents=pick(None if latents is None else list(latents)),
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
