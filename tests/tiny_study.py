"""The tiny toy_text study of the study tests (the study runner, the golden record, kill and
resume, the online-DAA benchmark): a world built in seconds, two proxies, best-of-8, four GRPO
steps and a short offline DAA run. Each test names its own RL methods and DAA runs."""

from __future__ import annotations

import copy
from typing import Any

#: A toy_text world small enough to pretrain and fit its base policy in seconds.
TESTBED_OPTIONS = {
    "policy_steps": 40,
    "pretrain_steps": {"small": 40, "medium": 40, "large": 2},
    "pretrain_batch_size": 16,
    "tokenizer_corpus": 400,
    "max_new_tokens": 24,
}
#: Two proxies (seeds 0, 1), one epoch on 120 gold-labelled pairs.
PROXIES = {"pairs": 120, "seeds": [0, 1], "epochs": 1}
#: Best-of-n from a pool of 8 completions of each of 6 prompts.
BON = {"pool_size": 8, "prompts": 6, "n_boot": 50}
#: Four GRPO steps of 2 prompts x 2 completions, evaluated every 2 steps on 4 prompts.
RL = {
    "steps": 4,
    "eval_every": 2,
    "prompts_per_step": 2,
    "group_size": 2,
    "eval_prompts": 4,
    "lr": 1e-3,
}
#: Offline DAA on 16 pairs in batches of 8, evaluated half-way through the epoch and at its end.
DAA = {
    "enabled": True,
    "max_pairs": 16,
    "batch_size": 8,
    "eval_points_in_first_epoch": [0.5],
    "eval_prompts": 4,
    "lr": 1e-3,
}
OFF = {"enabled": False}


def tiny_study_config(
    *, rl: dict[str, Any] | None, daa: dict[str, Any] | None, bon: bool = True
) -> dict[str, Any]:
    """The tiny study as a config mapping (a fresh copy): the RL and DAA stages are ``RL`` and
    ``DAA`` updated with ``rl`` and ``daa`` (their methods, their runs), None turns a stage
    off; ``bon=False`` turns best-of-n off."""
    config = {
        "testbed_options": TESTBED_OPTIONS,
        "proxies": PROXIES,
        "bon": BON if bon else OFF,
        "rl": {**RL, **rl} if rl is not None else OFF,
        "daa": {**DAA, **daa} if daa is not None else OFF,
    }
    return copy.deepcopy(config)
