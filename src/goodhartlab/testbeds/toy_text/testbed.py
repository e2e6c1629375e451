"""The ``toy_text`` testbed: tokenizer, base policy, reward-model backbones, prompts and gold.

Everything is built on first use from this package alone (no download) and cached under
``cache_dir`` (default ``$GOODHART_CACHE`` or ``~/.cache/goodhart-lab``). Each cached artifact
is a directory sealed with a checksum manifest; one that is partial or corrupt is detected on
load and rebuilt, never silently used. A build is deterministic for a seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from goodhartlab.artifacts import building, read_info, verify
from goodhartlab.models.tiny import SIZES
from goodhartlab.testbeds.toy_text.build import generate_corpus, pretrain_causal_lm, train_tokenizer
from goodhartlab.testbeds.toy_text.gold import GOLD_VERSION, ToyTextGold
from goodhartlab.testbeds.toy_text.language import split_prompts

log = logging.getLogger(__name__)

#: Bump on any change to the grammar, generator or tokenizer training (invalidates caches).
LANGUAGE_VERSION = "toy_text-language-v2"


def default_cache_dir() -> Path:
    return Path(os.environ.get("GOODHART_CACHE", Path.home() / ".cache" / "goodhart-lab"))


class ToyTextConfig(BaseModel):
    """How the toy_text world is built (a study's ``testbed_options``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    seed: int = 0
    """Seed of the tokenizer corpus, the base policy and the default backbones."""
    policy_size: str = "medium"
    """Size (``models.tiny.SIZES``) of the base policy."""
    policy_steps: int = 600
    """Pretraining steps of the base policy (its own budget: the policy is not a backbone)."""
    pretrain_steps: dict[str, int] = Field(
        default_factory=lambda: {"small": 600, "medium": 1200, "large": 3000}
    )
    """Pretraining steps (batches of ``pretrain_batch_size`` fresh sequences) of the
    reward-model backbone of each size. The budget grows with size, as pretraining compute
    grows with model size in real model families: on this simple language every size reaches
    the same loss at equal steps (1.182 / 1.181 / 1.180 nats at 3,000 steps), so without it
    bigger backbones would know nothing more and bigger proxies could not be more accurate.
    See ``docs/toy-text-findings.md``."""
    pretrain_batch_size: int = 64
    tokenizer_corpus: int = 20_000
    """Generated (prompt, completion) pairs the BPE tokenizer is trained on."""
    eval_fraction: float = 0.25
    """Fraction of the 800 distinct prompts held out for evaluation (never in preference data)."""
    max_new_tokens: int = 64
    """Completion budget when sampling from the policy."""

    def key(self) -> str:
        blob = json.dumps({**self.model_dump(), "language": LANGUAGE_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


#: Seconds per unit of work of this testbed on the reference machine (the progress estimate of
#: ``experiments.progress.estimate_stages``): the 2-core CPU of BENCHMARKS.md
#: ("The default goodhart run": gold v4, 6,000 pairs, nothing else running), one torch thread.
#: They only seed the estimate; the measured stages rescale it (remaining_seconds).
SECONDS_PER: dict[str, float] = {
    # testbed: tokenizer (2.4 s) and the medium base policy (600 steps, ~80 s) from an empty
    # cache, beside the small backbone (tokenizer + policy + backbone one after the other
    # took 108 s); a testbed already in the cache is only verified.
    "tokenizer": 2.4,
    "policy": 80.0,
    "testbed_cached": 2.0,
    # a reward-model backbone pretrained from scratch, by size (600 / 1,200 / 3,000 steps;
    # pretrain-seed ensembles build one per member beyond the first).
    "backbone_small": 28.0,
    "backbone_medium": 150.0,
    "backbone_large": 730.0,
    # proxies: 6,000 pairs sampled and gold-labelled (~15 s), then 5 members × 2 epochs ×
    # 6,000 pairs of Bradley-Terry (~64 s): per pair, and per pair × member × epoch.
    "proxy_pair": 0.0025,
    "proxy_pair_epoch": 0.00107,
    # bon: 102,400 pool completions (~110 s) scored by gold + 5 proxies (~53 s):
    # per completion sampled, and per completion per scorer.
    "bon_completion": 0.00107,
    "bon_score": 0.000086,
    # rl: one 60-step GRPO run of 8 × 8 rollouts with 7 evaluations of 100 prompts, ~18 s:
    # per training rollout and per evaluation completion.
    "rl_rollout": 0.0038,
    "rl_eval": 0.0045,
    # daa: not benchmarked yet; a policy and a reference forward (and one backward) over two
    # completions per pair, guessed at 3 training rollouts' worth; evaluations as in RL.
    "daa_pair_epoch": 0.02,
    "daa_eval": 0.009,
}


class ToyText:
    """The default testbed. Artifacts are built lazily and cached.

    >>> tb = ToyText()                         # doctest: +SKIP
    >>> policy = tb.load_policy()              # a LlamaForCausalLM
    >>> tb.gold.score(tb.eval_prompts[:2], [" the screen is great .", ""])
    """

    name = "toy_text"
    seconds_per = SECONDS_PER
    backbone_sizes = tuple(SIZES)

    def __init__(
        self,
        config: ToyTextConfig | None = None,
        cache_dir: str | Path | None = None,
        progress: bool = True,
    ):
        self.config = config or ToyTextConfig()
        self.root = Path(cache_dir or default_cache_dir()) / "toy_text" / self.config.key()
        self.progress = progress
        self.gold = ToyTextGold()
        train, evaluation = split_prompts(self.config.seed, self.config.eval_fraction)
        self.train_prompts: list[str] = [p.text for p in train]
        self.eval_prompts: list[str] = [p.text for p in evaluation]
        self._tokenizer = None

    @property
    def gold_version(self) -> str:
        return GOLD_VERSION

    @property
    def gold_components(self) -> dict:
        """The gold's components as reward sources, by name (``components.COMPONENTS``;
        their sum is the gold): what labels the component proxies' pairs."""
        from goodhartlab.testbeds.toy_text.components import COMPONENTS, ToyTextGoldComponent

        return {k: ToyTextGoldComponent(k) for k in COMPONENTS}

    @property
    def gold_components_version(self) -> str:
        from goodhartlab.testbeds.toy_text.components import COMPONENTS_VERSION

        return COMPONENTS_VERSION

    @property
    def bench_gold(self):
        """The gold of the toy_text reward benchmark (``goodhart reward-bench``): this gold on
        toy_text prompts, the reader's on persona prompts, the grounded gold on fact sheets."""
        from goodhartlab.testbeds.toy_text.reward_bench import BenchGold

        return BenchGold()

    @property
    def max_new_tokens(self) -> int:
        return self.config.max_new_tokens

    def _ensure(self, name: str, build) -> Path:
        path = self.root / name
        problem = verify(path)
        if problem is None:
            return path
        if problem != "missing":
            log.warning("cached %s is invalid (%s); rebuilding", path, problem)
        t0 = time.perf_counter()
        with building(path) as tmp:
            info = build(tmp) or {}
            info["build_seconds"] = time.perf_counter() - t0
            (tmp / "build_info.json").write_text(json.dumps(info, indent=2))
        return path

    @property
    def tokenizer_path(self) -> Path:
        def build(tmp: Path):
            corpus = generate_corpus(self.config.tokenizer_corpus, seed=self.config.seed)
            train_tokenizer(corpus).save_pretrained(tmp)
            return {"language": LANGUAGE_VERSION}

        return self._ensure("tokenizer", build)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import PreTrainedTokenizerFast

            self._tokenizer = PreTrainedTokenizerFast.from_pretrained(self.tokenizer_path)
        return self._tokenizer

    def _lm_name(self, size: str, seed: int | None, steps: int | None) -> tuple[str, int, int]:
        seed = self.config.seed if seed is None else seed
        steps = self.config.pretrain_steps[size] if steps is None else steps
        return f"lm-{size}-seed{seed}-steps{steps}", seed, steps

    def lm_path(self, size: str, seed: int | None = None, steps: int | None = None) -> Path:
        """A causal LM of ``size`` pretrained on the language for ``steps`` steps (default: the
        size's backbone budget), built and cached on first use."""
        name, seed, steps = self._lm_name(size, seed, steps)

        def build(tmp: Path):
            model, stats = pretrain_causal_lm(
                size,
                self.tokenizer,
                seed=seed,
                steps=steps,
                batch_size=self.config.pretrain_batch_size,
                progress=self.progress,
                desc=f"pretraining {size} LM (seed {seed}, {steps} steps)",
            )
            model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            return stats

        return self._ensure(name, build)

    @property
    def policy_path(self) -> Path:
        """The base policy π0 (an LM of ``policy_size`` pretrained ``policy_steps`` steps)."""
        return self.lm_path(self.config.policy_size, steps=self.config.policy_steps)

    def backbone_path(self, size: str, seed: int | None = None) -> Path:
        """Reward-model backbone of ``size``: a causal LM of that size pretrained on the language
        for the size's budget (``pretrain_steps``), as real reward models start from pretrained
        LMs. Different seeds give the "pretrain-seed" ensembles of Eisenstein et al. (2023)."""
        return self.lm_path(size, seed)

    def load_policy(self, device: str = "cpu"):
        from transformers import LlamaForCausalLM

        model = LlamaForCausalLM.from_pretrained(self.policy_path).to(device)
        model.eval()
        return model

    def is_built(self, artifact: str, size: str | None = None, seed: int | None = None) -> bool:
        """Whether ``artifact`` ("tokenizer", "policy", or the "backbone" of ``size`` and
        ``seed``) is in the cache and valid; nothing is built.

        The artifacts are independent directories, each built atomically: once the tokenizer
        is built, the policy and any backbones may be built at once in separate processes
        (``experiments.parallel_stages``).
        """
        if artifact == "tokenizer":
            name = "tokenizer"
        elif artifact == "policy":
            name = self._lm_name(self.config.policy_size, None, self.config.policy_steps)[0]
        elif artifact == "backbone":
            if size is None:
                raise ValueError("is_built('backbone'): expected a size")
            name = self._lm_name(size, seed, None)[0]
        else:
            raise ValueError(
                f"artifact: expected 'tokenizer', 'policy' or 'backbone', got {artifact!r}"
            )
        return verify(self.root / name) is None

    def is_cached(self) -> bool:
        """Whether anything of this testbed is in the cache (a rebuild would be quick)."""
        return self.root.is_dir() and any(self.root.iterdir())

    def build_info(self, name: str) -> dict:
        return json.loads((self.root / name / "build_info.json").read_text()) | {
            "manifest": read_info(self.root / name)
        }
