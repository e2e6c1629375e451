"""The testbed, proxies and best-of-n stages of a study, as tasks on the study's workers.

The RL and DAA runs were always independent; the stages before them are made of independent
pieces too, and :class:`StageWorkers` hands those pieces to the same workers
(``experiments.dispatch``: this process for one worker, a local process pool, or Ray):

- testbed: once the tokenizer is built (here: every model build reads it), the base policy
  and the reward-model backbones are built at once (:func:`build_testbed`);
- proxies: the gold-labelled pairs, the pretrain-seed backbones, then one task per ensemble
  member, each starting once its pairs and its backbone exist
  (``experiments.proxies.train_proxies``);
- best-of-n: the pool in shares of chunks, then its scores by each reward in blocks of rows
  (:func:`sample_and_score_pool`); ``optimize.bon.run_bon_study`` then finds the pool and
  every score cached and computes the curves.

Nothing is seeded differently for being parallel: a model build is seeded by its own seed, a
member by its seed (``train.rm``), a pool chunk by ``(seed, chunk index)``
(``optimize.pool``), and scores depend on nothing but the model and the rows, scored in the
same batches. So a stage gives the same files on any number of workers. Workers get paths
and settings, never models: each rebuilds the testbed from its registry name and options
(:class:`TestbedSpec`) and loads what it needs. Every piece is written atomically where it
belongs (a sealed artifact, a chunk file, a score cache, a member directory), so a study
killed mid-stage keeps the finished pieces and its resume only does the rest.

Each stage reports inside itself on the study's display: pairs sampled, backbones and
members trained, pool chunks written, rows scored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from goodhartlab.experiments import dispatch
from goodhartlab.experiments.dispatch import Task

__all__ = [
    "StageWorkers",
    "TestbedSpec",
    "build_testbed",
    "pretrain_seeds_beside_policy",
    "sample_and_score_pool",
]


# --------------------------------------------------------------------------------------
# Where the tasks run
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestbedSpec:
    """What a worker process needs to rebuild the study's testbed (from the cache)."""

    name: str
    options_json: str
    cache_dir: str | None
    plugins: tuple[str, ...] = ()

    @classmethod
    def of(cls, config: Any) -> TestbedSpec:
        """The testbed of a ``StudyConfig`` (its cache given as an absolute path)."""
        return cls(
            name=config.testbed,
            options_json=json.dumps(config.testbed_options, sort_keys=True),
            cache_dir=config.cache_dir,
            plugins=tuple(config.plugins),
        )

    def build(self):
        return _built_testbed(self)


@lru_cache(maxsize=2)
def _built_testbed(spec: TestbedSpec):
    """One testbed object per worker process and spec (its tokenizer loaded once)."""
    from goodhartlab.plugins import load_plugins
    from goodhartlab.testbeds import get_testbed

    load_plugins(list(spec.plugins), where="study plugins")
    return get_testbed(
        spec.name, json.loads(spec.options_json), cache_dir=spec.cache_dir, progress=False
    )


def _testbed(testbed):
    """The testbed a task was given: this process's own object, or rebuilt from its spec."""
    return testbed.build() if isinstance(testbed, TestbedSpec) else testbed


class _Tally:
    """What a stage's tasks have done, by kind of work: ``pairs 2,048/6,000 · members 1/5``."""

    def __init__(self, units: Mapping[str, tuple[str, int]]):
        self.units: dict[str, tuple[str, int]] = {}  # task name -> (kind, units of work)
        self.done: dict[str, int] = {}
        self.add(units)

    def add(self, units: Mapping[str, tuple[str, int]]) -> None:
        self.units.update(units)
        self.done.update(dict.fromkeys(units, 0))

    def report(self, name: str, done: int, total: int) -> None:
        units = self.units[name][1]
        self.done[name] = min(units, round(units * done / total)) if total else units

    def finish(self, name: str) -> None:
        self.done[name] = self.units[name][1]

    def text(self) -> str:
        kinds: dict[str, list[int]] = {}
        for name, (kind, units) in self.units.items():
            k = kinds.setdefault(kind, [0, 0])
            k[0] += self.done[name]
            k[1] += units
        return " · ".join(f"{kind} {d:,}/{t:,}" for kind, (d, t) in kinds.items())


