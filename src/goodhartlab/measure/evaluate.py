"""Evaluation of a policy at a checkpoint: gold, proxy, KL(π ‖ π0), length, diversity.

Also the two model-level pieces evaluation and RL share (the RL loop imports them from here,
the layer below it):

* :func:`sample_rollouts`: sample completions with a KV cache and keep the token ids and the
  log-probability of each sampled token under the sampling distribution;
* :func:`completion_logprobs`: the same log-probabilities from one forward pass over
  prompt + completion (left padding, position ids from the attention mask, as ``generate``
  computes them, so both agree for any Hugging Face causal LM with rotary or learned
  positions).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from goodhartlab.core.kl import sequence_kl
from goodhartlab.models.generation import (
    decode_completion,
    left_pad,
    position_ids,
    right_pad,
    sample_token_ids,
)
from goodhartlab.models.prompts import encode_prompts

__all__ = [
    "EvalOutput",
    "Rollouts",
    "completion_logprobs",
    "completion_rollouts",
    "distinct_n",
    "evaluate_policy",
    "position_ids",
    "sample_rollouts",
]


@dataclass(frozen=True)
class Rollouts:
    """Completions sampled for B rows (row i from prompt ``row_prompt[i]``), on the policy's device."""

    prompt_ids: Tensor
    """Prompt tokens, left-padded with pad. Shape: (B, P)"""
    prompt_mask: Tensor
    """1 on prompt tokens, 0 on padding. Shape: (B, P)"""
    completion_ids: Tensor
    """Sampled tokens, EOS kept, pad after it. Shape: (B, T)"""
    completion_mask: Tensor
    """1 on sampled tokens up to and including the first EOS (the actions). Shape: (B, T)"""
    logp: Tensor
    """log π_τ of each sampled token at sampling time (τ the temperature), 0 off the mask.
    Shape: (B, T)"""
    num_tokens: Tensor
    """Completion length in tokens, EOS excluded. Shape: (B,)"""
    eos: Tensor
    """True where the row ended with EOS, False where it hit the length cap. Shape: (B,)"""
    completions: list[str]
    """Decoded completions (tokens before EOS, special tokens skipped). Length B."""

    @property
    def input_ids(self) -> Tensor:
        """Prompt + completion. Shape: (B, P + T)"""
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> Tensor:
        """Shape: (B, P + T)"""
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)

    def to(self, device: torch.device) -> Rollouts:
        """The rows with their token tensors on ``device`` (``num_tokens`` and ``eos`` stay
        on the CPU, as :func:`sample_rollouts` leaves them)."""
        return dataclasses.replace(
            self,
            prompt_ids=self.prompt_ids.to(device),
            prompt_mask=self.prompt_mask.to(device),
            completion_ids=self.completion_ids.to(device),
            completion_mask=self.completion_mask.to(device),
            logp=self.logp.to(device),
        )

    def select(self, idx: Tensor) -> Rollouts:
        """The rows ``idx``."""
        idx = idx.to(self.prompt_ids.device)
        return Rollouts(
            self.prompt_ids[idx],
            self.prompt_mask[idx],
            self.completion_ids[idx],
            self.completion_mask[idx],
            self.logp[idx],
            self.num_tokens[idx.cpu()],
            self.eos[idx.cpu()],
            [self.completions[int(i)] for i in idx.tolist()],
        )


