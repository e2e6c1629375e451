"""Sampling completions from a causal LM, batched, with a KV cache.

Prompts are left-padded so every row's next token sits in the last column; completions are
decoded without special tokens and always begin with the text that followed the prompt.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


def _decode_completion(tokenizer, ids: list[int]) -> str:
    eos = tokenizer.eos_token_id
    if eos in ids:
        ids = ids[: ids.index(eos)]
    pad = tokenizer.pad_token_id
    ids = [i for i in ids if i != pad]
    return tokenizer.decode(ids, skip_special_tokens=True)


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
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> list[list[str]]:
    """``num_samples`` completions for each prompt, sampled from ``policy``.

    Returns a list (one per prompt) of lists of completion strings. Deterministic for a seed
    on a given device and thread count.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples: expected >= 1, got {num_samples}")
    if not prompts:
        raise ValueError("prompts: expected at least one prompt, got none")
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    policy.eval()
    flat = [p for p in prompts for _ in range(num_samples)]
    out: list[str] = []
    gen = torch.Generator(device="cpu").manual_seed(seed)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        it = range(0, len(flat), batch_size)
        for start in tqdm(it, desc="sampling", disable=not progress, leave=False):
            batch = flat[start : start + batch_size]
            enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items()}
            # A per-batch seed drawn from one generator keeps results independent of batch
            # scheduling elsewhere in the process.
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            seq = policy.generate(
                **enc,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=0,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new = seq[:, enc["input_ids"].shape[1] :].tolist()
            out.extend(_decode_completion(tokenizer, ids) for ids in new)
    finally:
        tokenizer.padding_side = old_side
    return [out[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]