class StageWorkers:
    """The study's workers for its testbed, proxies and best-of-n stages.

    Args:
        testbed: the study's testbed (used as it is by tasks that run in this process).
        spec: how worker processes rebuild it.
        backend: ``"local"`` or ``"ray"``.
        workers: tasks at once (1 with ``local``: this process, one after the other).
        threads: torch threads of each worker process.
        show: ``show(stage, text)`` puts a stage's progress on the display.
        pool: the processes to run on (default: a :class:`dispatch.WorkerPool` started on
            first use and kept until :meth:`close`, so the stages start them once).
    """

    def __init__(
        self,
        testbed,
        spec: TestbedSpec | None = None,
        *,
        backend: str = "local",
        workers: int = 1,
        threads: int = 1,
        show: Callable[[str, str], None] | None = None,
        pool: dispatch.WorkerPool | None = None,
    ):
        self.testbed = testbed
        self.spec = spec
        self.backend = backend
        self.workers = workers
        self.threads = threads
        if spec is None and not self.in_process:
            raise ValueError("spec: worker processes need the testbed's spec to rebuild it")
        self.show = show or (lambda stage, text: None)
        self.pool = pool or dispatch.WorkerPool(backend, workers)
        self._tallies: dict[str, _Tally] = {}

    @property
    def in_process(self) -> bool:
        return self.backend == "local" and self.workers == 1

    @property
    def testbed_arg(self):
        """What tasks get as their testbed: the object here, its spec in other processes."""
        return self.testbed if self.in_process else self.spec

    def run(
        self,
        stage: str,
        tasks: Sequence[Task],
        units: Mapping[str, tuple[str, int]],
        on_done: Callable[[str, Any], None] | None = None,
    ) -> dict[str, Any]:
        """Run ``tasks`` (``units``: task name -> (kind of work, units), for the display;
        the calls of one stage add up there: ``pool chunks 200/200 · rows scored 0/1,228,800``);
        ``on_done(name, result)`` as each task finishes."""
        if not tasks:
            return {}
        tally = self._tallies.setdefault(stage, _Tally({}))
        tally.add(units)
        self.show(stage, tally.text())

        def progress(name: str, done: int, total: int) -> None:
            tally.report(name, done, total)
            self.show(stage, tally.text())

        def finished(name: str, result, seconds: float) -> None:
            if on_done is not None:
                on_done(name, result)
            tally.finish(name)
            self.show(stage, tally.text())

        return dispatch.run_tasks(
            tasks,
            backend=self.backend,
            workers=self.workers,
            threads=self.threads,
            on_progress=progress,
            on_done=finished,
            pool=self.pool,
        )

    def close(self) -> None:
        self.pool.close()


# --------------------------------------------------------------------------------------
# Testbed
# --------------------------------------------------------------------------------------


def pretrain_seeds_beside_policy(
    proxies: Any, seconds_per: Mapping[str, float], workers: int
) -> list[int]:
    """The pretrain-seed backbones (of ``proxies.seeds``, in order) that the testbed stage
    builds beside the base policy, so that the workers other than the policy's do not wait.

    As many as fit, by the testbed's calibration, in the time the policy takes on the
    other ``workers - 1`` workers, after the testbed's own backbone (the first seed's, when
    it is the testbed's seed: then it costs nothing more); the proxies stage builds the
    rest. None with one worker or without pretrain-seed members.
    """
    if not proxies.pretrain_seeds or workers < 2:
        return []
    policy = seconds_per.get("policy")
    backbone = seconds_per.get(f"backbone_{proxies.size}")
    if not policy or not backbone:
        return []
    fit = math.floor((workers - 1) * policy / backbone)  # backbones, the testbed's own included
    return list(proxies.seeds[:fit])


def backbone_task_name(size: str, seed: int | None) -> str:
    """The task that builds the backbone of ``size`` and ``seed`` (None: the testbed's own)."""
    return f"backbone/{size}/seed{'-default' if seed is None else seed}"


def build_policy(testbed) -> str:
    """Task: build (or verify) the testbed's base policy."""
    return str(_testbed(testbed).policy_path)


def build_backbone(testbed, size: str, seed: int | None) -> str:
    """Task: build (or verify) the testbed's backbone of ``size`` and ``seed``."""
    return str(_testbed(testbed).backbone_path(size, seed))


def build_testbed(
    tb, workers: StageWorkers, size: str, extra_seeds: Sequence[int] = ()
) -> dict[str, str]:
    """Build (or verify) the testbed's tokenizer, base policy and backbone of ``size``
    (the testbed's own seed), and the backbones of ``size`` and ``extra_seeds``.

    The tokenizer first, here; then what is not built yet goes to the workers at once (the
    extra backbones after the testbed's own one, which may be one of them). A testbed
    without ``is_built`` is built here, one artifact after the other.
    """
    if not callable(getattr(tb, "is_built", None)):
        for seed in (None, *extra_seeds):
            tb.backbone_path(size, seed)
        return {"policy": str(tb.policy_path), "backbone": str(tb.backbone_path(size))}
    tb.tokenizer  # noqa: B018 (builds it: every model build below reads it)
    arg = workers.testbed_arg
    tasks, units = [], {}
    if not tb.is_built("policy"):
        tasks.append(Task("policy", build_policy, (arg,)))
        units["policy"] = ("policy", 1)
    own = backbone_task_name(size, None)
    if not tb.is_built("backbone", size):
        tasks.append(Task(own, build_backbone, (arg, size, None)))
        units[own] = ("backbones", 1)
    for seed in extra_seeds:
        if not tb.is_built("backbone", size, seed):
            name = backbone_task_name(size, seed)
            # After the testbed's own backbone, which may be this one: never built twice.
            needs = (own,) if own in units else ()
            tasks.append(Task(name, build_backbone, (arg, size, seed), needs=needs))
            units[name] = ("backbones", 1)
    workers.run("testbed", tasks, units)
    # Verified here as well (checksums; cheap): what the stage records is sealed.
    return {"policy": str(tb.policy_path), "backbone": str(tb.backbone_path(size))}


