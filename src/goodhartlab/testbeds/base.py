"""The Testbed protocol: what a world must give for a study to run in it.

A testbed is a world whose gold reward is known. A study asks it for six things, and
nothing else (``experiments.study``, ``goodhart rl`` / ``bon`` / ``dpo`` / ``testbed``):

1. **A tokenizer** (``tokenizer``): a ``transformers`` tokenizer with a pad token, shared
   by the base policy and the reward-model backbones of the testbed.
2. **A base policy** π0 (``policy_path``, ``load_policy``): a causal LM in an ordinary HF
   directory, built or converted once and cached; the frozen reference of every run and
   the sampler of best-of-n pools and preference pairs.
3. **Prompts with a held-out split** (``train_prompts``, ``eval_prompts``): preference
   data and training use the first, every evaluation the second; the two never overlap.
4. **A gold reward with a version** (``gold``, ``gold_version``): an object with
   ``score(prompts, completions) -> Tensor[B]``, documented formula, whose version is
   bumped on every change of what it computes (results record it, as lm-evaluation-harness
   tasks do).
5. **Reward-model backbones by size** (``backbone_sizes``, ``backbone_path(size, seed)``):
   the starting point of proxies; a different ``seed`` gives a differently pretrained
   backbone (Eisenstein et al. 2023's pretrain-seed ensembles).
6. **Build and cache** (``root``; every path property builds on first use): artifacts are
   sealed directories (``goodhartlab.artifacts``) so a partial build is detected and
   rebuilt, never used; the same options give the same cache key.

Plus what the tooling around a study needs: ``max_new_tokens`` (the completion budget),
``is_cached()`` (for the progress estimate), and ``seconds_per`` (seconds per unit of work
on the reference machine, read by ``experiments.progress.estimate_stages``: each world
costs differently, so each testbed carries its own calibration).

Optional: ``is_built(artifact, size=None, seed=None)`` ("tokenizer", "policy", "backbone";
nothing is built) says that the artifacts are independent: once the tokenizer is built, the
study builds the policy and the backbones at once on its workers, each worker rebuilding the
testbed from its registry name and options. A testbed without it is built in the study's
own process, one artifact after the other.

Optional: ``backbone_tokenizer(size)``, the tokenizer of the backbones of ``size`` where it is
not the policy's (real_text's MiniLM backbone reads with BERT's WordPiece); without it every
backbone shares ``tokenizer``.

A testbed is registered in ``goodhartlab.registry.TESTBEDS`` with its options model as the
entry's ``params`` (a pydantic model; a study's ``testbed_options`` are validated against
it) and built as ``cls(options, cache_dir=..., progress=...)``. A user's own world plugs in
from outside the package the same way (``goodhart --plugin my_world``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = ["Testbed"]


@runtime_checkable
class Testbed(Protocol):
    """A world with a known gold reward (see the module docstring for each part)."""

    name: str
    """Its registry name."""
    root: Path
    """The cache directory of this testbed and options."""
    gold: Any
    """``score(prompts, completions) -> Tensor[B]``."""
    train_prompts: Sequence[str]
    eval_prompts: Sequence[str]
    seconds_per: Mapping[str, float]
    """Seconds per unit of work on the reference machine (keys as toy_text's)."""
    backbone_sizes: Sequence[str]

    @property
    def gold_version(self) -> str: ...

    @property
    def max_new_tokens(self) -> int: ...

    @property
    def tokenizer(self) -> Any: ...

    @property
    def policy_path(self) -> Path: ...

    def backbone_path(self, size: str, seed: int | None = None) -> Path: ...

    def load_policy(self, device: str = "cpu") -> Any: ...

    def is_cached(self) -> bool: ...
