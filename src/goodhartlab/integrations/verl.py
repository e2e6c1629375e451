"""verl: a ``compute_score`` with the monitor inside, and a batch reward manager for the
group detectors.

verl (``verl/utils/reward_score/__init__.py``, ``verl/workers/reward_manager/``; read from
its repository, it is not installed here) calls a custom reward function, configured as
``custom_reward_function.path=FILE custom_reward_function.name=compute_score``, once per
sample as ``compute_score(data_source, solution_str, ground_truth, extra_info=None,
**kwargs)``; it may return a float or a dict with ``"score"`` whose other keys become
``reward_extra_info`` (logged). verl does not pass the prompt: put it in the dataset's
``extra_info["prompt"]`` for a reward model that reads it (else it scores the response
alone, prompt "").

- :func:`make_compute_score` (and this module's ``compute_score``, set up from the
  ``GOODHART_*`` variables of :mod:`goodhartlab.integrations.openrlhf_reward`): scores with a
  proxy, returns ``{"score": r, "goodhart/<detector>": ..., "goodhart/alarm": ...,
  "goodhart/could_tell": ...}`` from the last closed point (``samples_per_point`` samples
  each; the same keys every call).
- :class:`GoodhartRewardManager`: a reward manager with verl's ``AbstractRewardManager``
  signature, loaded with ``reward_manager.source=importlib reward_manager.module.path=THIS_FILE
  reward_manager.name=GoodhartRewardManager``. It sees the whole batch: one evaluation point
  per call (``meta_info["global_steps"]`` when verl sets it), token ids for the drift
  detectors, and verl's GRPO groups (``non_tensor_batch["uid"]``) for
  ``group_variance_collapse``. Scores come from ``goodhart_proxy`` / ``goodhart_ensemble``
  (reward-model directories, batched) when given in ``reward_kwargs``, else from verl's
  ``compute_score`` per sample (rule-based rewards).

Log-probs and latents. ``compute_score`` gets one sample's text and the dataset's fields,
nothing of the policy. A reward manager gets the batch (``DataProto``) as it is when
``RayPPOTrainer.fit`` computes the reward (read from volcengine/verl, ``ray_trainer.py``):
after generation and before ``old_log_prob`` and ``ref``, so the actor's recomputed
log-probs (``old_log_probs``) and the reference's (``ref_log_prob``) are not in it yet. What
can be there is ``rollout_log_probs``, the inference engine's log-probs of the sampled
tokens, when the rollout is asked for them (``actor_rollout_ref.rollout.calculate_log_probs=
True``). :class:`GoodhartRewardManager` reads the policy's per-token log-probs from
``old_log_probs`` or else ``rollout_log_probs``, and the reference's from ``ref_log_prob``,
whichever the batch holds (a trainer that computes the reward later hands it all): with the
policy's, ``entropy_collapse`` reads; with both, the KL of ``kl_acceleration`` and
``proxy_gain_per_kl``. In verl's default order the reference's are never there, so those two
read NaN (could not tell). The latents (``mahalanobis_outliers``) come from our own reward
model, in both adapters: by default the optimized ``RewardModel`` (member 0 of an ensemble),
from the pass that scores (``integrations.scoring.latent_model``).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from goodhartlab.integrations.scoring import MonitoredScorer, load_reward
from goodhartlab.monitor.live import Monitor, MonitorConfig

__all__ = ["GoodhartRewardManager", "compute_score", "make_compute_score"]

logger = logging.getLogger("goodhartlab.integrations")


def _prompt_of(extra_info: Any) -> str:
    if isinstance(extra_info, Mapping):
        for key in ("prompt", "question"):
            if isinstance(extra_info.get(key), str):
                return extra_info[key]
    return ""


def make_compute_score(
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
) -> Callable[..., dict[str, float]]:
    """verl's ``compute_score(data_source, solution_str, ground_truth, extra_info=None,
    **kwargs) -> {"score", goodhart/...}`` scoring with ``reward`` (or the directories
    ``proxy`` / ``ensemble``), the monitor's latents from ``latents``
    (:func:`~goodhartlab.integrations.scoring.latent_model`). The function has ``.scorer``."""
    if reward is None:
        reward = load_reward(proxy, ensemble, device=device)
    if isinstance(heldout, str):
        heldout = load_reward(heldout, device=device)
    scorer = MonitoredScorer(
        reward, monitor, heldout=heldout, aggregator=aggregator,
        samples_per_point=samples_per_point, latents=latents,
    )  # fmt: skip

    def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
        readable = isinstance(solution_str, str)
        text = solution_str if readable else ""
        if not readable:
            scorer.feed.skip("not_text:completions", 1)
        (score,) = scorer.score([_prompt_of(extra_info)], [text], monitored=[readable])
        return {"score": math.nan if score is None else float(score), **scorer.metrics()}

    compute_score.scorer = scorer
    return compute_score


def _monitor_config(value: Any) -> MonitorConfig | None:
    if value is None or isinstance(value, MonitorConfig):
        return value
    if isinstance(value, Mapping):
        return MonitorConfig(**dict(value))
    from pathlib import Path

    import yaml

    return MonitorConfig(**(yaml.safe_load(Path(value).read_text(encoding="utf-8")) or {}))


_env_lock = threading.Lock()
_env_compute_score = None


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """verl's custom reward function, set up from ``GOODHART_PROXY`` / ``GOODHART_ENSEMBLE``,
    ``GOODHART_MONITOR`` etc. (as :mod:`goodhartlab.integrations.openrlhf_reward`) on the
    first call."""
    global _env_compute_score
    with _env_lock:
        if _env_compute_score is None:
            ensemble = os.environ.get("GOODHART_ENSEMBLE")
            _env_compute_score = make_compute_score(
                None,
                _monitor_config(os.environ.get("GOODHART_MONITOR")) or MonitorConfig(),
                proxy=os.environ.get("GOODHART_PROXY") or None,
                ensemble=[p for p in ensemble.split(",") if p] if ensemble else None,
                heldout=os.environ.get("GOODHART_HELDOUT") or None,
                aggregator=os.environ.get("GOODHART_AGGREGATOR", "mean"),
                samples_per_point=int(os.environ.get("GOODHART_SAMPLES_PER_POINT", "128")),
                device=os.environ.get("GOODHART_DEVICE", "cpu"),
            )
    return _env_compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)


class GoodhartRewardManager:
    """A verl reward manager that scores a batch and reads it as one evaluation point.

    The signature is verl's ``AbstractRewardManager`` (``verl/workers/reward_manager/``),
    without importing verl: ``__init__(tokenizer, num_examine, compute_score=None,
    reward_fn_key="data_source", **reward_kwargs)`` and ``__call__(data, return_dict=False)``
    on a ``DataProto`` (``batch["prompts" | "responses" | "attention_mask"]``,
    ``non_tensor_batch["data_source" | "reward_model" | "extra_info" | "uid"]``,
    ``meta_info``). ``reward_kwargs`` read here: ``goodhart_proxy``, ``goodhart_ensemble``,
    ``goodhart_heldout``, ``goodhart_aggregator``, ``goodhart_monitor`` (a MonitorConfig,
    its fields as a mapping, or a YAML / JSON file); the rest go to ``compute_score``.
    """

    def __init__(
        self,
        tokenizer,
        num_examine: int = 0,
        compute_score: Callable[..., Any] | None = None,
        reward_fn_key: str = "data_source",
        **reward_kwargs: Any,
    ):
        self.tokenizer = tokenizer
        self.num_examine = num_examine
        self.compute_score = compute_score
        self.reward_fn_key = reward_fn_key
        g = {k: reward_kwargs.pop(k) for k in list(reward_kwargs) if k.startswith("goodhart_")}
        self.reward_kwargs = reward_kwargs
        device = g.get("goodhart_device", "cpu")
        proxy, ensemble = g.get("goodhart_proxy"), g.get("goodhart_ensemble")
        if isinstance(ensemble, str):
            ensemble = [ensemble]
        reward = load_reward(proxy, ensemble, device=device) if (proxy or ensemble) else None
        if reward is None and compute_score is None:
            raise ValueError(
                "GoodhartRewardManager: give reward_kwargs goodhart_proxy / goodhart_ensemble, "
                "or a compute_score"
            )
        heldout = g.get("goodhart_heldout")
        self.scorer = MonitoredScorer(
            reward if reward is not None else self._per_sample,
            _monitor_config(g.get("goodhart_monitor")),
            heldout=load_reward(heldout, device=device) if isinstance(heldout, str) else heldout,
            aggregator=g.get("goodhart_aggregator", "mean"),
            samples_per_point=None,
        )  # fmt: skip
        self._batch: dict[str, Any] = {}
        self._calls = 0

    def _per_sample(self, prompts: list[str], completions: list[str]) -> list[float | None]:
        """verl's compute_score on each sample of the current batch (its dict's "score")."""
        b = self._batch
        out: list[float | None] = []
        for i, text in enumerate(completions):
            result = self.compute_score(
                data_source=b["data_sources"][i], solution_str=text,
                ground_truth=b["ground_truths"][i], extra_info=b["extras"][i],
                **self.reward_kwargs,
            )  # fmt: skip
            out.append(result["score"] if isinstance(result, Mapping) else result)
        return out

    def __call__(self, data, return_dict: bool = False):
        prompt_ids = data.batch["prompts"]
        response_ids = data.batch["responses"]
        mask = data.batch["attention_mask"]
        n, prompt_len = len(data), prompt_ids.shape[-1]
        response_lengths = mask[:, prompt_len:].sum(dim=-1)
        prompt_mask = mask[:, :prompt_len].bool()
        ids = [response_ids[i][: int(response_lengths[i])].tolist() for i in range(n)]
        texts = [self.tokenizer.decode(x, skip_special_tokens=True) for x in ids]
        prompts = [
            self.tokenizer.decode(prompt_ids[i][prompt_mask[i]].tolist(), skip_special_tokens=True)
            for i in range(n)
        ]
        nt = data.non_tensor_batch
        reward_model = nt.get("reward_model", [{}] * n)
        self._batch = {
            "data_sources": nt.get(self.reward_fn_key, [None] * n),
            "ground_truths": [
                (rm or {}).get("ground_truth") if isinstance(rm, Mapping) else None
                for rm in reward_model
            ],
            "extras": list(nt.get("extra_info", [{}] * n)),
        }
        logp, logp_ref = _log_probs(data.batch, response_lengths)
        step = (getattr(data, "meta_info", None) or {}).get("global_steps")
        if not isinstance(step, int | np.integer):
            step = self._calls
        self._calls += 1
        uid = nt.get("uid")
        scores = self.scorer.score(
            prompts, texts, group_ids=None if uid is None else list(uid), step=int(step),
            completion_ids=ids, logp=logp, logp_ref=logp_ref,
        )  # fmt: skip
        reading = self.scorer.feed.close()
        metrics = reading.metrics() if reading is not None else self.scorer.metrics()
        reward_tensor = torch.zeros_like(response_ids, dtype=torch.float32)
        for i, s in enumerate(scores):
            if int(response_lengths[i]) > 0:
                reward_tensor[i, int(response_lengths[i]) - 1] = math.nan if s is None else s
        if not return_dict:
            return reward_tensor
        extra = {k: [v] * n for k, v in metrics.items()}
        extra["score"] = [math.nan if s is None else float(s) for s in scores]
        return {"reward_tensor": reward_tensor, "reward_extra_info": extra}


#: Where a verl batch holds the policy's and the reference's per-token log-probs, in order of
#: preference (``old_log_probs``: the actor's, recomputed; ``rollout_log_probs``: the sampler's).
POLICY_LOGP_KEYS = ("old_log_probs", "rollout_log_probs")
REF_LOGP_KEYS = ("ref_log_prob",)


def _log_probs(batch: Any, response_lengths: torch.Tensor) -> tuple[list | None, list | None]:
    """Each response's per-token log-probs under the policy and the reference, cut to its
    length; None for what the batch does not hold."""

    def rows(keys: tuple[str, ...]) -> list | None:
        for key in keys:
            try:
                if key not in batch.keys():
                    continue
                value = torch.as_tensor(batch[key]).detach().float().cpu()
                return [value[i, : int(n)].tolist() for i, n in enumerate(response_lengths)]
            except Exception:  # never break the reward: the monitor goes without them
                logger.warning("goodhart monitor: could not read %s from the batch", key)
        return None

    return rows(POLICY_LOGP_KEYS), rows(REF_LOGP_KEYS)
