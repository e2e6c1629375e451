"""TRL: a reward-function wrapper that feeds the monitor, and a callback that logs and stops.

TRL's GRPOTrainer (and RLOOTrainer) call each reward function as
``f(prompts=, completions=, completion_ids=, **kwargs) -> list[float | None]`` (TRL 1.16,
``GRPOTrainer._calculate_rewards``), the dataset's columns, ``trainer_state``,
``log_extra`` and ``log_metric`` among the kwargs. Callbacks never see the completions, so
:class:`MonitoredReward` records them: it scores with the inner reward, hands prompts,
completion texts and ids and the scores to a :class:`~goodhartlab.integrations.feed.MonitorFeed`
(one evaluation point per training step, ``trainer_state.global_step``; step 0, sampled
before any update, is the reference) and returns the inner reward's scores unchanged.

:class:`GoodhartCallback` closes a step's point at ``on_step_end`` (no more rows of it can
come), sets ``control.should_training_stop`` on an alarm when asked to, and skips the reward
calls of evaluation (between ``on_step_end`` and the next ``on_step_begin``), so that
held-out prompts do not mix into the training points.

``goodhart/<detector>``, ``goodhart/alarm``, ``goodhart/could_tell`` (and ``step``, ``rows``,
``bad_rows``) reach TRL's logs through ``log_metric`` at the next reward call, one update
late: TRL's log line of step s (after s updates) holds the rewards sampled at
``global_step`` s − 1 and the reading of the point sampled at s − 2 (``goodhart/step`` says
which).
The reading of the last point is in ``MonitoredReward.feed.readings`` and in the log (a
warning on an alarm).

Log-probs and latents. TRL 1.16 computes the policy's and the reference's per-token
log-probs of a batch (``old_per_token_logps`` when generation and optimization are out of
step, ``ref_per_token_logps`` when ``beta != 0``) before it calls the reward functions, but
does not pass them: a reward function gets the dataset's columns, ``trainer_state``,
``log_extra``, ``log_metric`` (and ``environments``), and callbacks get no batch at all
(``on_log`` sees only the scalars ``kl``, ``entropy``, means over the logged steps). So:

- ``latents`` (``mahalanobis_outliers``) come from our own reward model: by default the
  optimized one when it is a goodhart ``RewardModel`` (member 0 of an ``Ensemble``), from
  the same forward pass that scores (``latents=``: another ``RewardModel``, or None);
- ``logp`` / ``logp_ref`` (``entropy_collapse``; with both, the KL of ``kl_acceleration`` and
  ``proxy_gain_per_kl``) are read from the reward call's kwargs when present, one list of
  per-token values per completion. The supported way to put them there is TRL's
  (experimental) ``rollout_func``: every key of its output other than ``prompt_ids``,
  ``completion_ids`` and ``logprobs`` is forwarded to the reward functions, so a rollout
  that returns ``"logp": logprobs`` (the sampler's per-token log-probs) and, if it computes
  them, ``"logp_ref"`` feeds them to the monitor. Without them those detectors read NaN
  (could not tell), the others are unaffected.

>>> from goodhartlab.monitor.live import MonitorConfig
>>> words = lambda prompts, completions: [float(len(c.split())) for c in completions]
>>> reward = MonitoredReward(words, MonitorConfig(detectors=["length_drift"], alarm=None,
...                                                thresholds={"length_drift": 2.0}))
>>> reward(prompts=["q", "q"], completions=["a b", "a b c"], completion_ids=[[1, 2], [1, 2, 3]])
[2.0, 3.0]
>>> reward.__name__
'goodhart_words'
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from transformers import TrainerCallback

from goodhartlab.integrations.feed import FeedReading, MonitorFeed, completion_text
from goodhartlab.integrations.scoring import LatentScorer, score_with
from goodhartlab.monitor.live import Monitor, MonitorConfig

__all__ = ["GoodhartCallback", "MonitoredReward"]

logger = logging.getLogger("goodhartlab.integrations")


def _trl_style(fn: Callable) -> bool:
    """Whether ``fn`` is a TRL reward function (takes ``completion_ids`` or ``**kwargs``)
    rather than a goodhart source ``f(prompts, completions)``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD or p.name == "completion_ids" for p in params)


