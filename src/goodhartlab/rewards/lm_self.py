"""Rewards taken from a causal language model itself (issue 16 item 3), as reward sources.

Each source reads a conversation the model's tokenizer renders: the prompt as one user turn
with the generation prompt (``models.prompts.encode_prompts``, as sampling sees it), then the
completion's tokens (``tokenizer(completion, add_special_tokens=False)``), then whatever the
reward needs after it, rendered by the same chat template. One batched forward pass per chunk
of ``batch_size`` sequences (right-padded; the follow-ups share one left-padded pass over the
conversation through its KV cache), ``no_grad``, eval mode; the formulas are in
``goodhartlab.core.lm_rewards``. The real_text pool's completions are decoded text, so their
tokens are re-tokenized here and may differ from the sampled ids at a few boundaries.

* :class:`LMConfidence` (``lm_confidence``, CRew): mean probability of the completion's tokens
  and its end-of-turn token.
* :class:`LMReferenceLikelihood` (``lm_reference_likelihood``): log-probability of a reference
  answer in a next assistant turn, after a user question (``REFERENCE_QUESTION``).
* :class:`LMFollowupLikelihood` (``lm_followup_likelihood``, FLR): mean per-token log-prob of a
  positive next user turn minus that of a negative one (``POSITIVE_FOLLOWUPS`` /
  ``NEGATIVE_FOLLOWUPS``).
* :class:`LMEndogenous` (``lm_endogenous``): the inverse soft-Q reward summed over the
  completion and its end-of-turn token (terminal: V = 0 after it).

Text templates added here are versioned (``REFERENCE_VERSION``, ``FOLLOWUP_VERSION``): bump on
any change. A tokenizer without a chat template gets the raw layouts ``RAW_*``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from goodhartlab.core.lm_rewards import (
    crew_confidence,
    endogenous_reward,
    followup_likelihood,
    reference_loglik,
)
from goodhartlab.models.prompts import chat_template, encode_prompts

__all__ = [
    "FOLLOWUP_VERSION",
    "NEGATIVE_FOLLOWUPS",
    "POSITIVE_FOLLOWUPS",
    "REFERENCE_QUESTION",
    "REFERENCE_VERSION",
    "LMConfidence",
    "LMEndogenous",
    "LMFollowupLikelihood",
    "LMReferenceLikelihood",
    "conversation_tail",
    "real_text_topic",
]

#: Bump on any change to ``REFERENCE_QUESTION``, ``RAW_REFERENCE`` or the default reference.
REFERENCE_VERSION = "lm-reference-v1"
#: The user turn that asks for the reference answer after the completion.
REFERENCE_QUESTION = "In a few words, what was your answer about?"
#: Without a chat template: completion + this (``{question}`` filled) + the reference.
RAW_REFERENCE = "\n\nUser: {question}\nAssistant: "

#: Bump on any change to the follow-ups or ``RAW_FOLLOWUP``.
FOLLOWUP_VERSION = "lm-followup-v1"
POSITIVE_FOLLOWUPS: tuple[str, ...] = ("Thank you, that is exactly what I wanted!",)
NEGATIVE_FOLLOWUPS: tuple[str, ...] = ("That is not what I asked for.",)
#: Without a chat template: completion + this + the follow-up.
RAW_FOLLOWUP = "\n\nUser: "

_SENTINELS = ("\x01GLP\x01", "\x01GLC\x01", "\x01GLU\x01", "\x01GLA\x01")


def conversation_tail(tokenizer, *, answer: bool) -> tuple[str, ...]:
    """The template's text between the completion and the next turns.

    Renders [user, assistant, user(, assistant)] with sentinel contents and cuts it at them:
    returns ``(after_completion,)`` -- the text between the completion and the next user
    turn's content -- or, with ``answer``, also the text between that user content and the
    next assistant content. None of it comes from a tokenizer without a template: see
    ``RAW_FOLLOWUP`` / ``RAW_REFERENCE``.
    """
    template = chat_template(tokenizer)
    if template is None:
        raise ValueError("tokenizer: has no chat template")
    p, c, u, a = _SENTINELS
    messages = [
        {"role": "user", "content": p},
        {"role": "assistant", "content": c},
        {"role": "user", "content": u},
    ]
    if answer:
        messages.append({"role": "assistant", "content": a})
    text = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False)
    for s in _SENTINELS[: 4 if answer else 3]:
        if text.count(s) != 1:
            raise ValueError("chat template: could not locate the turns it renders")
    after_c = text.split(c, 1)[1]
    between_cu, after_u = after_c.split(u, 1)
    if not answer:
        return (between_cu,)
    return between_cu, after_u.split(a, 1)[0]


def real_text_topic(prompt: str) -> str:
    """The default reference: the real_text prompt's topic phrase (``PromptSpec.topic``; the
    prompt itself for a prompt that is not one of real_text's)."""
    from goodhartlab.testbeds.real_text.prompts import parse_prompt

    return parse_prompt(prompt).topic


