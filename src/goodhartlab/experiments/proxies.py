"""Proxy reward models of a testbed, trained as in Gao et al. (2023) and Coste et al. (2023).

The base policy samples two completions for each of ``pairs`` training prompts (drawn with
replacement from the testbed's training prompts, never its held-out ones), the gold reward
labels them, a ``noise`` fraction of labels is flipped, and one Bradley-Terry reward model is
trained per seed on a backbone of the requested size. Everything is cached under ``root``,
keyed by the testbed build, the gold version and the settings, so studies reuse it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


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
) -> Path:
    """The gold-labelled (noisy) base-policy pairs file, sampled once and cached."""
    from goodhartlab.data import label_with_gold, sample_pairs, write_pairs

    path = Path(root) / f"pairs-{tb.gold_version}-n{pairs}-noise{noise}-seed{seed}.jsonl"
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
) -> ProxySet:
    """Proxy reward models on ``tb`` (cached). ``pretrain_seeds`` starts member k from a
    backbone pretrained with seed k (Eisenstein et al. 2023's pretrain-seed ensembles)."""
    from goodhartlab.data import read_pairs
    from goodhartlab.train.rm import RMTrainConfig, train_ensemble

    root = Path(root) if root is not None else Path(tb.root) / "proxies"
    root.mkdir(parents=True, exist_ok=True)
    data = preference_pairs(
        tb, root, pairs=pairs, noise=noise, seed=seed, device=device, progress=progress
    )
    tag = "pretrain-seeds" if pretrain_seeds else "seeds"
    ens = root / (
        f"rm-{tb.gold_version}-{size}-noise{noise}-n{pairs}-ep{epochs}-lr{lr}-"
        f"{tag}{'_'.join(map(str, seeds))}"
    )
    manifest = ens / "ensemble.json"
    if manifest.is_file():
        info = json.loads(manifest.read_text())
        return ProxySet(
            [ens / m["path"] for m in info["members"]],
            [m.get("metrics", {}) for m in info["members"]],
            data,
        )
    if pretrain_seeds:
        backbones = [str(tb.backbone_path(size, seed=s)) for s in seeds]
    else:
        backbones = str(tb.backbone_path(size))
    config = RMTrainConfig(epochs=epochs, lr=lr, device=device)
    result = train_ensemble(
        read_pairs(data), tb.tokenizer, backbones, list(seeds), config, ens, progress=progress
    )
    return ProxySet(list(result.paths), list(result.metrics), data)