class MonitoredReward:
    """A TRL reward function that scores with ``reward`` and feeds a monitor.

    Args:
        reward: a goodhart reward source (RewardModel, Ensemble, ProgrammaticReward, a
            testbed's gold), a plain ``f(prompts, completions) -> B numbers``, or a TRL reward
            function (``f(prompts, completions, completion_ids, **kwargs)``, called as TRL
            calls it, its output returned as is).
        monitor: a :class:`Monitor` or a :class:`MonitorConfig` (None: the default config).
        heldout: an optional reward source the policy is not trained on (scored for
            ``heldout_divergence`` only; its scores never reach TRL).
        aggregator: how an ensemble's members are combined into the reward.
        name: the reward's name in TRL's logs (default ``goodhart_<reward's name>``).
        latents: the reward model whose last hidden state the monitor reads
            (``integrations.scoring.latent_model``; default ``"auto"``: the optimized one).
    """

    def __init__(
        self,
        reward: Any,
        monitor: Monitor | MonitorConfig | None = None,
        *,
        heldout: Any = None,
        aggregator: str = "mean",
        name: str | None = None,
        latents: Any = "auto",
    ):
        from goodhartlab.rewards.pipeline import source_name

        self.reward = reward
        self.latents = LatentScorer(reward, latents, aggregator)
        self.heldout = heldout
        self.aggregator = aggregator
        self.feed = MonitorFeed(monitor)
        self.__name__ = name or f"goodhart_{source_name(reward)}"
        self.in_step: bool | None = None
        """Set by :class:`GoodhartCallback`: False between steps (evaluation); None
        without a callback (every call is fed)."""
        self.eval_rows = 0
        """Rows of reward calls made outside a training step (evaluation), not fed."""
        self._unlogged: list[FeedReading] = []
        self._calls = 0

    @property
    def readings(self) -> list[FeedReading]:
        return self.feed.readings

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] | None = None,
        completion_ids: Sequence[Sequence[int]] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        """Score the batch with the inner reward (its errors are its own and propagate);
        record it for the monitor (which never raises); return the scores unchanged."""
        texts = None if completions is None else [completion_text(c) for c in completions]
        members = latents = None
        if _trl_style(getattr(self.reward, "score", self.reward)) and not callable(
            getattr(self.reward, "score_members", None)
        ):
            fn = getattr(self.reward, "score", self.reward)
            scores = fn(
                prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs
            )
            r_proxy = scores
        else:
            ptexts = [completion_text(p) or "" for p in prompts or []]
            safe = [t if t is not None else "" for t in texts or []]
            scores, members, latents = self.latents.score(ptexts, safe)
            r_proxy = [
                s if t is not None else None for s, t in zip(scores, texts or [], strict=False)
            ]
        self._record(prompts, texts, completion_ids, r_proxy, members, latents, kwargs)
        return scores

    def _record(self, prompts, texts, completion_ids, r_proxy, members, latents, kwargs) -> None:
        try:
            self._calls += 1
            if self.in_step is False:
                self.eval_rows += len(texts or [])
                return
            state = kwargs.get("trainer_state")
            step = getattr(state, "global_step", None)
            if not isinstance(step, int):
                step = None
            heldout = None
            ptexts = [completion_text(p) or "" for p in prompts or []]
            if self.heldout is not None and texts:
                heldout, _ = score_with(self.heldout, ptexts, [t or "" for t in texts])
            if latents is None and texts:  # a TRL reward function: the latents apart
                latents = self.latents.latents_only(ptexts, [t or "" for t in texts])
            if not isinstance(r_proxy, list):
                r_proxy = list(r_proxy) if r_proxy is not None else None
            closed = self.feed.add(
                prompts, texts, completion_ids=completion_ids, r_proxy=r_proxy,
                r_members=members, r_heldout=heldout, step=step, latents=latents,
                logp=kwargs.get("logp"), logp_ref=kwargs.get("logp_ref"),
            )  # fmt: skip
            self._unlogged += closed
            self._log(kwargs.get("log_metric"))
        except Exception:  # the monitor must never stop the run it watches
            logger.exception("goodhart monitor: could not record a reward call")

    def _log(self, log_metric: Callable[[str, float], None] | None) -> None:
        if not callable(log_metric):
            return
        for reading in self._unlogged:
            for key, value in reading.metrics().items():
                log_metric(key, value)
        self._unlogged.clear()

    def close_step(self, global_step: int) -> list[FeedReading]:
        """Close the point of every step below ``global_step`` (see :class:`GoodhartCallback`)."""
        closed = self.feed.close_before(global_step)
        self._unlogged += closed
        return closed

    def callback(self, stop_on_alarm: bool | None = None) -> GoodhartCallback:
        """The :class:`GoodhartCallback` of this reward."""
        return GoodhartCallback(self, stop_on_alarm=stop_on_alarm)


class GoodhartCallback(TrainerCallback):
    """Closes each step's evaluation point, stops on an alarm when asked to.

    Args:
        reward: the :class:`MonitoredReward` passed to the trainer's ``reward_funcs``.
        stop_on_alarm: set ``control.should_training_stop`` once the alarm is raised
            (default: the monitor config's ``stop_on_alarm``).
    """

    def __init__(self, reward: MonitoredReward, stop_on_alarm: bool | None = None):
        if not isinstance(reward, MonitoredReward):
            raise ValueError(
                f"GoodhartCallback: expected the MonitoredReward given to the trainer; got "
                f"{type(reward).__name__}"
            )
        self.reward = reward
        config = reward.feed.monitor.config
        self.stop_on_alarm = config.stop_on_alarm if stop_on_alarm is None else stop_on_alarm
        self.stopped_at: int | None = None
        """The global step at which this callback stopped training (None: it did not)."""

    def on_step_begin(self, args, state, control, **kwargs):
        self.reward.in_step = True
        return control

    def on_step_end(self, args, state, control, **kwargs):
        self.reward.in_step = False
        try:
            closed = self.reward.close_step(state.global_step)
        except Exception:
            logger.exception("goodhart monitor: could not close the step's point")
            return control
        if self.stop_on_alarm and any(r.alarm for r in closed) and self.stopped_at is None:
            last = closed[-1]
            logger.warning(
                "goodhart monitor: stopping training at step %d: reward-hacking alarm raised "
                "at step %s", state.global_step, last.alarm_step,
            )  # fmt: skip
            self.stopped_at = state.global_step
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        try:
            self.reward.close_step(math.inf)
        except Exception:
            logger.exception("goodhart monitor: could not close the last point")
        return control
