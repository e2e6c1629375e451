"""Proxy reward models of a testbed, trained as in Gao et al. (2023) and Coste et al. (2023).

The base policy samples two completions for each of ``pairs`` training prompts (drawn with
replacement from the testbed's training prompts, never its held-out ones), the gold reward
labels them, a ``noise`` fraction of labels is flipped, and one Bradley-Terry reward model is
trained per seed on a backbone of the requested size. Everything is cached under ``root``,
keyed by the testbed build, the gold version and the settings, so studies reuse it.

The pieces are tasks on the study's workers (``experiments.parallel_stages``): the pairs and
the pretrain-seed backbones at once, then each member as soon as its pairs and its backbone
exist. A member is trained exactly as ``train.rm.train_ensemble`` trains it, wherever it
runs, and saved atomically in the ensemble's directory; ``ensemble.json``, written last,
marks the ensemble complete, and a rerun after a kill keeps the members already saved.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from goodhartlab.experiments.dispatch import Task

if TYPE_CHECKING:
    from goodhartlab.experiments.parallel_stages import StageWorkers


@dataclass(frozen=True)
class ProxySet:
    """Trained proxies: member directories (member 0 doubles as the single proxy)."""

    paths: list[Path]
    metrics: list[dict]
    pairs_path: Path

    @property
    def ensemble_dir(self) -> Path:
        return self.paths[0].parent


def preference_pairs(
    tb,
    root: Path,
    *,
    pairs: int,
    noise: float,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> Path:
    """The gold-labelled (noisy) base-policy pairs file, sampled once and cached
    (``on_batch(pairs_sampled, pairs)`` as it is sampled)."""
    from goodhartlab.data import label_with_gold, sample_pairs, write_pairs

    path = Path(root) / pairs_file_name(tb, pairs=pairs, noise=noise, seed=seed)
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    prompts = [tb.train_prompts[i] for i in rng.integers(len(tb.train_prompts), size=pairs)]
    unlabelled = sample_pairs(
        tb.load_policy(device),
        tb.tokenizer,
        prompts,
        max_new_tokens=tb.max_new_tokens,
        seed=seed,
        device=device,
        progress=progress,
        on_batch=on_batch,
    )
    write_pairs(label_with_gold(unlabelled, tb.gold, noise=noise, seed=seed), path)
    return path


def train_proxies(
    tb,
    root: str | Path | None = None,
    *,
    pairs: int = 16_000,
    noise: float = 0.25,
    size: str = "small",
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
    pretrain_seeds: bool = False,
    epochs: int = 2,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    workers: StageWorkers | None = None,
    rm_options: dict | None = None,
) -> ProxySet:
    """Proxy reward models on ``tb`` (cached). ``pretrain_seeds`` starts member k from a
    backbone pretrained with seed k (Eisenstein et al. 2023's pretrain-seed ensembles).

    ``rm_options``: other ``RMTrainConfig`` settings of every member (a reward-model variant:
    its objective, tool and their parameters; ``epochs`` / ``lr`` there win), on the same
    cached pairs; the set is cached under a name of its own.

    ``workers``: where the pieces run (default: this process, one after the other, its
    progress on stderr with ``progress``); the members are the same files either way.
    """
    from goodhartlab.experiments.parallel_stages import (
        StageWorkers,
        backbone_task_name,
        build_backbone,
        sample_pairs,
        train_member,
    )
    from goodhartlab.train.rm import RM_INFO_FILE, RMTrainConfig, write_ensemble_index

    root = Path(root) if root is not None else Path(tb.root) / "proxies"
    root.mkdir(parents=True, exist_ok=True)
    rm_options = dict(rm_options or {})
    epochs, lr = rm_options.pop("epochs", epochs), rm_options.pop("lr", lr)
    data = root / pairs_file_name(tb, pairs=pairs, noise=noise, seed=seed)
    ens = root / proxy_set_dir_name(
        tb,
        pairs=pairs,
        noise=noise,
        seed=seed,
        size=size,
        seeds=seeds,
        pretrain_seeds=pretrain_seeds,
        epochs=epochs,
        lr=lr,
        options=rm_options,
    )
    workers = workers or StageWorkers(tb, show=_print_progress if progress else None)
    arg = workers.testbed_arg
    tasks, units = [], {}
    if not data.is_file():
        tasks.append(Task("pairs", sample_pairs, (arg, str(root), pairs, noise, seed, device)))
        units["pairs"] = ("pairs", pairs)
    whole = _whole_ensemble(ens)
    if whole is not None:
        workers.run("proxies", tasks, units)  # the pairs, if they went missing
        return ProxySet(
            [ens / m["path"] for m in whole], [m.get("metrics", {}) for m in whole], data
        )
    backbone_seeds = list(seeds) if pretrain_seeds else [None] * len(seeds)
    if pretrain_seeds and not callable(getattr(tb, "is_built", None)):
        for s in seeds:  # a testbed that cannot say what is built: built here
            tb.backbone_path(size, seed=s)
    elif pretrain_seeds:
        for s in seeds:
            if not tb.is_built("backbone", size, s):
                name = backbone_task_name(size, s)
                tasks.append(Task(name, build_backbone, (arg, size, s)))
                units[name] = ("backbones", 1)
    members: dict[int, dict] = {}
    for i, (s, b_seed) in enumerate(zip(seeds, backbone_seeds, strict=True)):
        config = RMTrainConfig(
            epochs=epochs, lr=lr, **rm_options, device=device, seed=s
        ).model_dump()
        out = ens / f"member_{i}"
        saved = _saved_member(tb, out, config, size, b_seed, RM_INFO_FILE)
        if saved is not None:
            members[i] = saved
            continue
        if out.exists():  # damaged or of other settings (this is the cache's own directory)
            shutil.rmtree(out)
        needs = tuple(n for n in ("pairs", backbone_task_name(size, b_seed)) if n in units)
        tasks.append(
            Task(
                f"member/{i}",
                train_member,
                (arg, str(data), size, b_seed, config, str(out)),
                needs=needs,
            )
        )
        units[f"member/{i}"] = ("members", 1)
    results = workers.run("proxies", tasks, units)
    for i in range(len(seeds)):
        members.setdefault(i, results.get(f"member/{i}"))
    ordered = [members[i] for i in range(len(seeds))]
    paths = [Path(m["path"]) for m in ordered]
    metrics = [m["metrics"] for m in ordered]
    write_ensemble_index(ens, paths, list(seeds), [m["backbone"] for m in ordered], metrics)
    return ProxySet(paths, metrics, data)


@dataclass(frozen=True)
class ComponentProxySet:
    """One reward model per component of the gold (``paths[k]`` for ``components[k]``)."""

    components: list[str]
    paths: list[Path]
    metrics: list[dict]
    pairs_paths: list[Path]

    @property
    def ensemble_dir(self) -> Path:
        return self.paths[0].parent


def component_pairs(
    tb, root: Path, base_pairs: Path, component: str, *, noise: float, seed: int
) -> Path:
    """The study's base-policy pairs relabelled by one gold component, with fresh label noise
    (cached beside them).

    The pairs are those of :func:`preference_pairs` (the same base-policy completions the
    study's proxies see); ``data.label_with_gold`` labels each by the component
    (``tb.gold_components[component]``) and flips a ``noise`` fraction, seeded by (seed,
    component). Pairs whose two completions tie on the component carry no preference about
    it (a coin would label them) and are dropped: most base-policy pairs tie on the
    constraint and length components."""
    from goodhartlab.data import label_with_gold, read_pairs, write_pairs

    names = list(tb.gold_components)
    k = names.index(component)
    path = Path(root) / f"{Path(base_pairs).stem}-{tb.gold_components_version}-{component}.jsonl"
    if path.is_file():
        return path
    labelled = label_with_gold(
        read_pairs(base_pairs),
        tb.gold_components[component],
        noise=noise,
        seed=seed * 1000 + 17 * (k + 1),
    )
    kept = [p for p in labelled if not p.meta["tie"]]
    if len(kept) < 4:
        raise ValueError(
            f"proxies.pairs: only {len(kept)} of {len(labelled)} pairs differ on the gold "
            f"component {component!r} (the others tie); a component proxy needs at least 4 (some to train on, one held out): "
            "sample more pairs"
        )
    write_pairs(kept, path)
    return path


def _component_pairs_task(testbed, root: str, base_pairs: str, component: str, noise, seed):
    """Task: :func:`component_pairs` on a worker."""
    from goodhartlab.experiments.parallel_stages import _testbed

    tb = _testbed(testbed)
    return str(component_pairs(tb, Path(root), Path(base_pairs), component, noise=noise, seed=seed))


def train_component_proxies(
    tb,
    root: str | Path | None = None,
    *,
    pairs: int = 6000,
    noise: float = 0.25,
    size: str = "small",
    epochs: int = 2,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    workers: StageWorkers | None = None,
) -> ComponentProxySet:
    """One Bradley-Terry reward model per gold component (cached), for constrained RLHF
    (Moskovitz et al. 2023, arXiv 2310.04373).

    Each is trained as a study proxy member (``parallel_stages.train_member``: the same
    recipe, on the testbed's own backbone of ``size``, member seed 0) on
    :func:`component_pairs` of the study's pairs (:func:`preference_pairs` with ``pairs``,
    ``noise`` and ``seed``: the file the study's proxies use). The testbed must offer
    ``gold_components`` (toy_text: ``testbeds.toy_text.components``)."""
    from goodhartlab.experiments.parallel_stages import StageWorkers, sample_pairs, train_member
    from goodhartlab.train.rm import RM_INFO_FILE, RMTrainConfig, write_ensemble_index

    if not hasattr(tb, "gold_components"):
        raise ValueError(f"testbed {getattr(tb, 'name', tb)!r} has no gold components")
    names = list(tb.gold_components)
    root = Path(root) if root is not None else Path(tb.root) / "proxies"
    root.mkdir(parents=True, exist_ok=True)
    data = root / pairs_file_name(tb, pairs=pairs, noise=noise, seed=seed)
    ens = root / (
        f"components-{tb.gold_components_version}-{size}-noise{noise}-n{pairs}-pairseed{seed}"
        f"-ep{epochs}-lr{lr}"
    )
    workers = workers or StageWorkers(tb, show=_print_progress if progress else None)
    arg = workers.testbed_arg
    tasks, units = [], {}
    if not data.is_file():
        tasks.append(Task("pairs", sample_pairs, (arg, str(root), pairs, noise, seed, device)))
        units["pairs"] = ("pairs", pairs)
    config = RMTrainConfig(epochs=epochs, lr=lr, device=device, seed=0).model_dump()
    pair_paths = [root / f"{data.stem}-{tb.gold_components_version}-{k}.jsonl" for k in names]
    whole = _whole_ensemble(ens)
    if whole is not None and len(whole) == len(names) and all(p.is_file() for p in pair_paths):
        # a finished set is kept as train_proxies keeps one (even if RMTrainConfig grew a field)
        workers.run("proxies", tasks, units)  # the pairs, if they went missing
        return ComponentProxySet(
            names, [ens / m["path"] for m in whole], [m.get("metrics", {}) for m in whole],
            pair_paths,
        )  # fmt: skip
    members: dict[int, dict] = {}
    for i, k in enumerate(names):
        if not pair_paths[i].is_file():
            name = f"pairs/{k}"
            tasks.append(
                Task(name, _component_pairs_task, (arg, str(root), str(data), k, noise, seed),
                     needs=("pairs",) if "pairs" in units else ())
            )  # fmt: skip
            units[name] = ("component labels", 1)
        out = ens / f"member_{i}"
        saved = _saved_member(tb, out, config, size, None, RM_INFO_FILE)
        if saved is not None:
            members[i] = saved
            continue
        if out.exists():
            shutil.rmtree(out)
        needs = tuple(n for n in (f"pairs/{k}",) if n in units)
        tasks.append(
            Task(f"member/{k}", train_member,
                 (arg, str(pair_paths[i]), size, None, config, str(out)), needs=needs)
        )  # fmt: skip
        units[f"member/{k}"] = ("component proxies", 1)
    results = workers.run("proxies", tasks, units)
    for i, k in enumerate(names):
        members.setdefault(i, results.get(f"member/{k}"))
    ordered = [members[i] for i in range(len(names))]
    paths = [Path(m["path"]) for m in ordered]
    metrics = [m["metrics"] for m in ordered]
    meta = {"components": names, "version": tb.gold_components_version}
    (ens / "components.json").write_text(json.dumps(meta, indent=2) + "\n")
    # last: ensemble.json marks the set complete
    write_ensemble_index(ens, paths, [0] * len(names), [m["backbone"] for m in ordered], metrics)
    return ComponentProxySet(names, paths, metrics, pair_paths)


def _print_progress(stage: str, text: str) -> None:
    import sys

    print(f"\r{stage}: {text}", end="", file=sys.stderr, flush=True)


def pairs_file_name(tb, *, pairs: int, noise: float, seed: int) -> str:
    """The cached pairs file of ``preference_pairs`` under its root."""
    return f"pairs-{tb.gold_version}-n{pairs}-noise{noise}-seed{seed}.jsonl"


def proxy_set_dir_name(
    tb,
    *,
    pairs: int,
    noise: float,
    seed: int,
    size: str,
    seeds: Sequence[int],
    pretrain_seeds: bool,
    epochs: int,
    lr: float,
    options: dict | None = None,
) -> str:
    """The cached ensemble directory of :func:`train_proxies` under its root.

    Named by every input that changes a member: the pairs (gold version, count, noise and
    the study seed that sampled and labelled them), the backbone size, the members' seeds
    and whether their backbones are pretrain-seeded, and the training settings (other
    ``options`` add their objective and a digest of them). (The testbed's build is the
    root's parent.)"""
    tag = "pretrain-seeds" if pretrain_seeds else "seeds"
    name = (
        f"rm-{tb.gold_version}-{size}-noise{noise}-n{pairs}-pairseed{seed}-ep{epochs}-lr{lr}-"
        f"{tag}{'_'.join(map(str, seeds))}"
    )
    if options:
        digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:12]
        name += f"-{options.get('objective', 'bradley_terry')}-{digest}"
    return name


def _whole_ensemble(ens: Path) -> list[dict] | None:
    """The members listed by a finished ensemble's ``ensemble.json``, if every one of them is
    intact (its checksums verify); None: (re)train what is missing or damaged."""
    from goodhartlab.artifacts import verify

    manifest = ens / "ensemble.json"
    if not manifest.is_file():
        return None
    try:
        members = json.loads(manifest.read_text())["members"]
    except (ValueError, KeyError):
        return None
    if any(verify(ens / m["path"]) is not None for m in members):
        return None
    return members


def _saved_member(tb, out: Path, config: dict, size: str, seed, info_file: str) -> dict | None:
    """A member that an earlier, killed run saved with these settings (None: train it).

    Member directories are written atomically and sealed with checksums; one is kept when it
    verifies and its recorded config and backbone are the ones this member would be trained
    with (a damaged one is retrained)."""
    from goodhartlab.artifacts import verify

    path = out / info_file
    is_built = getattr(tb, "is_built", None)
    if not path.is_file() or not callable(is_built) or not is_built("backbone", size, seed):
        return None
    if verify(out) is not None:
        return None
    try:
        info = json.loads(path.read_text())
    except ValueError:
        return None
    backbone = str(tb.backbone_path(size, seed))
    if info.get("config") != config or info.get("backbone") != backbone:
        return None
    return {"path": str(out), "backbone": backbone, "metrics": info.get("metrics", {})}
