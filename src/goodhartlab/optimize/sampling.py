"""Sampling completions (as text) from a causal LM.

A thin text interface over ``models.generation.sample_token_ids``, the one sampler of the package
(a KV cache, each distinct prompt prefilled once, finished rows leaving the batch).
Completions are decoded without special tokens and are the text that followed the prompt.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from goodhartlab.models.generation import decode_completion, sample_token_ids


@torch.inference_mode()
def sample_completions(
    policy,
    tokenizer,
    prompts: list[str],
    num_samples: int,
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> list[list[str]]:
    """``num_samples`` completions for each prompt, sampled from ``policy``.

    Returns a list (one per prompt) of lists of completion strings. Deterministic for a seed
    on a given device; rows of one prompt share one prefill.
    """

    if num_samples < 1:
        raise ValueError(f"num_samples: expected >= 1, got {num_samples}")
    if not prompts:
        raise ValueError("prompts: expected at least one prompt, got none")
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    policy.eval()
    policy_device = next(policy.parameters()).device
    gen = torch.Generator(device=policy_device).manual_seed(seed)
    ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    rows = [i for i in range(len(prompts)) for _ in range(num_samples)]
    out: list[str] = []
    for start in tqdm(
        range(0, len(rows), batch_size), desc="sampling", disable=not progress, leave=False
    ):
        chunk = rows[start : start + batch_size]
        distinct = sorted(set(chunk))
        local = {p: k for k, p in enumerate(distinct)}
        batch = sample_token_ids(
            policy,
            [ids[p] for p in distinct],
            [local[p] for p in chunk],
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            temperature=temperature,
            top_p=top_p,
            generator=gen,
        )
        for r in range(len(chunk)):
            n = int(batch.num_tokens[r])
            out.append(decode_completion(tokenizer, batch.tokens[r, :n].tolist()))
    return [out[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]