def _head_on_span(model) -> bool:
    """Whether logits may be computed as output_head(decoder hidden states) on the positions
    needed only (a Llama: no logit scaling or soft-capping after the head)."""
    return type(model).__name__ == "LlamaForCausalLM"


def _load(path: str, device: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.to(device), tok


class _LMSource:
    """Shared machinery: tokenization, batching, one forward pass per chunk."""

    name = "lm"
    version = "1"

    def __init__(self, model, tokenizer, *, batch_size: int = 8):
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        self.eos_id = eos
        self.pad_id = pad if pad is not None else (eos if eos is not None else 0)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        return self.score(prompts, completions)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode(
        self, prompts: Sequence[str], completions: Sequence[str]
    ) -> tuple[list[list[int]], list[list[int]]]:
        prompts, completions = list(prompts), list(completions)
        if len(prompts) != len(completions):
            raise ValueError(
                f"prompts and completions: expected the same length, got {len(prompts)} "
                f"and {len(completions)}"
            )
        if not prompts:
            return [], []
        prompt_ids = encode_prompts(self.tokenizer, prompts)
        if any(len(x) == 0 for x in prompt_ids):
            raise ValueError("prompts: an empty prompt has no token to condition on")
        completion_ids = [
            list(x) for x in self.tokenizer(completions, add_special_tokens=False)["input_ids"]
        ]
        return prompt_ids, completion_ids

    @torch.no_grad()
    def _span_logits(
        self, seqs: list[list[int]], starts: list[int], lengths: list[int], extra: int = 0
    ) -> tuple[Tensor, Tensor, Tensor]:
        """For each sequence, the logits of the states before its span's tokens (plus
        ``extra`` states after them), the span's tokens and their mask.

        Shapes: (B, S + extra, V), (B, S), (B, S) with S the longest span."""
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.as_tensor(s)
            attn[i, : len(s)] = 1
        span = max(lengths)
        j = torch.arange(span + extra)
        st = torch.as_tensor(starts).unsqueeze(1)
        pos = (st - 1 + j).clamp(max=width - 1).to(self.device)  # state before span token j
        ids_d, attn_d = ids.to(self.device), attn.to(self.device)
        if _head_on_span(self.model):
            # The output head on the span's states only (a Llama's logits = head(hidden)).
            hidden = self.model.get_decoder()(
                input_ids=ids_d, attention_mask=attn_d, use_cache=False
            )[0]
            picked = hidden.gather(1, pos.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
            out = self.model.get_output_embeddings()(picked).float().cpu()
        else:
            logits = self.model(input_ids=ids_d, attention_mask=attn_d, use_cache=False).logits
            out = logits.gather(1, pos.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
            out = out.float().cpu()
        tpos = (st + j[:span]).clamp(max=width - 1)
        targets = ids.gather(1, tpos)
        mask = (j[:span].unsqueeze(0) < torch.as_tensor(lengths).unsqueeze(1)).long()
        return out, targets * mask, mask

    def _chunks(self, n: int):
        for i in range(0, n, self.batch_size):
            yield slice(i, min(n, i + self.batch_size))


class _CompletionSource(_LMSource):
    """Reads the completion's own tokens and its end-of-turn token (eos)."""

    def __init__(self, model, tokenizer, *, batch_size: int = 8, end_of_turn: bool = True):
        super().__init__(model, tokenizer, batch_size=batch_size)
        if end_of_turn and self.eos_id is None:
            raise ValueError("tokenizer: expected an eos_token (end_of_turn=True reads it)")
        self.end_of_turn = end_of_turn

    def _reduce(self, logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

    extra_states = 0

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        prompt_ids, completion_ids = self._encode(prompts, completions)
        tail = [self.eos_id] if self.end_of_turn else []
        out = []
        for sl in self._chunks(len(prompt_ids)):
            seqs = [p + c + tail for p, c in zip(prompt_ids[sl], completion_ids[sl], strict=True)]
            starts = [len(p) for p in prompt_ids[sl]]
            lengths = [len(c) + len(tail) for c in completion_ids[sl]]
            out.append(self._reduce(*self._span_logits(seqs, starts, lengths, self.extra_states)))
        return torch.cat(out).float() if out else torch.zeros(0)


class LMConfidence(_CompletionSource):
    """CRew: the mean probability the model gives the completion's tokens (and its end-of-turn
    token) after the prompt; ``core.lm_rewards.crew_confidence``.

    The whole completion is the "final answer" (real_text's answers have no separate answer
    span). With ``end_of_turn`` the eos token is part of it (an empty completion is then
    scored by p(eos | prompt); without it, an empty completion scores 0)."""

    name = "lm_confidence"

    def _reduce(self, logits, targets, mask):
        return crew_confidence(logits, targets, mask)


class LMEndogenous(_CompletionSource):
    """The endogenous reward Σ_t [Q(s_t, a_t) − γ V(s_{t+1})] with Q = the logits, over the
    completion's tokens and (``end_of_turn``) its eos as the terminal action (V = 0 after
    it); without ``end_of_turn`` the last state's value comes from the logits there.
    ``core.lm_rewards.endogenous_reward``."""

    name = "lm_endogenous"
    extra_states = 1

    def __init__(
        self,
        model,
        tokenizer,
        *,
        batch_size: int = 8,
        end_of_turn: bool = True,
        alpha: float = 1.0,
        gamma: float = 1.0,
    ):
        super().__init__(model, tokenizer, batch_size=batch_size, end_of_turn=end_of_turn)
        self.alpha, self.gamma = alpha, gamma

    def _reduce(self, logits, targets, mask):
        return endogenous_reward(
            logits, targets, mask, alpha=self.alpha, gamma=self.gamma, terminal=self.end_of_turn
        )


class LMReferenceLikelihood(_LMSource):
    """log p(reference | prompt, completion, question): the reference answer as the next
    assistant turn after the user asks ``REFERENCE_QUESTION``; ``core.lm_rewards.
    reference_loglik`` (sum over the reference's tokens, or ``reduction="mean"``).

    ``references``: a callable ``prompt -> reference``, a mapping prompt -> reference, or
    None for real_text's topic phrase (:func:`real_text_topic`)."""

    name = "lm_reference_likelihood"
    version = REFERENCE_VERSION

    def __init__(
        self,
        model,
        tokenizer,
        *,
        references: Callable[[str], str] | Mapping[str, str] | None = None,
        question: str = REFERENCE_QUESTION,
        reduction: str = "sum",
        batch_size: int = 8,
    ):
        super().__init__(model, tokenizer, batch_size=batch_size)
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction: expected 'sum' or 'mean', got {reduction!r}")
        self.references = real_text_topic if references is None else references
        self.question, self.reduction = question, reduction
        if chat_template(tokenizer) is None:
            self._before = self._ids(RAW_REFERENCE.format(question=question))
        else:
            a, b = conversation_tail(tokenizer, answer=True)
            self._before = self._ids(a) + self._ids(question) + self._ids(b)

    def reference(self, prompt: str) -> str:
        refs = self.references
        if isinstance(refs, Mapping):
            if prompt not in refs:
                raise KeyError(f"references: no reference for prompt {prompt!r}")
            return refs[prompt]
        return refs(prompt)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        prompt_ids, completion_ids = self._encode(prompts, completions)
        refs = [self._ids(self.reference(p)) for p in prompts]
        if any(len(r) == 0 for r in refs):
            raise ValueError("references: a reference has no token")
        out = []
        for sl in self._chunks(len(prompt_ids)):
            heads = [
                p + c + self._before
                for p, c in zip(prompt_ids[sl], completion_ids[sl], strict=True)
            ]
            seqs = [h + r for h, r in zip(heads, refs[sl], strict=True)]
            logits, targets, mask = self._span_logits(
                seqs, [len(h) for h in heads], [len(r) for r in refs[sl]]
            )
            out.append(reference_loglik(logits, targets, mask, reduction=self.reduction))
        return torch.cat(out).float() if out else torch.zeros(0)


class LMFollowupLikelihood(_LMSource):
    """FLR: mean over ``positive`` follow-ups of their per-token mean log-prob as the next
    user turn, minus the same over ``negative`` (none: the positive term alone);
    ``core.lm_rewards.followup_likelihood``. The conversation is read once per chunk; the
    follow-ups reuse its KV cache."""

    name = "lm_followup_likelihood"
    version = FOLLOWUP_VERSION

    def __init__(
        self,
        model,
        tokenizer,
        *,
        positive: Sequence[str] = POSITIVE_FOLLOWUPS,
        negative: Sequence[str] = NEGATIVE_FOLLOWUPS,
        batch_size: int = 8,
    ):
        super().__init__(model, tokenizer, batch_size=batch_size)
        if not positive:
            raise ValueError("positive: expected at least one follow-up")
        if chat_template(tokenizer) is None:
            self._before = self._ids(RAW_FOLLOWUP)
        else:
            self._before = self._ids(conversation_tail(tokenizer, answer=False)[0])
        self._pos = [self._ids(f) for f in positive]
        self._neg = [self._ids(f) for f in negative]
        if any(len(f) == 0 for f in self._pos + self._neg):
            raise ValueError("follow-ups: a follow-up has no token")

    @torch.no_grad()
    def followup_logprobs(
        self, prompt_ids: list[list[int]], completion_ids: list[list[int]]
    ) -> Tensor:
        """Per-token mean log-prob of each follow-up (positive ones first, then negative)
        after each conversation. Each chunk's conversations are read once (left-padded, KV
        cache kept); each follow-up then reads only its own tokens from that cache.

        Shape: (K+ + K−, B)"""
        from transformers import DynamicCache

        from goodhartlab.models.generation import left_pad, position_ids

        followups = self._pos + self._neg
        rows: list[Tensor] = []
        for sl in self._chunks(len(prompt_ids)):
            heads = [
                p + c + self._before
                for p, c in zip(prompt_ids[sl], completion_ids[sl], strict=True)
            ]
            ids, mask = left_pad(heads, self.pad_id)
            ids, mask = ids.to(self.device), mask.to(self.device)
            pos = position_ids(mask)
            out = self.model(
                input_ids=ids, attention_mask=mask, position_ids=pos,
                past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1,
            )  # fmt: skip
            first = out.logits[:, -1:, :].float()  # predicts each follow-up's first token
            cache, b = out.past_key_values, ids.shape[0]
            chunk = []
            for f in followups:
                target = torch.as_tensor(f, device=self.device).unsqueeze(0).expand(b, -1)
                logits = first
                if len(f) > 1:
                    k = len(f) - 1
                    tail = self.model(
                        input_ids=target[:, :-1],
                        attention_mask=torch.cat([mask, torch.ones_like(mask[:, :1]).expand(-1, k)], 1),
                        position_ids=pos[:, -1:] + 1 + torch.arange(k, device=self.device),
                        past_key_values=cache, use_cache=True,
                    )  # fmt: skip
                    logits = torch.cat([first, tail.logits.float()], dim=1)
                    cache.crop(-k)  # back to the conversation alone
                ones = torch.ones_like(target)
                chunk.append(reference_loglik(logits, target, ones, reduction="mean").cpu())
            rows.append(torch.stack(chunk))
        return torch.cat(rows, dim=1)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        prompt_ids, completion_ids = self._encode(prompts, completions)
        if not prompt_ids:
            return torch.zeros(0)
        ell = self.followup_logprobs(prompt_ids, completion_ids)
        k = len(self._pos)
        return followup_likelihood(ell[:k], ell[k:] if self._neg else None).float()


def lm_confidence(path: str, device: str = "cpu", batch_size: int = 8, end_of_turn: bool = True):
    """CRew confidence of the causal LM in ``path`` (mean token probability of the completion)."""
    model, tok = _load(path, device)
    return LMConfidence(model, tok, batch_size=batch_size, end_of_turn=end_of_turn)


def lm_reference_likelihood(
    path: str,
    device: str = "cpu",
    references: Callable[[str], str] | Mapping[str, str] | None = None,
    reduction: str = "sum",
    batch_size: int = 8,
):
    """log p(reference answer | prompt, completion) under the causal LM in ``path``."""
    model, tok = _load(path, device)
    return LMReferenceLikelihood(
        model, tok, references=references, reduction=reduction, batch_size=batch_size
    )


def lm_followup_likelihood(
    path: str,
    device: str = "cpu",
    positive: tuple[str, ...] = POSITIVE_FOLLOWUPS,
    negative: tuple[str, ...] = NEGATIVE_FOLLOWUPS,
    batch_size: int = 8,
):
    """FLR of the causal LM in ``path``: log-lik of a positive minus a negative user follow-up."""
    model, tok = _load(path, device)
    return LMFollowupLikelihood(
        model, tok, positive=positive, negative=negative, batch_size=batch_size
    )


def lm_endogenous(
    path: str,
    device: str = "cpu",
    alpha: float = 1.0,
    gamma: float = 1.0,
    end_of_turn: bool = True,
    batch_size: int = 8,
):
    """Endogenous reward (inverse soft-Q from the logits) of the causal LM in ``path``."""
    model, tok = _load(path, device)
    return LMEndogenous(
        model, tok, alpha=alpha, gamma=gamma, end_of_turn=end_of_turn, batch_size=batch_size
    )
