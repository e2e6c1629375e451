"""Scores of a best-of-n pool by each reward, computed once and cached beside the pool.

A reward to score with is a :class:`RewardSource`: a name, a key that identifies exactly
what produces the scores (a hash of a reward model's files, or a scorer's class, name and
version), and a loader called only when the scores are not cached. :func:`score_pool` reads
``pool_dir/scores/<hash of key>.safetensors`` when it belongs to this pool and key, and
otherwise scores every completion and writes it atomically.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from goodhartlab.artifacts import atomic_path
from goodhartlab.models.fingerprint import fingerprint_files
from goodhartlab.models.loading import local_model_dir
from goodhartlab.optimize.pool import Pool

__all__ = [
    "SCORES_FORMAT",
    "RewardSource",
    "as_reward_source",
    "cached_scores",
    "reward_model_source",
    "save_scores",
    "score_path",
    "score_pool",
    "score_rows",
    "scorer_source",
]

log = logging.getLogger(__name__)

#: Bump on any change of the score files' meaning or layout.
SCORES_FORMAT = "goodhart-scores/v1"


@dataclass(frozen=True)
class RewardSource:
    """A reward to score a pool with, loaded only when its scores are not cached.

    ``key`` identifies exactly what produces the scores (for a reward model: a hash of its
    files; for a programmatic reward: its name and version): a changed key is rescored.
    ``load()`` returns an object with ``score(prompts, completions) -> Tensor[B]``.
    """

    name: str
    key: str
    load: Callable[[], Any] = field(repr=False, compare=False)


def reward_model_source(
    path_or_hub: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    name: str | None = None,
    trust_remote_code: bool = False,
) -> RewardSource:
    """A :class:`~goodhartlab.rewards.RewardModel` directory (or cached hub name) as a source.

    The cache key is a SHA-256 of every file of the model directory (weights, config,
    tokenizer, ``goodhart_rm.json``), so a retrained or edited model is rescored.
    """
    local = local_model_dir(path_or_hub)

    def load():
        from goodhartlab.rewards import RewardModel

        try:
            return RewardModel.from_pretrained(
                local, device=device, trust_remote_code=trust_remote_code
            )
        except ValueError as e:
            raise ValueError(f"reward model {path_or_hub}: {e}") from None

    return RewardSource(
        name=name or Path(str(path_or_hub)).name, key=f"rm:{fingerprint_files(local)}", load=load
    )


def scorer_source(scorer: Any, *, name: str | None = None, key: str | None = None) -> RewardSource:
    """Any ``score(prompts, completions) -> Tensor[B]`` object (a gold reward, a heuristic).

    The key defaults to ``"<module.Class>:<name>@<version>"`` from the scorer's class and
    its ``name`` and ``version`` attributes; a scorer without ``version`` needs an explicit ``key``
    (bump it whenever the scorer changes, or stale scores are reused).
    """
    if not callable(getattr(scorer, "score", None)):
        raise ValueError(f"{scorer!r}: expected an object with score(prompts, completions)")
    own_name = getattr(scorer, "name", None)
    label = name or own_name or type(scorer).__name__
    if key is None:
        version = getattr(scorer, "version", None)
        if version is None:
            raise ValueError(
                f"{label}: the scorer has no `version` attribute; pass key=... to cache its scores"
            )
        cls = type(scorer)
        key = f"{cls.__module__}.{cls.__qualname__}:{own_name or ''}@{version}"
    return RewardSource(name=str(label), key=str(key), load=lambda: scorer)


def as_reward_source(x: Any, *, device: str, name: str | None = None) -> RewardSource:
    """``x`` as a :class:`RewardSource`: a source as is, a path as a reward model, else a scorer."""
    if isinstance(x, RewardSource):
        return x
    if isinstance(x, str | os.PathLike):
        return reward_model_source(x, device=device, name=name)
    return scorer_source(x, name=name)


def score_path(pool: Pool, source: RewardSource) -> Path:
    """Where the pool's scores by ``source`` are cached: ``pool_dir/scores/<hash of key>.safetensors``."""
    # Named by the key alone: one model given as a proxy and as an ensemble member (under
    # two names) is scored once.
    return (
        pool.path / "scores" / f"{hashlib.sha256(source.key.encode()).hexdigest()[:32]}.safetensors"
    )


