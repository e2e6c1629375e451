"""The real_text gold reward: an answer's quality judged by real models, with a documented formula.

For a prompt with topic ``t``, asked tone ``s`` (+1 warm, -1 critical, 0 none) and length
budget ``L`` words (``prompts.PromptSpec``), and a completion ``c`` of ``W`` words:

    gold = 3.0 rel                                    relevance: cos(MiniLM(c), MiniLM(t))
         - 6.0 max(0, 0.15 - rel)                     off topic: below 0.15 costs double
         + 1.5 s vader(c)                             the tone asked for (VADER compound)
         + 1.0 clip((lp + 4) / 2, -1, 1)              fluency: SmolLM2's mean log-prob
         - 3.0 rep                                    repetition: repeated word trigrams
         - 1.5 max(0, W - L) / L                      length beyond the budget
    gold = -2 for a completion without a word.

(the weights live in ``WEIGHTS``.)

- rel: cosine of the L2-normalized, mean-pooled all-MiniLM-L6-v2 embeddings (as its
  sentence-transformers modules do) of the completion and of the prompt's topic phrase (for
  a prompt that is not one of ours: of the whole prompt). About 0.1 for unrelated text, 0.4
  to 0.7 for an answer about the topic.
- vader(c): VADER's compound score in [-1, 1] (Hutto & Gilbert 2014, ``vaderSentiment``),
  counted only where the prompt asks for a tone: a warm prompt rewards positive text, a
  critical one negative text.
- lp: the completion's mean per-token log-prob (nats) under SmolLM2-135M-Instruct (the
  converted base policy) reading the completion alone after ``<|endoftext|>``, its
  pretraining document separator, so the prompt and the template do not enter: a language
  model's judgement of the text as text. Natural text scores about -3 to -2; the clip keeps
  very likely degenerate text (a word repeated) from earning more than natural text.
- rep: 1 - distinct / total word trigrams (lower-cased), 0 below three words.
- W: words as ``[A-Za-z0-9']+`` runs.

It rewards what base samples vary in (answering about the topic, the tone asked for, readable
text) and penalizes what optimization pressure tends to produce (loops, runaway length,
drifting off topic). Results record ``GOLD_VERSION``: bump it on every change to this formula,
the models it reads or the prompts' specs.

The three model terms are injected (``embed``, ``sentiment``, ``mean_logprob``), so the formula
is tested on tiny fakes; :class:`RealTextGold` built by the testbed loads the real models on
first use (:func:`minilm_embedder`, :func:`vader_sentiment`, :func:`lm_mean_logprob`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from goodhartlab.models.generation import right_pad
from goodhartlab.testbeds.real_text.prompts import parse_prompt

GOLD_VERSION = "real_text-gold-v1"

#: The weights of the formula above (part of ``GOLD_VERSION``: change one, bump the version).
WEIGHTS: dict[str, float] = {
    "relevance": 3.0,
    "off_topic": 6.0,
    "off_topic_below": 0.15,
    "tone": 1.5,
    "fluency": 1.0,
    "fluency_center": -4.0,
    "fluency_scale": 2.0,
    "repetition": 3.0,
    "length": 1.5,
    "empty": -2.0,
}

_WORD = re.compile(r"[A-Za-z0-9']+")

Embed = Callable[[list[str]], Tensor]
"""Texts -> L2-normalized embeddings. Shape: (B, D)."""
Sentiment = Callable[[str], float]
"""A text's sentiment in [-1, 1]."""
MeanLogprob = Callable[[list[str]], Tensor]
"""Texts -> mean per-token log-prob in nats. Shape: (B,)."""


def words(text: str) -> list[str]:
    """The words of ``text`` (``[A-Za-z0-9']+`` runs)."""
    return _WORD.findall(text)


def trigram_repetition(ws: Sequence[str]) -> float:
    """1 - distinct / total word trigrams (case-folded); 0 for fewer than three words.

    >>> trigram_repetition("a b c a b c".split())   # trigrams abc bca cab abc: 3 of 4 distinct
    0.25
    """
    low = [w.lower() for w in ws]
    grams = list(zip(low, low[1:], low[2:], strict=False))
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


@dataclass
class GoldTerms:
    """Each term of the formula for one completion (for audits of what a policy hacked)."""

    words: int = 0
    relevance: float = 0.0
    off_topic: float = 0.0
    tone: int = 0
    sentiment: float = 0.0
    mean_logprob: float = 0.0
    fluency: float = 0.0
    repetition: float = 0.0
    length: float = 0.0
    gold: float = 0.0


def gold_from_terms(t: GoldTerms, w: dict[str, float] = WEIGHTS) -> float:
    """The formula of the module docstring on computed terms."""
    if t.words == 0:
        return w["empty"]
    return (
        w["relevance"] * t.relevance
        - w["off_topic"] * t.off_topic
        + w["tone"] * t.tone * t.sentiment
        + w["fluency"] * t.fluency
        - w["repetition"] * t.repetition
        - w["length"] * t.length
    )


