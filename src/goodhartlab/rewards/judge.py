"""Generative judges: a causal LM prompted to rate an answer, scored without sampling.

Issue 16 item 4. Two reward sources over one instruct model (real_text's SmolLM2-135M-
Instruct, or any causal-LM folder whose tokenizer writes each rating digit as one token):

* ``judge_direct``: the judge reads the question and the answer and is asked for a rating
  from 1 to ``max_rating``; its assistant turn is opened with ``VERDICT_PREFIX``
  (``"Rating: "``), and the reward is the expected rating under its next-token distribution
  restricted to the digit tokens (``core.judge.expected_rating``).
* ``judge_rubric``: rubric first, then the verdict (RM-R1's chat-specific rubrics, Chen et
  al. 2025, arXiv 2505.02387; Proxy-GRM's rubric-then-verdict pipeline). For each distinct
  prompt the judge first writes a short rubric (greedy decoding, ``rubric_tokens`` tokens
  at most, through ``models.generation.sample_token_ids`` at temperature 0; its first
  ``RUBRIC_LINES`` non-empty lines kept), cached per prompt in the source (``rubrics``); the verdict is then scored as ``judge_direct``'s, with
  the rubric in the judge prompt.

Every judge prompt is one user turn through the tokenizer's chat template
(``models.prompts.format_prompts``); the templates below are versioned by
``JUDGE_TEMPLATE_VERSION`` (bump on any change to a template, the prefix or the scale's
wording), recorded on each source as ``version`` beside its ``name``. The prompts hold
model-written text (the policy's answers, the judge's own rubrics): it is only ever
tokenized, never evaluated, and the tokenizer's special-token strings are removed from it
first, so an answer cannot close the judge's turn and write its own verdict.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from goodhartlab.core.judge import expected_rating
from goodhartlab.models.generation import (
    decode_completion,
    left_pad,
    position_ids,
    sample_token_ids,
)
from goodhartlab.models.prompts import format_prompts

__all__ = [
    "DIRECT_TEMPLATE",
    "JUDGE_TEMPLATE_VERSION",
    "RUBRIC_JUDGE_TEMPLATE",
    "RUBRIC_WRITE_TEMPLATE",
    "VERDICT_PREFIX",
    "GenerativeJudge",
    "RubricJudge",
    "rating_token_ids",
    "rubric_lines",
]

JUDGE_TEMPLATE_VERSION = "judge-v1"
"""Version of every template below (and of ``VERDICT_PREFIX``); bump on any change."""

DIRECT_TEMPLATE = (
    "You are a strict judge of answers. Read the question and the answer, then rate how "
    "helpful, correct, clear and on-topic the answer is, from 1 (useless) to {max_rating} "
    "(excellent). Reply with the rating only.\n\n"
    "Question:\n{prompt}\n\n"
    "Answer:\n{completion}"
)
RUBRIC_WRITE_TEMPLATE = (
    "Write a short rubric for judging answers to the question below: three criteria a good "
    "answer must meet, one line each. Do not answer the question.\n\n"
    "Question:\n{prompt}"
)
RUBRIC_JUDGE_TEMPLATE = (
    "You are a strict judge of answers. Read the question, the rubric and the answer, then "
    "rate how well the answer meets the rubric, from 1 (not at all) to {max_rating} "
    "(fully). Reply with the rating only.\n\n"
    "Question:\n{prompt}\n\n"
    "Rubric:\n{rubric}\n\n"
    "Answer:\n{completion}"
)
RUBRIC_LINES = 3
"""A written rubric keeps its first this many non-empty lines (the criteria asked for; a
small model's greedy decoding goes on repeating itself)."""
VERDICT_PREFIX = "Rating: "
"""Opens the judge's assistant turn, so that its next token is the rating."""


def rubric_lines(text: str, lines: int) -> str:
    """The first ``lines`` non-empty lines of ``text``, stripped, joined by newlines.

    >>> rubric_lines("\\n1. a \\n\\n2. b\\n3. c", 2)
    '1. a\\n2. b'
    """
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "\n".join(kept[:lines])


def rating_token_ids(tokenizer, context: str, max_rating: int) -> list[int]:
    """The id of each digit 1..``max_rating`` as the token that follows ``context``.

    Raises ValueError if a digit is not one token after ``context`` (then the next-token
    distribution does not hold the rating, and the judge cannot be scored without
    sampling) or if two digits share a token."""
    base = tokenizer(context, add_special_tokens=False)["input_ids"]
    ids = []
    for d in range(1, max_rating + 1):
        full = tokenizer(context + str(d), add_special_tokens=False)["input_ids"]
        if len(full) != len(base) + 1 or list(full[:-1]) != list(base):
            raise ValueError(
                f"judge: the rating {d} is not a single token after {VERDICT_PREFIX!r} with "
                f"this tokenizer ({context[-20:]!r} + {str(d)!r} -> {full[len(base) - 1 :]}); "
                "a judge needs a tokenizer that writes each digit as one token"
            )
        ids.append(int(full[-1]))
    if len(set(ids)) != len(ids):
        raise ValueError(f"judge: the ratings 1..{max_rating} share tokens ({ids})")
    return ids


def _check_batch(name: str, prompts: Sequence[str], completions: Sequence[str]) -> None:
    if isinstance(prompts, str) or isinstance(completions, str):
        raise ValueError(f"{name}: prompts and completions: expected sequences of strings")
    if len(prompts) != len(completions):
        raise ValueError(
            f"{name}: prompts and completions: expected the same length, got "
            f"{len(prompts)} and {len(completions)}"
        )
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        if not isinstance(p, str) or not isinstance(c, str):
            raise ValueError(
                f"{name}: item {i}: expected a prompt and a completion that are strings, got "
                f"{type(p).__name__} and {type(c).__name__}"
            )


class GenerativeJudge:
    """``judge_direct``: an LM's expected 1..``max_rating`` rating of each answer.

    Args:
        model: a causal LM (``*ForCausalLM``); put in eval mode.
        tokenizer: its tokenizer; every digit 1..``max_rating`` must be one token after
            ``VERDICT_PREFIX`` (checked here).
        max_rating: the top of the scale, 2..9 (one digit).
        batch_size: judge prompts per forward pass.
        max_length: the longest judge prompt in tokens; a longer one raises ValueError
            (default: the model's ``max_position_embeddings``).

    ``score(prompts, completions) -> Tensor[B]`` float32, in [1, max_rating].
    """

    name = "judge_direct"
    version = JUDGE_TEMPLATE_VERSION

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        *,
        max_rating: int = 9,
        batch_size: int = 16,
        max_length: int | None = None,
    ):
        if (
            isinstance(max_rating, bool)
            or not isinstance(max_rating, int)
            or not (2 <= max_rating <= 9)
        ):
            raise ValueError(f"max_rating: expected an integer in 2..9, got {max_rating!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        if tokenizer.pad_token_id is None:
            raise ValueError("judge: the tokenizer has no pad token")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_rating = max_rating
        self.batch_size = batch_size
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.max_length = max_length if max_length is not None else limit
        context = format_prompts(tokenizer, ["Question: x"])[0] + VERDICT_PREFIX
        self.rating_ids = torch.tensor(rating_token_ids(tokenizer, context, max_rating))
        self.ratings = torch.arange(1, max_rating + 1, dtype=torch.float32)
        self._special = sorted(
            {s for s in getattr(tokenizer, "all_special_tokens", []) if s}, key=len, reverse=True
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def clean(self, text: str) -> str:
        """``text`` with the tokenizer's special-token strings removed (see module doc)."""
        for s in self._special:
            text = text.replace(s, "")
        return text

    def judge_texts(self, prompts: Sequence[str], completions: Sequence[str]) -> list[str]:
        """The full text the judge reads for each item, up to and including the prefix."""
        users = [
            DIRECT_TEMPLATE.format(
                max_rating=self.max_rating, prompt=self.clean(p), completion=self.clean(c)
            )
            for p, c in zip(prompts, completions, strict=True)
        ]
        return [t + VERDICT_PREFIX for t in format_prompts(self.tokenizer, users)]

    @torch.inference_mode()
    def rate_texts(self, texts: Sequence[str]) -> Tensor:
        """Expected rating after each judge text (tokenized as is, no special tokens added:
        the chat template writes them). Shape: (B,), float32."""
        out = torch.empty(len(texts), dtype=torch.float32)
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        for i, x in enumerate(ids):
            if not x:
                raise ValueError(f"{self.name}: item {i}: the judge prompt has no tokens")
            if self.max_length is not None and len(x) > self.max_length:
                raise ValueError(
                    f"{self.name}: item {i}: the judge prompt has {len(x)} tokens, more than "
                    f"max_length {self.max_length}; shorten the answer or raise max_length"
                )
        device = self.device
        for start in range(0, len(ids), self.batch_size):
            chunk = ids[start : start + self.batch_size]
            input_ids, mask = left_pad(chunk, self.tokenizer.pad_token_id)
            kwargs = dict(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                position_ids=position_ids(mask).to(device),
            )
            try:
                logits = self.model(**kwargs, logits_to_keep=1).logits[:, -1, :]
            except TypeError:  # a model whose forward has no logits_to_keep
                logits = self.model(**kwargs).logits[:, -1, :]
            out[start : start + len(chunk)] = expected_rating(
                logits, self.rating_ids, self.ratings
            ).cpu()
        return out

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        """Expected rating of each (prompt, completion). Shape: (B,), float32."""
        _check_batch(self.name, prompts, completions)
        if not prompts:
            return torch.empty(0, dtype=torch.float32)
        return self.rate_texts(self.judge_texts(prompts, completions))

    __call__ = score

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r})"


