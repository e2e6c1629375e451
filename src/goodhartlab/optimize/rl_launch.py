"""``goodhart rl``: build an RL run from command-line settings, and resume it from its directory.

The settings are the fields of three models, each default written once there:
:class:`RLLaunch` (what to train and against what), ``RLConfig`` (how) and
``RewardPipelineConfig`` (the proxy's aggregation and shaping). The CLI's flags are made
from them (``goodhartlab.cli_args``) and pass only what the user gave; those settings are
saved in config.yaml under ``launch`` so ``goodhart rl --resume RUN_DIR`` can rebuild the
same run without repeating the command line. Settings given again on resume override the
saved ones, and :func:`goodhartlab.optimize.rl.run_rl` refuses any that change the run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from goodhartlab.data import read_pairs
from goodhartlab.optimize.rl import RLConfig, RLResult, chosen_targets, run_rl
from goodhartlab.registry import TESTBEDS, name_in
from goodhartlab.rewards.pipeline import RewardPipelineConfig

__all__ = ["CONFIG_FIELDS", "REWARD_FIELDS", "RLLaunch", "launch_rl", "settings"]


class RLLaunch(BaseModel):
    """What ``goodhart rl`` trains, against what, and where its data come from."""

    model_config = ConfigDict(extra="forbid")
    testbed: name_in(TESTBEDS) | None = Field(
        None, description="testbed name (default: toy_text unless --policy is given)"
    )
    cache_dir: str | None = Field(
        None, description="testbed cache (default: $GOODHART_CACHE or ~/.cache/goodhart-lab)"
    )
    policy: str | None = Field(
        None, description="base policy: local path or hub name (instead of the testbed's)"
    )
    prompts: str | None = Field(
        None,
        description="training prompts file: .jsonl (field 'prompt'), .json list, or one per line",
    )
    eval_prompts_file: str | None = Field(
        None, description="held-out prompts file (with --prompts)"
    )
    gold: str | None = Field(
        None, description="reward-model directory used as gold (instead of the testbed's)"
    )
    proxy: str | None = Field(
        None,
        description="the proxy reward model directory (or a pairwise preference model's, "
        "for --algorithm nash_mp)",
    )
    ensemble: list[str] | None = Field(
        None, description="ensemble member directories, or one ensemble directory"
    )
    sft_pairs: str | None = Field(
        None,
        description="with --sft-source chosen: a preference pairs file (.jsonl or .parquet, "
        "e.g. the proxy's training pairs) whose chosen completions are the SFT term's targets",
    )
    monitor_heldout: str | None = Field(
        None,
        description="with --monitor: a reward-model directory the run is not trained on, "
        "read by the held-out divergence detector",
    )
    monitor_ensemble: list[str] | None = Field(
        None,
        description="with --monitor: ensemble member directories whose disagreement the "
        "monitor reads (default: the --ensemble being optimized, if any)",
    )


#: RLConfig's fields that ``goodhart rl`` sets (``reward`` is made of REWARD_FIELDS; ``name``
#: is the method label of a study).
CONFIG_FIELDS = [f for f in RLConfig.model_fields if f not in ("reward", "name")]
REWARD_FIELDS = list(RewardPipelineConfig.model_fields)


def settings() -> list[str]:
    """Every setting of ``goodhart rl``, by field name."""
    return [*RLLaunch.model_fields, *CONFIG_FIELDS, *REWARD_FIELDS]


def _check_proxy_given(s: dict[str, Any]) -> None:
    """Exactly one of --proxy and --ensemble."""
    if s["proxy"] and s["ensemble"]:
        raise ValueError("give either --proxy DIR or --ensemble DIR..., not both")
    if not s["proxy"] and not s["ensemble"]:
        raise ValueError("a proxy is required: --proxy RM_DIR or --ensemble DIR [DIR ...]")


def reward_source(s: dict[str, Any], device: str):
    """The proxy of the settings: a reward model, a pairwise preference model (a --proxy
    directory trained with objective 'pairwise') or an ensemble (registry 'reward_source')."""
    from goodhartlab.rewards import REWARD_SOURCES
    from goodhartlab.rewards.pairwise import is_pairwise_model

    _check_proxy_given(s)
    if s["proxy"] and is_pairwise_model(s["proxy"]):
        return REWARD_SOURCES["pairwise_preference"](s["proxy"], device=device)
    if s["proxy"]:
        return REWARD_SOURCES["reward_model"](s["proxy"], device=device)
    return REWARD_SOURCES["ensemble"](list(s["ensemble"]), device=device)


def monitor_sources(s: dict[str, Any], device: str) -> dict[str, Any]:
    """The rewards the monitor reads besides the optimized one (``--monitor-*``)."""
    from goodhartlab.rewards import REWARD_SOURCES

    sources: dict[str, Any] = {}
    if s["monitor_heldout"]:
        sources["heldout"] = REWARD_SOURCES["reward_model"](s["monitor_heldout"], device=device)
    if s["monitor_ensemble"]:
        sources["members"] = REWARD_SOURCES["ensemble"](list(s["monitor_ensemble"]), device=device)
    return sources


def launch_rl(
    given: dict[str, Any],
    *,
    out: str | None,
    resume: str | None,
    read_prompts: Callable[[str], list[str]],
    progress: bool = True,
) -> RLResult:
    """Run (or resume) ``goodhart rl`` with the settings the user ``given`` (unknown keys fail).

    ``read_prompts(path) -> prompts`` reads a prompts file (the CLI's one format for every
    command).
    """
    known = settings()
    unknown = set(given) - set(known)
    if unknown:
        raise ValueError(f"unknown settings: {sorted(unknown)}")
    if (out is None) == (resume is None):
        raise ValueError("give exactly one of --out RUN_DIR (a new run) or --resume RUN_DIR")
    saved: dict[str, Any] = {}
    if resume is not None:
        config_file = Path(resume) / "config.yaml"
        if not config_file.is_file():
            raise FileNotFoundError(f"--resume: {config_file} not found (not an RL run directory)")
        saved = (yaml.safe_load(config_file.read_text()) or {}).get("launch") or {}
        if not saved:
            raise ValueError(
                f"--resume: {config_file} has no launch settings (not started by goodhart rl)"
            )
    given_now = {**{k: v for k, v in saved.items() if k in known}, **given}
    s = RLLaunch(**{k: v for k, v in given_now.items() if k in RLLaunch.model_fields})
    s = s.model_dump()
    # Bad settings fail here, before the testbed is built (minutes from an empty cache).
    cfg = {k: v for k, v in given_now.items() if k in CONFIG_FIELDS}
    reward_cfg = {k: v for k, v in given_now.items() if k in REWARD_FIELDS}
    checked = RLConfig(**cfg, reward=RewardPipelineConfig(**reward_cfg))
    _check_proxy_given(s)
    sft_pairs = None
    if s["sft_pairs"]:
        sft_pairs = read_pairs(s["sft_pairs"])
        if not sft_pairs:
            raise ValueError(f"sft_pairs: {s['sft_pairs']} holds no preference pairs")
    chosen_targets(checked, sft_pairs)

    testbed = s["testbed"] or ("toy_text" if s["policy"] is None else None)
    tb = None
    if testbed is not None:
        from goodhartlab.testbeds import get_testbed

        tb = get_testbed(testbed, cache_dir=s["cache_dir"])
    if tb is None and (s["prompts"] is None or s["gold"] is None):
        raise ValueError("--policy without --testbed needs --prompts FILE and --gold RM_DIR")
    device = given_now.get("device", RLConfig.model_fields["device"].default)
    tokenizer = tb.tokenizer if tb is not None and s["policy"] is None else None
    policy = s["policy"] or str(tb.policy_path)
    train_prompts = read_prompts(s["prompts"]) if s["prompts"] else tb.train_prompts
    if s["eval_prompts_file"]:
        eval_prompts = read_prompts(s["eval_prompts_file"])
    elif tb is not None and not s["prompts"]:
        eval_prompts = tb.eval_prompts
    else:
        raise ValueError("--prompts without the testbed's prompts needs --eval-prompts-file FILE")
    if s["gold"]:
        from goodhartlab.rewards import RewardModel

        gold = RewardModel.from_pretrained(s["gold"], device=device)
    else:
        gold = tb.gold
    reward = reward_source(s, device)

    sources = monitor_sources(s, device) if cfg.get("monitor") is not None else None
    if tb is not None:
        cfg.setdefault("max_new_tokens", tb.max_new_tokens)
    config = RLConfig(**cfg, reward=RewardPipelineConfig(**reward_cfg))
    return run_rl(
        resume or out,
        policy=policy,
        tokenizer=tokenizer,
        reward=reward,
        gold=gold,
        train_prompts=train_prompts,
        eval_prompts=eval_prompts,
        config=config,
        resume=resume is not None,
        launch=given_now,
        progress=progress,
        monitor_sources=sources,
        sft_pairs=sft_pairs,
    )
