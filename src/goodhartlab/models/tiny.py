"""Tiny Llama-style models built from configs: policies, reward models and value heads.

Llama-style rather than GPT-2: GPT-2's position ids under left padding differ between
``generate`` and a plain forward pass, which silently breaks log-prob bookkeeping in RL.
Dropout is off everywhere (RL and reward scoring must be deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification


@dataclass(frozen=True)
class TinySize:
    """Shape of one tiny model size."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int


#: Sizes span ~10x in parameters (see ``count_parameters``).
SIZES: dict[str, TinySize] = {
    "small": TinySize(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
    ),
    "medium": TinySize(
        hidden_size=96, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256
    ),
    "large": TinySize(
        hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=384
    ),
}


def llama_config(
    size: str,
    vocab_size: int,
    *,
    pad_token_id: int,
    eos_token_id: int,
    bos_token_id: int | None = None,
    max_position_embeddings: int = 128,
    num_labels: int = 1,
) -> LlamaConfig:
    """A Llama config of a named tiny size, dropout off."""
    if size not in SIZES:
        raise ValueError(f"size: expected one of {sorted(SIZES)}, got {size!r}")
    s = SIZES[size]
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=s.hidden_size,
        intermediate_size=s.intermediate_size,
        num_hidden_layers=s.num_hidden_layers,
        num_attention_heads=s.num_attention_heads,
        num_key_value_heads=s.num_attention_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=bos_token_id if bos_token_id is not None else eos_token_id,
        tie_word_embeddings=True,
        attention_dropout=0.0,
        num_labels=num_labels,
    )


def build_causal_lm(
    size: str, tokenizer, *, seed: int = 0, max_position_embeddings: int = 128
) -> LlamaForCausalLM:
    """A freshly initialised tiny ``LlamaForCausalLM`` for ``tokenizer``'s vocabulary."""
    cfg = llama_config(
        size,
        len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        max_position_embeddings=max_position_embeddings,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def build_reward_model(
    size: str, tokenizer, *, seed: int = 0, max_position_embeddings: int = 128
) -> LlamaForSequenceClassification:
    """A freshly initialised tiny ``LlamaForSequenceClassification`` with one output (a reward)."""
    cfg = llama_config(
        size,
        len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        max_position_embeddings=max_position_embeddings,
        num_labels=1,
    )
    torch.manual_seed(seed)
    return LlamaForSequenceClassification(cfg)


def count_parameters(model: torch.nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total