def sample_rollouts(
    policy: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    num_samples: int,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Rollouts:
    """Sample ``num_samples`` completions of each prompt, keeping ids and log-probs.

    Rows are prompt-major: rows ``i * num_samples ... (i + 1) * num_samples − 1`` belong to
    prompt i (the group layout of ``core.advantages``). Each prompt is prefilled once and
    its KV cache copied to its rows; rows that have emitted EOS are dropped from the batch
    once a quarter of it has finished. Sampling is from softmax(logits / temperature), with
    no top-k / top-p, so the recorded log-probs are those of the distribution sampled from.
    The policy should be in eval mode (dropout off).

    Args:
        policy: a causal LM.
        tokenizer: its tokenizer (needs ``eos_token_id``; ``pad_token_id`` or eos as pad).
        prompts: the P prompts, through the tokenizer's chat template when it has one
            (``models.prompts.encode_prompts``), else tokenized without special tokens.
        num_samples: completions per prompt (G).
        max_new_tokens: most tokens per completion (EOS included).
        temperature: τ > 0.
        generator: random generator on the policy's device (None: torch's global one).
        autocast_dtype: run the forward passes under autocast to this dtype (bf16).

    Returns:
        :class:`Rollouts` with B = P · num_samples rows.
    """
    if not prompts:
        raise ValueError("prompts: expected at least one prompt")
    if num_samples < 1:
        raise ValueError(f"num_samples: expected >= 1, got {num_samples}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected >= 1, got {max_new_tokens}")
    if not temperature > 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("tokenizer: expected an eos_token to end completions")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    device = next(policy.parameters()).device
    prompt_ids = encode_prompts(tokenizer, prompts)
    if any(len(x) == 0 for x in prompt_ids):
        raise ValueError("prompts: an empty prompt has no token to condition on")
    rows = torch.arange(len(prompts)).repeat_interleave(num_samples)
    batch = sample_token_ids(
        policy,
        prompt_ids,
        rows.tolist(),
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        temperature=temperature,
        generator=generator,
        return_logprobs=True,
        autocast_dtype=autocast_dtype,
    )
    input_ids, mask = left_pad(prompt_ids, pad_id)
    steps = batch.tokens.shape[1]
    # Actions: every token up to and including the first EOS.
    completion_mask = (torch.arange(steps).unsqueeze(0) <= batch.num_tokens.unsqueeze(1)).long()
    completions = [
        decode_completion(tokenizer, batch.tokens[i, : int(batch.num_tokens[i])].tolist())
        for i in range(rows.numel())
    ]
    return Rollouts(
        prompt_ids=input_ids[rows].to(device),
        prompt_mask=mask[rows].to(device),
        completion_ids=batch.tokens.to(device),
        completion_mask=completion_mask.to(device),
        logp=(batch.logp * completion_mask).to(device),
        num_tokens=batch.num_tokens,
        eos=batch.eos,
        completions=completions,
    )


def completion_rollouts(tokenizer, prompts: Sequence[str], completions: Sequence[str]) -> Rollouts:
    """Given texts as :class:`Rollouts` rows, as a policy's samples of them would be: the
    prompt (through the chat template, left-padded) and the completion's tokens + EOS
    (right-padded, EOS in the mask), so that :func:`completion_logprobs` scores them; the
    rows' ``logp`` (no sampling here) are 0. On the CPU; row i is (prompts[i], completions[i]).

    Used for the chosen / rejected completions of preference pairs (DPO and its kin, the RL
    loop's SFT term on chosen data)."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    prompt_ids, prompt_mask = left_pad(encode_prompts(tokenizer, prompts), pad)
    toks = [
        [*ids, eos] for ids in tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    ]
    completion_ids, completion_mask = right_pad(toks, pad)
    num_tokens = completion_mask.sum(dim=1) - 1
    return Rollouts(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        logp=torch.zeros(completion_ids.shape),
        num_tokens=num_tokens,
        eos=torch.ones(len(toks), dtype=torch.bool),
        completions=list(completions),
    )


def completion_logprobs(
    model: nn.Module,
    rollouts: Rollouts,
    temperature: float = 1.0,
    *,
    return_hidden: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """log π_τ of each completion token from one forward pass over prompt + completion.

        logp[i, t] = log softmax(logits(prompt_i, y_i,<t) / τ)[y_i,t]

    Carries the gradient when called outside ``no_grad``. Agrees with the sampling-time
    log-probs of :func:`sample_rollouts` up to floating-point error.

    Args:
        model: a causal LM.
        rollouts: the rows to score.
        temperature: τ, the temperature the completions were sampled at.
        return_hidden: also return the last hidden state at the positions that predict the
            completion tokens (for a value head). Shape: (B, T, H)

    Returns:
        ``logp``, 0 off ``completion_mask``. Shape: (B, T)
    """
    input_ids, mask = rollouts.input_ids, rollouts.attention_mask
    width = rollouts.prompt_ids.shape[1]
    out = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=position_ids(mask),
        use_cache=False,
        output_hidden_states=return_hidden,
    )
    logits = out.logits[:, width - 1 : -1, :].float() / temperature
    target = rollouts.completion_ids.unsqueeze(-1)
    logp = logits.gather(-1, target).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    logp = logp * rollouts.completion_mask
    if return_hidden:
        return logp, out.hidden_states[-1][:, width - 1 : -1, :]
    return logp


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n: distinct word n-grams / all word n-grams, over all texts together.

    Li, Galley, Brockett, Gao, Dolan 2016, "A diversity-promoting objective function for
    neural conversation models", arXiv 1510.03055. Words are whitespace-separated. 0 when
    there is no n-gram.

    >>> distinct_n(["a b a b", "a b"], 2)   # bigrams ab, ba, ab, ab: 2 distinct of 4
    0.5
    """
    if n < 1:
        raise ValueError(f"n: expected >= 1, got {n}")
    total, seen = 0, set()
    for text in texts:
        words = text.split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def _scores(source: Any, prompts: list[str], completions: list[str]) -> Tensor:
    fn = source.score if callable(getattr(source, "score", None)) else source
    r = torch.as_tensor(fn(prompts, completions), dtype=torch.float32).cpu()
    if r.shape != (len(prompts),):
        raise ValueError(f"gold: expected {len(prompts)} scores, got shape {tuple(r.shape)}")
    return r


class EvalOutput(NamedTuple):
    """What :func:`evaluate_policy` returns."""

    metrics: dict[str, Any]
    samples: list[dict[str, Any]]
    monitor_record: dict[str, Any] | None
    """With ``monitor`` sources: the monitor's inputs at this evaluation, no gold (the fields
    of ``goodhartlab.monitor.EvalPoint`` but ``step``, as plain lists); else None."""


def _monitor_record(
    sources: Any,
    prompts: list[str],
    completions: list[str],
    r_proxy: Tensor,
    r_members: Tensor | None,
    ids: list[list[int]],
    logp: list[list[float]],
    kl: float | None,
    num_samples: int,
) -> dict[str, Any]:
    """The monitor's view of an evaluation: the optimized proxy's and the monitoring
    rewards' scores of the same samples, their tokens and log-probs, no gold."""
    record: dict[str, Any] = {
        "r_proxy": r_proxy.tolist(),
        "completions": completions,
        "completion_ids": ids,
        "logp": logp,
    }
    if kl is not None:
        record["kl"] = kl
    members = sources.get("members")
    if r_members is None and members is not None:
        r_members = torch.as_tensor(members.score_members(prompts, completions))
    if r_members is not None and r_members.shape[0] >= 2:
        record["r_members"] = r_members.tolist()
    heldout, rows = sources.get("heldout"), sources.get("heldout_members")
    if heldout is not None:
        record["r_heldout"] = _scores(heldout, prompts, completions).tolist()
    elif rows and r_members is not None:  # the mean of members not optimized against
        record["r_heldout"] = r_members[list(rows)].mean(dim=0).tolist()
    latent_model = sources.get("latents")
    if latent_model is not None:
        _, latents = latent_model.score_with_latents(prompts, completions)
        record["latents"] = latents.tolist()
    if num_samples >= 2:
        record["r_groups"] = r_proxy.reshape(-1, num_samples).tolist()
    return record


@torch.no_grad()
def evaluate_policy(
    policy: nn.Module,
    reference: nn.Module | None,
    tokenizer,
    prompts: Sequence[str],
    *,
    gold: Any,
    proxy: Any,
    num_samples: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
    num_logged_samples: int = 0,
    autocast_dtype: torch.dtype | None = None,
    monitor: dict[str, Any] | None = None,
) -> EvalOutput:
    """Sample held-out prompts from ``policy`` and measure gold, proxy, KL and diversity.

    The KL is estimated from the policy's own samples: per completion
    ``core.kl.sequence_kl`` of log π_τ against log π0_τ (both at the evaluation temperature,
    i.e. the KL between the two decoding distributions), k1 (unbiased) and k3 (unbiased,
    ≥ 0 per token), averaged over completions. ``d = sqrt(max(kl, 0))`` with the k1 mean.

    Sampling uses a generator seeded with ``seed`` afresh on every call, so successive
    evaluations of a run share their random numbers (common random numbers reduce the
    noise of differences between checkpoints).

    Args:
        policy: the policy to evaluate (eval mode).
        reference: the base policy π0, or None (no KL).
        tokenizer: the policy's tokenizer.
        prompts: held-out prompts.
        gold: the gold reward, ``score(prompts, completions) -> Tensor[B]``.
        proxy: a :class:`~goodhartlab.rewards.pipeline.RewardPipeline` (its unshaped proxy
            reward, and each member's for an ensemble) or a plain reward source.
        num_samples: completions per prompt.
        max_new_tokens: completion budget.
        temperature: decoding temperature of the evaluation.
        seed: seeds the sampling.
        batch_size: rows sampled together.
        num_logged_samples: how many (prompt, completion, scores) records to return.
        autocast_dtype: bf16 autocast for the forward passes, or None.
        monitor: collect the monitor's inputs (``EvalOutput.monitor_record``) with these
            sources: ``members`` (an ensemble whose members' scores the monitor reads, if the
            proxy is not one), ``heldout`` (a reward not optimized against) or
            ``heldout_members`` (indices of members not optimized against: their mean),
            ``latents`` (a ``RewardModel`` whose last hidden states are the latents). None:
            collect nothing.

    Returns:
        ``EvalOutput(metrics, samples, monitor_record)``: ``metrics`` has ``kl``, ``kl_k3``, ``d``, ``gold``,
        ``gold_std``, ``proxy``, ``proxy_std``, (for ensembles) ``proxy_members`` and
        ``disagreement`` (mean over completions of the population std over members),
        ``length`` (tokens before EOS), ``eos_frac``, ``distinct_1``, ``distinct_2``, ``n``;
        ``samples`` the first ``num_logged_samples`` records.
    """
    from goodhartlab.rewards.pipeline import RewardPipeline

    pipeline = proxy if isinstance(proxy, RewardPipeline) else RewardPipeline(proxy)
    device = next(policy.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    rows_per_batch = max(1, batch_size // num_samples)
    flat_prompts: list[str] = []
    completions: list[str] = []
    kl_k1, kl_k3, lengths, eos = [], [], [], []
    ids: list[list[int]] = []
    logps: list[list[float]] = []
    for start in range(0, len(prompts), rows_per_batch):
        batch = list(prompts[start : start + rows_per_batch])
        ro = sample_rollouts(
            policy,
            tokenizer,
            batch,
            num_samples,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            generator=generator,
            autocast_dtype=autocast_dtype,
        )
        flat_prompts += [p for p in batch for _ in range(num_samples)]
        completions += ro.completions
        lengths.append(ro.num_tokens.float())
        if monitor is not None:
            for i in range(len(ro.completions)):
                keep = ro.completion_mask[i].bool()
                ids.append(ro.completion_ids[i][keep].tolist())
                logps.append(ro.logp[i][keep].float().tolist())
        eos.append(ro.eos.float())
        if reference is not None:
            with torch.autocast(
                device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None
            ):
                logp_ref = completion_logprobs(reference, ro, temperature)
            kl_k1.append(sequence_kl(ro.logp, logp_ref, ro.completion_mask, "k1").cpu())
            kl_k3.append(sequence_kl(ro.logp, logp_ref, ro.completion_mask, "k3").cpu())

    r_gold = _scores(gold, flat_prompts, completions)
    r_proxy, r_members = pipeline.score_source(flat_prompts, completions)
    length = torch.cat(lengths)
    metrics: dict[str, Any] = {}
    if kl_k1:
        kl = float(torch.cat(kl_k1).mean())
        metrics.update(kl=kl, kl_k3=float(torch.cat(kl_k3).mean()), d=math.sqrt(max(kl, 0.0)))
    metrics.update(
        gold=float(r_gold.mean()),
        gold_std=float(r_gold.std()) if r_gold.numel() > 1 else 0.0,
        proxy=float(r_proxy.mean()),
        proxy_std=float(r_proxy.std()) if r_proxy.numel() > 1 else 0.0,
    )
    if r_members is not None:
        metrics["proxy_members"] = [float(x) for x in r_members.mean(dim=1)]
        metrics["disagreement"] = float(r_members.std(dim=0, correction=0).mean())
    metrics.update(
        length=float(length.mean()),
        eos_frac=float(torch.cat(eos).mean()),
        distinct_1=distinct_n(completions, 1),
        distinct_2=distinct_n(completions, 2),
        n=len(completions),
    )
    samples = [
        {
            "prompt": flat_prompts[i],
            "completion": completions[i],
            "gold": float(r_gold[i]),
            "proxy": float(r_proxy[i]),
        }
        for i in range(min(num_logged_samples, len(completions)))
    ]
    record = None
    if monitor is not None:
        record = _monitor_record(
            monitor,
            flat_prompts,
            completions,
            r_proxy,
            r_members,
            ids,
            logps,
            metrics.get("kl"),
            num_samples,
        )
    return EvalOutput(metrics, samples, record)