def _read_scores(path: Path, pool: Pool, source: RewardSource) -> Tensor | None:
    """Cached scores, or None (and why, logged) when missing, stale or corrupt."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            scores = f.get_tensor("scores")
    except Exception as e:  # truncated or not a safetensors file
        log.warning("score cache %s is unreadable (%s); rescoring", path, e)
        return None
    expected = {"format": SCORES_FORMAT, "key": source.key, "pool": pool.digest}
    if any(meta.get(k) != v for k, v in expected.items()):
        log.info("score cache %s is for another pool or model; rescoring", path)
        return None
    if tuple(scores.shape) != (pool.num_prompts, pool.pool_size) or not bool(
        torch.isfinite(scores).all()
    ):
        log.warning(
            "score cache %s has shape %s or non-finite values; rescoring", path, tuple(scores.shape)
        )
        return None
    return scores


def _write_scores(path: Path, scores: Tensor, pool: Pool, source: RewardSource) -> None:
    from safetensors.torch import save_file

    meta = {"format": SCORES_FORMAT, "key": source.key, "pool": pool.digest, "name": source.name}
    with atomic_path(path) as tmp:
        save_file({"scores": scores.contiguous()}, str(tmp), metadata=meta)


def cached_scores(pool: Pool, source: RewardSource) -> Tensor | None:
    """The pool's cached scores by ``source``, or None when missing, stale or corrupt.

    Nothing is loaded or scored (``source.load`` is not called). Shape: (P, N).
    """
    return _read_scores(score_path(pool, source), pool, source)


def score_rows(
    pool: Pool,
    source: RewardSource,
    rows: range,
    *,
    scorer: Any = None,
    batch_size: int = 256,
    progress: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Rewards of the pool's rows ``rows`` (prompt-major, as ``Pool.flat``), not cached.

    The rows are scored in the calls :func:`score_pool` makes (``score`` on rows
    ``[lo, lo + batch_size)`` for lo = 0, batch_size, ...), so ranges that start at
    multiples of ``batch_size`` give, put together, exactly the scores of the whole pool:
    several processes can score one pool in blocks.

    Args:
        pool: a complete pool.
        source: the reward (``source.load()`` is called unless ``scorer`` is given).
        rows: ``range(start, stop)`` with ``start`` a multiple of ``batch_size``.
        scorer: the loaded reward, if it already is.
        batch_size: items per ``score`` call.
        on_batch: called as ``on_batch(rows_scored, len(rows))`` after each call.

    Returns:
        Float32 rewards. Shape: (len(rows),).
    """
    total = pool.num_prompts * pool.pool_size
    if rows.step != 1 or rows.start % batch_size or not 0 <= rows.start <= rows.stop <= total:
        raise ValueError(
            f"rows: expected range(start, stop) within 0..{total} with start a multiple of "
            f"batch_size={batch_size}, got {rows}"
        )
    scorer = source.load() if scorer is None else scorer
    prompts, completions = pool.flat()
    parts = []
    from tqdm.auto import tqdm

    for lo in tqdm(
        range(rows.start, rows.stop, batch_size),
        desc=f"scoring {source.name}",
        disable=not progress,
    ):
        hi = min(lo + batch_size, rows.stop)
        r = torch.as_tensor(scorer.score(prompts[lo:hi], completions[lo:hi]))
        if r.shape != (hi - lo,):
            raise ValueError(
                f"{source.name}: score returned shape {tuple(r.shape)} for a batch of {hi - lo}"
            )
        parts.append(r.detach().float().cpu())
        if on_batch is not None:
            on_batch(hi - rows.start, len(rows))
    return torch.cat(parts) if parts else torch.empty(0)


def save_scores(pool: Pool, source: RewardSource, scores: Tensor) -> Path:
    """Cache ``scores`` (Shape: (P, N)) as the pool's scores by ``source``, atomically, as
    :func:`score_pool` does (for scores computed in blocks by :func:`score_rows`)."""
    scores = scores.reshape(pool.num_prompts, pool.pool_size).float()
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"{source.name}: scores contain NaN or ±inf")
    path = score_path(pool, source)
    _write_scores(path, scores, pool, source)
    return path


def score_pool(
    pool: Pool,
    source: RewardSource | Any,
    *,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Rewards of every completion of the pool, computed once and cached beside the pool.

    The cache file ``pool_dir/scores/<hash of key>.safetensors`` records the source's name
    and key and the pool's digest; a file for another key or pool, or one that is truncated
    or corrupt, is recomputed (the scorer is loaded only then). Written atomically.

    Args:
        pool: a complete pool (``load_pool`` / ``build_pool``).
        source: a :class:`RewardSource`, a reward-model directory, or a scorer with
            ``score`` and ``version``.
        batch_size: items per ``score`` call (reward models batch inside it as well).
        on_batch: called as ``on_batch(rows_scored, rows)`` after each ``score`` call (not
            for cached scores).

    Returns:
        Float32 rewards. Shape: (P, N).
    """
    source = as_reward_source(source, device=device)
    cached = _read_scores(score_path(pool, source), pool, source)
    if cached is not None:
        return cached
    rows = range(pool.num_prompts * pool.pool_size)
    scores = score_rows(
        pool, source, rows, batch_size=batch_size, progress=progress, on_batch=on_batch
    ).reshape(pool.num_prompts, pool.pool_size)
    save_scores(pool, source, scores)
    return scores