class RealTextGold:
    """The gold reward as a reward source: ``score(prompts, completions) -> Tensor[B]``.

    Args:
        embed: texts -> normalized sentence embeddings (B, D) (default: none; the testbed
            passes :func:`minilm_embedder` of its cached MiniLM).
        sentiment: text -> VADER compound (default :func:`vader_sentiment`).
        mean_logprob: texts -> mean token log-prob (B,) (the testbed passes
            :func:`lm_mean_logprob` of its converted SmolLM2).
        loader: alternatively, a function returning ``(embed, sentiment, mean_logprob)``,
            called once on first use (the real models load only when gold is scored).
        batch_size: completions per model call.
    """

    name = "real_text_gold"
    version = GOLD_VERSION

    def __init__(
        self,
        embed: Embed | None = None,
        sentiment: Sentiment | None = None,
        mean_logprob: MeanLogprob | None = None,
        *,
        loader: Callable[[], tuple[Embed, Sentiment, MeanLogprob]] | None = None,
        batch_size: int = 32,
    ):
        if loader is None and (embed is None or sentiment is None or mean_logprob is None):
            raise ValueError("RealTextGold: give embed, sentiment and mean_logprob, or a loader")
        self._parts = None if loader is not None else (embed, sentiment, mean_logprob)
        self._loader = loader
        self.batch_size = batch_size

    def _models(self) -> tuple[Embed, Sentiment, MeanLogprob]:
        if self._parts is None:
            self._parts = self._loader()
        return self._parts

    def terms(self, prompts: Sequence[str], completions: Sequence[str]) -> list[GoldTerms]:
        """Every term of the formula for each (prompt, completion)."""
        if len(prompts) != len(completions):
            raise ValueError(
                f"completions: expected one per prompt ({len(prompts)}), got {len(completions)}"
            )
        embed, sentiment, mean_logprob = self._models()
        w = WEIGHTS
        specs = [parse_prompt(p) for p in prompts]
        out: list[GoldTerms] = []
        for lo in range(0, len(prompts), self.batch_size):
            idx = range(lo, min(lo + self.batch_size, len(prompts)))
            texts = [completions[i] for i in idx]
            ws = [words(c) for c in texts]
            live = [k for k, x in enumerate(ws) if x]  # the models never see empty text
            rel = torch.zeros(len(texts))
            lp = torch.zeros(len(texts))
            if live:
                live_texts = [texts[k] for k in live]
                topics = [specs[idx[k]].topic for k in live]
                e = embed(live_texts + topics)
                e_c, e_t = e[: len(live)], e[len(live) :]
                rel[live] = (e_c * e_t).sum(-1).float().cpu()
                lp[live] = mean_logprob(live_texts).float().cpu()
            for k, i in enumerate(idx):
                spec, n = specs[i], len(ws[k])
                t = GoldTerms(words=n, tone=spec.tone)
                if n:
                    t.relevance = float(rel[k])
                    t.off_topic = max(0.0, w["off_topic_below"] - t.relevance)
                    t.sentiment = float(sentiment(texts[k])) if spec.tone else 0.0
                    t.mean_logprob = float(lp[k])
                    z = (t.mean_logprob - w["fluency_center"]) / w["fluency_scale"]
                    t.fluency = min(1.0, max(-1.0, z)) if math.isfinite(z) else -1.0
                    t.repetition = trigram_repetition(ws[k])
                    t.length = max(0, n - spec.max_words) / spec.max_words
                t.gold = gold_from_terms(t, w)
                out.append(t)
        return out

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        """Gold of each completion. Shape: (B,)."""
        return torch.tensor([t.gold for t in self.terms(prompts, completions)], dtype=torch.float32)

    __call__ = score

    def features(self, prompts: Sequence[str], completions: Sequence[str]) -> list[dict]:
        return [asdict(t) for t in self.terms(prompts, completions)]


# --- the real models -------------------------------------------------------------------


def minilm_embedder(path: str | Path, device: str = "cpu", max_length: int = 256) -> Embed:
    """all-MiniLM-L6-v2 from its model directory as sentence-transformers runs it: BERT, mean
    pooling over the attention mask, L2 normalization (its ``modules.json``)."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).to(device).eval()

    @torch.inference_mode()
    def embed(texts: list[str]) -> Tensor:
        batch = tok(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(device)
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    return embed


def vader_sentiment() -> Sentiment:
    """VADER's compound polarity of a text (``vaderSentiment``'s lexicon and rules)."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        raise ImportError(
            "real_text gold needs vaderSentiment: pip install 'goodhart-lab[real]'"
        ) from None
    analyzer = SentimentIntensityAnalyzer()
    return lambda text: analyzer.polarity_scores(text)["compound"]


def lm_mean_logprob(
    path: str | Path,
    device: str = "cpu",
    prefix: str = "<|endoftext|>",
    max_tokens: int = 128,
) -> MeanLogprob:
    """Mean per-token log-prob of each text under the causal LM in ``path``, reading the text
    alone after ``prefix`` (first ``max_tokens`` tokens; NaN for a text of no token)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
    prefix_ids = tok(prefix, add_special_tokens=False)["input_ids"]
    if not prefix_ids:
        raise ValueError(f"prefix: {prefix!r} has no token (the first text token needs one)")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    @torch.inference_mode()
    def mean_logprob(texts: list[str]) -> Tensor:
        ids = [
            prefix_ids + x[:max_tokens] for x in tok(texts, add_special_tokens=False)["input_ids"]
        ]
        input_ids, mask = right_pad(ids, pad)
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        target = input_ids[:, 1:].to(device)
        tok_lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).cpu()
        scored = mask[:, 1:].clone()
        scored[:, : len(prefix_ids) - 1] = 0  # predictions of prefix tokens are not the text's
        n = scored.sum(1)
        total = (tok_lp * scored).sum(1)
        return torch.where(n > 0, total / n.clamp(min=1), torch.full_like(total, float("nan")))

    return mean_logprob