class RubricJudge(GenerativeJudge):
    """``judge_rubric``: a rubric written per distinct prompt (greedy, cached), then the
    expected rating of each answer against it.

    Args (beyond :class:`GenerativeJudge`'s):
        rubric_tokens: the rubric's token budget (greedy decoding stops at EOS or there).

    ``rubrics`` maps each prompt seen to its rubric; ``rubrics_written`` counts the rubrics
    generated (one per distinct prompt over the source's life).
    """

    name = "judge_rubric"
    version = JUDGE_TEMPLATE_VERSION

    def __init__(self, model: nn.Module, tokenizer, *, rubric_tokens: int = 96, **kwargs):
        super().__init__(model, tokenizer, **kwargs)
        if (
            isinstance(rubric_tokens, bool)
            or not isinstance(rubric_tokens, int)
            or (rubric_tokens < 1)
        ):
            raise ValueError(f"rubric_tokens: expected an integer >= 1, got {rubric_tokens!r}")
        if tokenizer.eos_token_id is None:
            raise ValueError("judge_rubric: the tokenizer has no EOS token")
        self.rubric_tokens = rubric_tokens
        self.rubrics: dict[str, str] = {}
        self.rubrics_written = 0

    def rubric_prompt(self, prompt: str) -> str:
        """The text the judge writes its rubric after (chat template applied)."""
        user = RUBRIC_WRITE_TEMPLATE.format(prompt=self.clean(prompt))
        return format_prompts(self.tokenizer, [user])[0]

    def write_rubrics(self, prompts: Sequence[str]) -> None:
        """Write (greedy) and cache the rubric of each prompt not yet cached."""
        todo = [p for p in dict.fromkeys(prompts) if p not in self.rubrics]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            ids = self.tokenizer([self.rubric_prompt(p) for p in chunk], add_special_tokens=False)[
                "input_ids"
            ]
            batch = sample_token_ids(
                self.model,
                ids,
                list(range(len(chunk))),
                max_new_tokens=self.rubric_tokens,
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
                temperature=0.0,
            )
            for k, p in enumerate(chunk):
                n = int(batch.num_tokens[k])
                text = decode_completion(self.tokenizer, batch.tokens[k, :n].tolist())
                self.rubrics[p] = rubric_lines(text, RUBRIC_LINES)
                self.rubrics_written += 1

    def judge_texts(self, prompts: Sequence[str], completions: Sequence[str]) -> list[str]:
        self.write_rubrics(prompts)
        users = [
            RUBRIC_JUDGE_TEMPLATE.format(
                max_rating=self.max_rating,
                prompt=self.clean(p),
                rubric=self.clean(self.rubrics[p]),
                completion=self.clean(c),
            )
            for p, c in zip(prompts, completions, strict=True)
        ]
        return [t + VERDICT_PREFIX for t in format_prompts(self.tokenizer, users)]


def load_judge(
    cls: type[GenerativeJudge], path: str, device: str = "cpu", **params
) -> GenerativeJudge:
    """``cls`` over the causal LM (and its tokenizer) in the folder ``path``."""
    from goodhartlab.models.loading import check_device, load_policy

    model, tokenizer, _ = load_policy(path, device=check_device(device))
    return cls(model, tokenizer, **params)
