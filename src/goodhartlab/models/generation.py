"""Sampling from a causal LM with a KV cache: the one sampler of the package.

Best-of-n pools (``optimize.pool``), text sampling (:func:`sample_completions`, for preference
pairs), and RL rollouts and evaluation (``measure.evaluate``) all draw through
:func:`sample_token_ids`. Prompts are
left-padded and given ``generate``'s position ids (real tokens count from 0), so sampling and
a plain forward pass agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from goodhartlab.models.prompts import encode_prompts


@dataclass(frozen=True)
class SampledBatch:
    """Completions sampled for one batch of rows."""

    tokens: Tensor
    """Generated ids, ``pad`` after EOS (EOS itself kept). Shape: (B, T), T ≤ max_new_tokens."""
    num_tokens: Tensor
    """Tokens before EOS (the completion's length), int64. Shape: (B,)."""
    eos: Tensor
    """True where the row generated EOS, False where it stopped at max_new_tokens. Shape: (B,)."""
    logp: Tensor | None = None
    """With ``return_logprobs``: log-prob of each sampled token under the distribution it was
    drawn from (softmax(logits / temperature), after top-p), 0 after EOS. Shape: (B, T)."""


def decode_completion(tokenizer, ids: Sequence[int]) -> str:
    """The text of a completion's token ids (before EOS; special tokens dropped)."""
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def position_ids(mask: Tensor) -> Tensor:
    """Position ids as ``generate`` computes them: real tokens count from 0, padding gets 0.

    Shape: (B, T) -> (B, T)
    """
    return (mask.cumsum(-1) - 1).clamp(min=0)


def left_pad(prompt_ids: Sequence[Sequence[int]], pad_token_id: int) -> tuple[Tensor, Tensor]:
    width = max(len(ids) for ids in prompt_ids)
    input_ids = torch.full((len(prompt_ids), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for i, ids in enumerate(prompt_ids):
        if len(ids):
            input_ids[i, width - len(ids) :] = torch.as_tensor(list(ids), dtype=torch.long)
            mask[i, width - len(ids) :] = 1
    return input_ids, mask


def right_pad(rows: Sequence[Sequence[int]], pad_token_id: int) -> tuple[Tensor, Tensor]:
    """Token-id rows padded on the right to the longest, and their attention mask (1 on the
    tokens). Shapes: B rows -> (B, T), (B, T)."""
    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
        mask[i, : len(ids)] = 1
    return input_ids, mask


def _top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    # As transformers' TopPLogitsWarper: drop the tokens whose ascending cumulative
    # probability stays ≤ 1 − top_p, always keeping the most likely one.
    sorted_logits, sorted_idx = torch.sort(logits, descending=False, dim=-1)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cum <= (1 - top_p)
    remove_sorted[:, -1] = False
    remove = remove_sorted.scatter(1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def _next_tokens(
    logits: Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """(next token ids, their log-probs under the distribution sampled from)."""
    if temperature == 0:
        nxt = logits.argmax(dim=-1)
        return nxt, torch.zeros(nxt.shape, dtype=torch.float32, device=nxt.device)
    logits = logits.float() / temperature
    if top_p < 1.0:
        logits = _top_p_filter(logits, top_p)
    logprobs = torch.log_softmax(logits, dim=-1)
    nxt = torch.multinomial(logprobs.exp(), 1, generator=generator).squeeze(1)
    return nxt, logprobs.gather(1, nxt.unsqueeze(1)).squeeze(1)


@torch.no_grad()  # not inference_mode: RL feeds the sampled ids back into autograd
def sample_token_ids(
    policy: nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    row_prompt: Sequence[int],
    *,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    return_logprobs: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> SampledBatch:
    """Sample one completion per row from a causal LM with a KV cache.

    Tokens are drawn from the model's own next-token distribution, shaped only by
    ``temperature`` and ``top_p`` (the model's ``generation_config`` — repetition penalty,
    top-k, … — is not applied: best-of-n estimates need samples of the policy itself).
    Each distinct prompt is prefilled once and its cache copied to its rows, so N samples
    of one prompt cost one prefill. Rows that generate EOS are removed from the batch
    (their cache rows dropped) once a quarter of the batch has finished.

    Args:
        policy: a causal LM (``transformers`` ``*ForCausalLM``), in eval mode.
        prompt_ids: token ids of each distinct prompt (no padding).
        row_prompt: for each output row, the index of its prompt. Shape: (B,).
        max_new_tokens: most tokens generated per row (EOS included).
        eos_token_id: stops a row.
        pad_token_id: fills prompt padding and the positions after EOS.
        temperature: softmax temperature; 0 is greedy decoding (argmax).
        top_p: nucleus sampling threshold in (0, 1]; 1 keeps the whole distribution.
        generator: random generator on the policy's device (None: torch's global one).
        return_logprobs: also return each sampled token's log-prob (for RL).
        autocast_dtype: run the forward passes under autocast to this dtype (bf16).

    Returns:
        ``SampledBatch(tokens (B, T), num_tokens (B,), eos (B,))`` on the CPU.
    """
    if not prompt_ids:
        raise ValueError("prompt_ids: expected at least one prompt")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature: expected >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p: expected in (0, 1], got {top_p}")
    device = next(policy.parameters()).device
    rows = torch.as_tensor(list(row_prompt), dtype=torch.long)
    n_rows = rows.numel()
    if n_rows == 0:
        raise ValueError("row_prompt: expected at least one row")

    from transformers import DynamicCache

    input_ids, mask = left_pad(prompt_ids, pad_token_id)
    width = input_ids.shape[1]
    positions = position_ids(mask)
    prefill = dict(
        input_ids=input_ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        use_cache=True,
    )
    autocast = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    with autocast:
        try:  # logits of the last position only: the prefill's vocabulary projection is skipped
            out = policy(**prefill, past_key_values=DynamicCache(), logits_to_keep=1)
        except TypeError:  # a model whose forward has no logits_to_keep
            out = policy(**prefill, past_key_values=DynamicCache())
    rows_dev = rows.to(device)
    cache = out.past_key_values
    cache.batch_select_indices(rows_dev)
    logits = out.logits[:, -1, :][rows_dev]

    # Full-length attention mask, filled in as tokens are generated.
    full_mask = torch.ones((n_rows, width + max_new_tokens), dtype=torch.long, device=device)
    full_mask[:, :width] = mask.to(device)[rows_dev]
    next_pos = positions[:, -1].to(device)[rows_dev] + 1

    tokens = torch.full((n_rows, max_new_tokens), pad_token_id, dtype=torch.long)
    num_tokens = torch.full((n_rows,), max_new_tokens, dtype=torch.long)
    eos = torch.zeros(n_rows, dtype=torch.bool)
    logp = torch.zeros((n_rows, max_new_tokens), dtype=torch.float32) if return_logprobs else None
    active = torch.arange(n_rows, device=device)  # output row of each batch row
    live = torch.ones(n_rows, dtype=torch.bool, device=device)  # batch row still generating
    steps = 0
    for t in range(max_new_tokens):
        nxt, nxt_logp = _next_tokens(logits, temperature, top_p, generator)
        nxt = torch.where(live, nxt, torch.full_like(nxt, pad_token_id))
        tokens[active.cpu(), t] = nxt.cpu()
        if logp is not None:
            logp[active.cpu(), t] = torch.where(live, nxt_logp, torch.zeros_like(nxt_logp)).cpu()
        hit = live & (nxt == eos_token_id)
        if bool(hit.any()):
            done_rows = active[hit].cpu()
            num_tokens[done_rows] = t
            eos[done_rows] = True
            live = live & ~hit
        steps = t + 1
        n_live = int(live.sum())
        if n_live == 0 or t == max_new_tokens - 1:
            break
        if n_live <= 0.75 * live.numel():
            keep = live.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            active, nxt, next_pos, live = active[keep], nxt[keep], next_pos[keep], live[keep]
        with autocast:
            out = policy(
                input_ids=nxt.unsqueeze(1),
                attention_mask=full_mask[active, : width + t + 1],
                position_ids=next_pos.unsqueeze(1),
                past_key_values=cache,
                use_cache=True,
            )
        cache = out.past_key_values
        logits = out.logits[:, -1, :]
        next_pos = next_pos + 1
    return SampledBatch(
        tokens=tokens[:, :steps],
        num_tokens=num_tokens,
        eos=eos,
        logp=logp[:, :steps] if logp is not None else None,
    )


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
    on_batch: Callable[[int, int], None] | None = None,
) -> list[list[str]]:
    """``num_samples`` completions for each prompt, sampled from ``policy``, as text.

    A thin text interface over :func:`sample_token_ids`: prompts go through the chat
    template when the tokenizer has one (``models.prompts.encode_prompts``); completions
    are decoded without special tokens and are the text that followed the prompt.
    ``on_batch(prompts_done, prompts)`` is called after each batch (a prompt is done once
    all its samples are).

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
    ids = encode_prompts(tokenizer, prompts)
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
        if on_batch is not None:
            on_batch(len(out) // num_samples, len(prompts))
    return [out[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]
