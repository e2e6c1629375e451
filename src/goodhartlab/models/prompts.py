"""Prompts as the policy reads them: the one place a prompt becomes token ids for sampling.

An instruct model answers a prompt only when it arrives through the model's chat template
(for SmolLM2-Instruct: ``<|im_start|>user\\n…<|im_end|>\\n<|im_start|>assistant\\n``); fed
raw, it continues the text ("Here's a suggested implementation: …") or says nothing. So
every loop that samples from a policy (best-of-n pools, preference pairs, RL rollouts and
evaluation, DPO's log-probs) turns prompts into ids with :func:`encode_prompts`, which wraps
each prompt as one user turn and adds the generation prompt, as TRL does for conversational
data (``apply_chat_template(..., add_generation_prompt=True)``, then tokenized without
special tokens: the template writes them).

The rule: the template is applied when the tokenizer has one (``tokenizer.chat_template``).
A tokenizer without one (the toy_text tokenizer, GPT-2) gets its prompts raw, exactly as
before. For a base model whose tokenizer nevertheless ships a template, turn it off with
:func:`without_chat_template` (``goodhart bon --no-chat-template``, the real_text testbed's
``chat_template: false``). Prompt strings themselves stay raw everywhere else: gold and
reward models score the prompt text the user wrote, never the template.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

__all__ = ["chat_template", "encode_prompts", "format_prompts", "without_chat_template"]


class _FromTokenizer:
    def __repr__(self) -> str:
        return "FROM_TOKENIZER"


FROM_TOKENIZER: Any = _FromTokenizer()
"""Default of ``template``: use the tokenizer's own chat template (if it has one)."""


def chat_template(tokenizer) -> str | None:
    """The chat template prompts go through for this tokenizer, or None (prompts stay raw)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: the default one, as transformers picks
        template = template.get("default")
    return template if isinstance(template, str) and template.strip() else None


def format_prompts(
    tokenizer, prompts: Sequence[str], *, template: str | None = FROM_TOKENIZER
) -> list[str]:
    """Each prompt as the text the policy is conditioned on.

    Args:
        tokenizer: the policy's tokenizer.
        prompts: the user's prompts (raw text).
        template: a Jinja chat template, None for raw prompts, or (default) the tokenizer's
            own (:func:`chat_template`).

    Returns:
        ``prompts`` unchanged without a template; else each one rendered as a single user
        turn followed by the generation prompt (the assistant's turn opened).

    >>> class Raw: chat_template = None
    >>> format_prompts(Raw(), ["hi"])
    ['hi']
    """
    if template is FROM_TOKENIZER:
        template = chat_template(tokenizer)
    if template is None:
        return list(prompts)
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}],
            chat_template=template,
            tokenize=False,
            add_generation_prompt=True,
        )
        for p in prompts
    ]


def encode_prompts(
    tokenizer,
    prompts: Sequence[str],
    *,
    add_special_tokens: bool = False,
    template: str | None = FROM_TOKENIZER,
) -> list[list[int]]:
    """Token ids of each prompt as the policy reads it (:func:`format_prompts`, then the
    tokenizer). ``add_special_tokens`` applies to raw prompts only: a templated prompt
    already holds the special tokens its template writes. Shape: P lists of P_i ids."""
    texts = format_prompts(tokenizer, prompts, template=template)
    templated = template is not None and (
        template is not FROM_TOKENIZER or chat_template(tokenizer) is not None
    )
    ids = tokenizer(texts, add_special_tokens=add_special_tokens and not templated)["input_ids"]
    return [list(x) for x in ids]


def without_chat_template(tokenizer):
    """A shallow copy of ``tokenizer`` whose prompts stay raw (its chat template removed);
    the tokenizer given is not changed."""
    if chat_template(tokenizer) is None:
        return tokenizer
    raw = copy.copy(tokenizer)
    raw.chat_template = None
    return raw