# --------------------------------------------------------------------------------------
# Proxies (the stage itself is experiments.proxies.train_proxies)
# --------------------------------------------------------------------------------------


def sample_pairs(testbed, root: str, pairs: int, noise: float, seed: int, device: str) -> str:
    """Task: the gold-labelled noisy pairs file (``experiments.proxies.preference_pairs``)."""
    from goodhartlab.experiments.proxies import preference_pairs

    return str(
        preference_pairs(
            _testbed(testbed),
            Path(root),
            pairs=pairs,
            noise=noise,
            seed=seed,
            device=device,
            progress=False,
            on_batch=dispatch.report_progress,
        )
    )


def train_member(
    testbed, pairs_path: str, size: str, seed: int | None, config: dict, out_dir: str
) -> dict:
    """Task: one ensemble member, trained as ``train.rm.train_ensemble`` trains it, on the
    testbed's backbone of ``size`` and ``seed`` (None: the testbed's own)."""
    from goodhartlab.data import read_pairs
    from goodhartlab.testbeds import backbone_tokenizer
    from goodhartlab.train.rm import RMTrainConfig, train_reward_model

    tb = _testbed(testbed)
    backbone = str(tb.backbone_path(size, seed))
    member = train_reward_model(
        read_pairs(pairs_path),
        backbone_tokenizer(tb, size),
        backbone,
        RMTrainConfig.model_validate(config),
        out_dir=out_dir,
        progress=False,
    )
    return {"path": str(member.path), "backbone": backbone, "metrics": member.metrics}


# --------------------------------------------------------------------------------------
# Best-of-n
# --------------------------------------------------------------------------------------


def sample_chunks(testbed, policy: str, pool_dir: str, chunks: list[int], device: str) -> int:
    """Task: sample ``chunks`` of the pool that :func:`sample_and_score_pool` prepared."""
    from goodhartlab.models.loading import load_policy
    from goodhartlab.optimize.pool import sample_pool_chunks

    model, tokenizer, _ = load_policy(policy, _testbed(testbed).tokenizer, device=device)
    sample_pool_chunks(pool_dir, model, tokenizer, chunks, on_chunk=dispatch.report_progress)
    return len(chunks)


def _source(tb, reward: str, device: str):
    """``"gold"`` or a reward-model directory, as the source ``run_bon_study`` makes of it."""
    from goodhartlab.optimize.scores import as_reward_source

    if reward == "gold":
        return as_reward_source(tb.gold, device=device, name="gold")
    return as_reward_source(reward, device=device)


@lru_cache(maxsize=1)
def _loaded_pool(pool_dir: str, digest: str):
    """The pool, loaded once per worker process for all its blocks (checked by digest)."""
    from goodhartlab.optimize.pool import PoolError, load_pool

    pool = load_pool(pool_dir)
    if pool.digest != digest:
        raise PoolError(f"pool {pool_dir} changed while it was being scored")
    return pool


def score_block(testbed, pool, reward: str, start: int, stop: int, batch_size: int, device: str):
    """Task: the scores of the pool's rows ``start..stop`` by one reward (a NumPy array:
    pickled by value), in the calls ``score_pool`` makes (``pool``: ``(directory,
    digest)``, or in this process the loaded pool itself)."""
    from goodhartlab.optimize.scores import score_rows

    if isinstance(pool, tuple):
        pool = _loaded_pool(*pool)
    source = _source(_testbed(testbed), reward, device)
    scores = score_rows(
        pool,
        source,
        range(start, stop),
        batch_size=batch_size,
        on_batch=dispatch.report_progress,
    )
    return scores.numpy()


