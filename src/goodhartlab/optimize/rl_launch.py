"""``goodhart rl``: build an RL run from command-line settings, and resume it from its directory.

The settings are a flat dict (``LAUNCH_DEFAULTS`` filled in by what the user gave); it is
saved in config.yaml under ``launch`` so ``goodhart rl --resume RUN_DIR`` can rebuild the
same run without repeating the command line. Settings given again on resume override the
saved ones, and :func:`goodhartlab.optimize.rl.run_rl` refuses any that change the run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from goodhartlab.optimize.rl import RLConfig, RLResult, run_rl
from goodhartlab.rewards.pipeline import RewardPipelineConfig

__all__ = ["LAUNCH_DEFAULTS", "launch_rl"]

#: Every ``goodhart rl`` setting and its default (None: not given).
LAUNCH_DEFAULTS: dict[str, Any] = {
    "testbed": None,  # toy_text unless --policy is given
    "cache_dir": None,
    "policy": None,
    "prompts": None,
    "eval_prompts_file": None,
    "gold": None,
    "proxy": None,
    "ensemble": None,
    "aggregator": "mean",
    "lam": None,
    "shaping": "none",
    "reference_samples": 10,
    "algorithm": "grpo",
    "kl_coef": 0.0,
    "kl_in": "reward",
    "kl_target": None,
    "steps": 200,
    "prompts_per_step": 8,
    "group_size": 8,
    "epochs": 1,
    "minibatch_size": None,
    "lr": 1e-4,
    "max_new_tokens": None,  # the testbed's, else 64
    "temperature": 1.0,
    "eval_every": 10,
    "eval_prompts": 100,
    "eval_samples": 2,
    "checkpoint_every": 50,
    "seed": 0,
    "device": "cpu",
    "bf16": False,
}


def _reward_source(s: dict[str, Any], device: str):
    from goodhartlab.rewards import Ensemble, RewardModel

    if s["proxy"] and s["ensemble"]:
        raise ValueError("give either --proxy DIR or --ensemble DIR..., not both")
    if s["proxy"]:
        return RewardModel.from_pretrained(s["proxy"], device=device)
    if s["ensemble"]:
        from goodhartlab.optimize.bon import ensemble_member_dirs

        dirs = s["ensemble"]
        members = ensemble_member_dirs(dirs[0]) if len(dirs) == 1 else [Path(d) for d in dirs]
        return Ensemble.from_dirs(members, device=device)
    raise ValueError("a proxy is required: --proxy RM_DIR or --ensemble DIR [DIR ...]")


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
    unknown = set(given) - set(LAUNCH_DEFAULTS)
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
    s = {**LAUNCH_DEFAULTS, **saved, **given}

    testbed = s["testbed"] or ("toy_text" if s["policy"] is None else None)
    tb = None
    if testbed is not None:
        from goodhartlab.testbeds import get_testbed

        tb = get_testbed(testbed, cache_dir=s["cache_dir"])
    if tb is None and (s["prompts"] is None or s["gold"] is None):
        raise ValueError("--policy without --testbed needs --prompts FILE and --gold RM_DIR")
    device = s["device"]
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
    reward = _reward_source(s, device)

    params = {} if s["lam"] is None else {"lam": float(s["lam"])}
    config = RLConfig(
        algorithm=s["algorithm"],
        steps=s["steps"],
        prompts_per_step=s["prompts_per_step"],
        group_size=s["group_size"],
        epochs=s["epochs"],
        minibatch_size=s["minibatch_size"],
        lr=s["lr"],
        kl_coef=s["kl_coef"],
        kl_in=s["kl_in"],
        kl_target=s["kl_target"],
        max_new_tokens=s["max_new_tokens"] or (tb.max_new_tokens if tb is not None else 64),
        temperature=s["temperature"],
        eval_every=s["eval_every"],
        eval_prompts=s["eval_prompts"],
        eval_samples=s["eval_samples"],
        checkpoint_every=s["checkpoint_every"],
        seed=s["seed"],
        device=device,
        bf16=s["bf16"],
        reward=RewardPipelineConfig(
            aggregator=s["aggregator"],
            aggregator_params=params,
            shaping=s["shaping"],
            reference_samples=s["reference_samples"],
        ),
    )
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
        launch=s,
        progress=progress,
    )