def _blocks(rows: int, parts: int, batch_size: int) -> list[tuple[int, int]]:
    """``range(rows)`` cut into at most ``parts`` blocks that start at multiples of
    ``batch_size`` (so that each is scored in the calls of a whole-pool scoring)."""
    batches = -(-rows // batch_size)
    return [
        (b[0] * batch_size, min((b[-1] + 1) * batch_size, rows))
        for b in _shares(list(range(batches)), parts)
    ]


def _shares(items: list[int], parts: int) -> list[list[int]]:
    """``items`` cut into ``parts`` consecutive shares of sizes differing by at most one
    (fewer when there are fewer items; none for none)."""
    if not items:
        return []
    parts = max(1, min(parts, len(items)))
    q, r = divmod(len(items), parts)
    out, lo = [], 0
    for i in range(parts):
        hi = lo + q + (i < r)
        out.append(items[lo:hi])
        lo = hi
    return out


#: Pool shares per worker: enough that the last ones finish together, few enough that
#: loading the policy for each costs nothing to speak of.
SHARES_PER_WORKER = 4


def sample_and_score_pool(
    workers: StageWorkers,
    pool_dir: str | Path,
    tb,
    config: Any,
    reward_models: Sequence[str],
) -> None:
    """The best-of-n stage's pool and scores, on the workers, exactly as
    ``optimize.bon.run_bon_study`` would build them (it then finds both cached).

    The pool is prepared here (``optimize.pool.prepare_pool``: settings checked, chunks to
    sample listed), sampled in shares of chunks, sealed here, then scored by gold and each
    distinct reward model whose scores are not cached, each in blocks of rows (one per
    worker), put together and cached here.

    Args:
        workers: the study's workers.
        pool_dir: the pool directory of the stage (``<run>/bon/pool``).
        tb: the testbed (its base policy, tokenizer, held-out prompts and gold).
        config: the stage's ``BonStudyConfig``.
        reward_models: the directories the study picks with (proxy and ensemble members).
    """
    import numpy as np
    import torch

    from goodhartlab.models.loading import load_policy
    from goodhartlab.optimize.pool import finish_pool, prepare_pool
    from goodhartlab.optimize.scores import cached_scores, save_scores

    prompts = list(tb.eval_prompts)
    if config.prompts_count is not None:
        if config.prompts_count > len(prompts):
            return  # run_bon_study says what is wrong
        prompts = prompts[: config.prompts_count]
    device = config.device
    policy = str(tb.policy_path)
    model, tokenizer, identity = load_policy(policy, tb.tokenizer, device=device)
    pool_dir = Path(pool_dir)
    missing = prepare_pool(
        pool_dir,
        model,
        tokenizer,
        prompts,
        config.pool_size,
        max_new_tokens=config.max_new_tokens or 64,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=config.seed,
        chunk_size=config.chunk_size,
        batch_size=config.batch_size,
        add_special_tokens=config.add_special_tokens,
        policy_fingerprint=f"files:{identity['fingerprint']}",  # as run_bon_study keys it
    )
    del model
    arg = workers.testbed_arg
    shares = _shares(missing, 1 if workers.in_process else SHARES_PER_WORKER * workers.workers)
    tasks = [
        Task(f"pool/{i}", sample_chunks, (arg, policy, str(pool_dir), share, device))
        for i, share in enumerate(shares)
    ]
    workers.run("bon", tasks, {t.name: ("pool chunks", len(t.args[3])) for t in tasks})
    pool = finish_pool(pool_dir)

    rewards = list(dict.fromkeys(["gold", *map(str, reward_models)]))
    sources = {}  # a model given twice (proxy, member 0) is scored once
    for reward in rewards:
        source = _source(tb, reward, device)
        keys = {s.key for s in sources.values()}
        if source.key not in keys and cached_scores(pool, source) is None:
            sources[reward] = source
    # Each reward in a block per worker (reward models cost ~6x gold: whole rewards as tasks
    # would leave one worker with the last model while the other waits).
    rows = pool.num_prompts * pool.pool_size
    blocks = _blocks(rows, workers.workers, config.score_batch_size)
    pool_arg = pool if workers.in_process else (str(pool_dir), pool.digest)
    tasks, units = [], {}
    for i, reward in enumerate(sources):
        for j, (start, stop) in enumerate(blocks):
            name = f"score/{i}/{j}"
            args = (arg, pool_arg, reward, start, stop, config.score_batch_size, device)
            tasks.append(Task(name, score_block, args))
            units[name] = ("rows scored", stop - start)
    parts: dict[int, dict[int, np.ndarray]] = {}
    source_of = list(sources.values())

    def block_done(name: str, scores) -> None:
        # A reward's cache is written as soon as its blocks are in (a kill keeps it).
        i, j = map(int, name.split("/")[1:])
        parts.setdefault(i, {})[j] = scores
        if len(parts[i]) == len(blocks):
            got = parts.pop(i)
            whole = np.concatenate([got[j] for j in range(len(blocks))])
            save_scores(pool, source_of[i], torch.from_numpy(whole))

    workers.run("bon", tasks, units, on_done=block_done)
