"""A toy_text reward benchmark whose subsets are built from the gold's parts.

RewardBench-format rows (``prompt``, ``chosen``, ``rejected``, ``subset``, ``id``, ``meta``)
that ``goodhart eval-rm`` reads, in five sections:

- ``Components``: pairs that differ in one term of the gold. ``toy-sentiment`` (one adjective
  swapped for a fitting one of the other polarity; chosen = the one gold prefers),
  ``toy-coverage`` (one opinion's noun replaced by a noun the review already covers, same
  adjective and polarity: one noun less covered), ``toy-constraint-mention`` (the prompt's
  part, or another part the review does not mention, in one opinion), ``toy-constraint-short``
  (two sentences or fewer, against the same review extended), ``toy-constraint-detailed``
  (coverage 3, against the coverage edit that brings it to 2).
- ``Defects``: a clean base review against the same review with one defect the gold
  penalizes (``toy-defect-misfit``: an adjective that does not fit its noun;
  ``-contradiction``: a noun both praised and criticized, sentiment and coverage unchanged; ``-repetition``: a sentence
  repeated; ``-stuffing``: a noun a third time; ``-stacking``: stacked intensifiers;
  ``-offtopic``: another product's part; ``-broken``: a shuffled sentence; ``-long``: the
  review padded past four sentences; ``-gushing``: every opinion intensified past |S| = 2).
- ``Natural``: two base reviews of one prompt (``toy-natural``: gold margin >= 0.2;
  ``toy-length-matched``: lengths within 10 % of the longer, eval-rm's tolerance;
  ``toy-near-ties``: gold margin in [0.01, 0.25]).
- ``Personalized``: ``persona-<name>`` for each reader of ``personas.py``; the prompt names the
  reader; that reader's gold prefers the chosen by >= 0.5 while the generic gold prefers it by
  at most 0.25 (often the rejected), as Personalized RewardBench keeps general quality equal.
- ``Grounded``: a fact sheet in the prompt (``grounded.py``), RAG-RewardBench's four scenarios
  in miniature: ``grounded-multihop`` (a part's polarity given through a link to another part;
  the rejected takes a distractor's), ``grounded-citation`` (the same claims, citations
  swapped), ``grounded-abstain`` (abstaining on a part the facts do not cover against
  inventing an opinion, and answering a covered part against abstaining),
  ``grounded-conflict`` (noting that the facts disagree against taking a side).

"Base reviews" are samples of the language's generator, the corpus the base policy imitates,
for the held-out evaluation prompts of ``split_prompts(testbed_seed)``. Every row is checked
on construction: the row's gold (the generic gold, the persona's, or the grounded gold; see
:func:`bench_gold`) prefers the chosen by the subset's margin, recorded in the row's ``meta``
with ``BENCH_VERSION`` and the gold's version. Bump ``BENCH_VERSION`` on any change of a
construction; the build is deterministic for a seed.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from goodhartlab.artifacts import atomic_write_json, atomic_write_text
from goodhartlab.testbeds.toy_text.gold import GOLD_VERSION, gold_features, parse_sentence
from goodhartlab.testbeds.toy_text.grounded import (
    GROUNDED_VERSION,
    Statement,
    abstain_sentence,
    citation,
    conflict_sentence,
    grounded_gold,
    grounded_prompt,
    parse_grounded_prompt,
)
from goodhartlab.testbeds.toy_text.language import (
    GENERIC_NOUNS,
    INTENSIFIERS,
    NEGATIVE,
    POSITIVE,
    PRODUCTS,
    Prompt,
    fits,
    generate_review,
    split_prompts,
)
from goodhartlab.testbeds.toy_text.personas import (
    PERSONAS,
    PERSONAS_VERSION,
    parse_persona_prompt,
    persona_gold,
    persona_prompt,
)

BENCH_VERSION = "toy_text-bench-v1"

DEFECTS = ("misfit", "contradiction", "repetition", "stuffing", "stacking", "offtopic",
           "broken", "long", "gushing")  # fmt: skip

SECTIONS: dict[str, tuple[str, ...]] = {
    "Components": (
        "toy-sentiment",
        "toy-coverage",
        "toy-constraint-mention",
        "toy-constraint-short",
        "toy-constraint-detailed",
    ),
    "Defects": tuple(f"toy-defect-{d}" for d in DEFECTS),
    "Natural": ("toy-natural", "toy-length-matched", "toy-near-ties"),
    "Personalized": tuple(f"persona-{p}" for p in PERSONAS),
    "Grounded": ("grounded-multihop", "grounded-citation", "grounded-abstain", "grounded-conflict"),
}

#: Gold margin a row's chosen must have over its rejected (near-ties: a range instead).
MIN_MARGIN = 0.2
PERSONA_MIN_MARGIN = 0.5
PERSONA_MAX_GENERIC_MARGIN = 0.25
NEAR_TIE = (0.01, 0.25)
LENGTH_TOLERANCE = 0.1

_POS, _NEG = set(POSITIVE), set(NEGATIVE)

# ----------------------------------------------------------------------------- the golds


def bench_gold(prompt: str, completion: str) -> float:
    """The gold of a benchmark row's completion: the grounded gold for a fact-sheet prompt,
    the reader's gold for a persona prompt, else the toy_text gold."""
    if parse_grounded_prompt(prompt) is not None:
        return grounded_gold(prompt, completion)
    persona = parse_persona_prompt(prompt)
    if persona is not None:
        return persona_gold(persona[0], persona[1], completion)
    return gold_features(prompt, completion).gold


def gold_version_of(prompt: str) -> str:
    """The definition :func:`bench_gold` scores ``prompt`` with."""
    if parse_grounded_prompt(prompt) is not None:
        return f"{GROUNDED_VERSION} over {GOLD_VERSION}"
    if parse_persona_prompt(prompt) is not None:
        return f"{PERSONAS_VERSION} over {GOLD_VERSION}"
    return GOLD_VERSION


class BenchGold:
    """:func:`bench_gold` as a reward source: ``score(prompts, completions) -> Tensor[B]``."""

    name = "toy_text_bench_gold"
    version = f"{BENCH_VERSION} ({GOLD_VERSION}, {PERSONAS_VERSION}, {GROUNDED_VERSION})"

    def score(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        if len(prompts) != len(completions):
            raise ValueError(
                f"completions: expected one per prompt ({len(prompts)}), got {len(completions)}"
            )
        return torch.tensor(
            [bench_gold(p, c) for p, c in zip(prompts, completions, strict=True)],
            dtype=torch.float32,
        )

    __call__ = score


# ----------------------------------------------------------------------------- sentences

Sentences = list[list[str]]


def _sentences(text: str) -> Sentences:
    out, cur = [], []
    for w in text.split():
        if w == ".":
            out.append(cur)
            cur = []
        else:
            cur.append(w)
    if cur:
        out.append(cur)
    return out


def _text(sents: Sentences) -> str:
    return " " + " ".join(" ".join([*s, "."]) for s in sents)


def _opinion(s: list[str]) -> tuple[int, int, str, int] | None:
    """(noun index, adjective index, noun, polarity) of an opinion sentence, else None."""
    kind, noun, _adj, _n, pol = parse_sentence(s)
    if kind != "opinion":
        return None
    if len(s) >= 4 and s[0] == "the" and s[2] in ("is", "feels"):
        return 1, len(s) - 1, noun, pol
    return len(s) - 1, len(s) - 2, noun, pol


def _fitting(rng, noun: str, polarity: int, exclude=()) -> str | None:
    pool = [a for a in (POSITIVE if polarity > 0 else NEGATIVE) if fits(noun, a)]
    pool = [a for a in pool if a not in exclude]
    return str(rng.choice(pool)) if pool else None


def _mentions(sents: Sentences) -> Counter:
    return Counter(w for s in sents for w in s)


def _clean(prompt: Prompt, sents: Sentences) -> bool:
    """No defect the gold penalizes, and no length penalty."""
    f = gold_features(prompt.text, _text(sents))
    return (
        f.misfit == f.contra == f.rep == f.stuff == f.stack == f.off == f.broken == 0
        and f.sentences <= 4
        and f.words <= 32
    )


class _Context:
    """What every builder draws from: the held-out prompts and the base reviews."""

    def __init__(self, rng: np.random.Generator, prompts: list[Prompt]):
        self.rng = rng
        self.prompts = prompts

    def prompt(self, where: Callable[[Prompt], bool] = lambda p: True) -> Prompt:
        pool = [p for p in self.prompts if where(p)]
        return pool[int(self.rng.integers(len(pool)))]

    def review(self, prompt: Prompt) -> Sentences:
        return _sentences(generate_review(prompt, self.rng))

    def clean_review(self, prompt: Prompt, max_sentences: int = 4, tries: int = 50) -> Sentences:
        for _ in range(tries):
            s = self.review(prompt)
            if len(s) <= max_sentences and _clean(prompt, s):
                return s
        return []

    def opinions(self, prompt: Prompt, sents: Sentences, fitting: bool = True) -> list[tuple]:
        """(sentence index, noun index, adjective index, noun, polarity) of the opinions on
        the prompt's product (or generic nouns), fitting their noun unless ``fitting=False``."""
        on_topic = set(PRODUCTS[prompt.product]) | set(GENERIC_NOUNS)
        out = []
        for i, s in enumerate(sents):
            o = _opinion(s)
            if o and o[2] in on_topic and (not fitting or fits(o[2], s[o[1]])):
                out.append((i, *o))
        return out


Built = tuple[str, str, str, dict] | None  # (prompt, chosen, rejected, meta)

# ----------------------------------------------------------------------------- components


def _sentiment(c: _Context) -> Built:
    prompt = c.prompt()
    sents = c.review(prompt)
    ops = c.opinions(prompt, sents)
    if not ops:
        return None
    i, _ni, ai, noun, pol = ops[int(c.rng.integers(len(ops)))]
    adj = _fitting(c.rng, noun, -pol)
    if adj is None:
        return None
    edited = [list(s) for s in sents]
    edited[i][ai] = adj
    a, b = _text(sents), _text(edited)
    if gold_features(prompt.text, b).gold > gold_features(prompt.text, a).gold:
        a, b = b, a
    return prompt.text, a, b, {"edit": f"sentence {i}: adjective of the other polarity"}


def _merge_noun(c: _Context, prompt: Prompt, sents: Sentences) -> Sentences | None:
    """The review with one opinion's noun (mentioned once) replaced by the noun of another
    opinion of the same polarity (mentioned once), the adjective fitting: one noun less
    covered, nothing else changed (no repetition, stuffing or contradiction)."""
    ops = c.opinions(prompt, sents)
    counts = _mentions(sents)
    pairs = [
        (j, nj, oi)
        for (j, nj, aj, oj, pj) in ops
        for (i, _n, _a, oi, pi) in ops
        if i != j and oi != oj and pi == pj and counts[oj] == 1 and counts[oi] == 1
        and fits(oi, sents[j][aj])
    ]  # fmt: skip
    if not pairs:
        return None
    j, nj, other = pairs[int(c.rng.integers(len(pairs)))]
    edited = [list(s) for s in sents]
    edited[j][nj] = other
    if any(edited[j] == s for k, s in enumerate(edited) if k != j):
        return None
    return edited


def _coverage(c: _Context) -> Built:
    prompt = c.prompt(lambda p: p.constraint == "")
    sents = c.review(prompt)
    edited = _merge_noun(c, prompt, sents)
    if edited is None:
        return None
    return prompt.text, _text(sents), _text(edited), {"edit": "one noun replaced by a covered one"}


def _constraint_mention(c: _Context) -> Built:
    prompt = c.prompt(lambda p: p.constraint.startswith("mention:"))
    target = prompt.constraint.split(":", 1)[1]
    sents = c.review(prompt)
    counts = _mentions(sents)
    if counts[target]:
        return None
    ops = [
        o
        for o in c.opinions(prompt, sents)
        if counts[o[3]] == 1 and fits(target, sents[o[0]][o[2]])
    ]
    if not ops:
        return None
    j, nj, _aj, _noun, _pol = ops[int(c.rng.integers(len(ops)))]
    chosen = [list(s) for s in sents]
    chosen[j][nj] = target
    return prompt.text, _text(chosen), _text(sents), {"edit": f"sentence {j}: the {target}"}


def _constraint_short(c: _Context) -> Built:
    prompt = c.prompt(lambda p: p.constraint == "short")
    sents = c.review(prompt)
    if len(sents) < 3:
        extra = c.review(prompt)
        sents = sents + [s for s in extra if s not in sents]
    k = int(c.rng.integers(1, 3))
    if len(sents) <= k:
        return None
    n = min(len(sents), k + int(c.rng.integers(1, 3)))
    if n <= 2:  # the rejected must break "keep it short" (more than two sentences)
        return None
    return (
        prompt.text,
        _text(sents[:k]),
        _text(sents[:n]),
        {"edit": f"{k} sentences against {n} (the same review extended)"},
    )


def _constraint_detailed(c: _Context) -> Built:
    prompt = c.prompt(lambda p: p.constraint == "detailed")
    sents = c.review(prompt)
    if gold_features(prompt.text, _text(sents)).coverage != 3:
        return None
    edited = _merge_noun(c, prompt, sents)
    if edited is None:
        return None
    return prompt.text, _text(sents), _text(edited), {"edit": "coverage 3 against 2"}


# ----------------------------------------------------------------------------- defects


def _defect(name: str) -> Callable[[_Context], Built]:
    def build(c: _Context) -> Built:
        prompt = c.prompt(lambda p: p.constraint == "")
        if name == "gushing":
            return _gushing(c, prompt)
        short = name in ("repetition", "long", "contradiction")
        sents = c.clean_review(prompt, max_sentences=3 if short else 4)
        if not sents:
            return None
        out = _DEFECT_EDITS[name](c, prompt, sents)
        if out is None:
            return None
        chosen, rejected, edit = out
        return prompt.text, _text(chosen), _text(rejected), {"edit": edit}

    return build


def _pick(c: _Context, items: list):
    return items[int(c.rng.integers(len(items)))] if items else None


def _misfit(c, prompt, sents):
    o = _pick(c, c.opinions(prompt, sents))
    if o is None:
        return None
    i, _ni, ai, noun, pol = o
    pool = [a for a in (POSITIVE if pol > 0 else NEGATIVE) if not fits(noun, a)]
    if not pool:
        return None
    edited = [list(s) for s in sents]
    edited[i][ai] = str(c.rng.choice(pool))
    return sents, edited, f"sentence {i}: an adjective that does not fit the {noun}"


def _contradiction(c, prompt, sents):
    # Two opinions of opposite polarity on nouns n and m (each mentioned once); the chosen
    # adds a second opinion on n of n's polarity; the rejected gives that one the other
    # polarity and m's opinion n's polarity: S and coverage stay equal, only n is both
    # praised and criticized. (Flipping the second opinion alone would confound the
    # contradiction with sentiment: the gold would keep only the pairs that end more
    # positive.)
    counts = _mentions(sents)
    once = [x for x in c.opinions(prompt, sents) if counts[x[3]] == 1]
    plain = [x for x in once if not set(sents[x[0]]) & set(INTENSIFIERS)]  # S x1 each way
    o = _pick(c, [(a, b) for a in once for b in plain if a[3] != b[3] and a[4] == -b[4]])
    if o is None:
        return None
    (i, _ni, ai, noun, pol), (k, _nk, ak, other, _pk) = o
    same = _fitting(c.rng, noun, pol, exclude=(sents[i][ai],))
    flipped, swapped = _fitting(c.rng, noun, -pol), _fitting(c.rng, other, pol)
    if None in (same, flipped, swapped):
        return None
    chosen = [*[list(s) for s in sents], ["the", noun, "feels", same]]
    rejected = [list(s) for s in chosen]
    rejected[-1][3], rejected[k][ak] = flipped, swapped
    if not _clean(prompt, chosen):
        return None
    return (
        chosen,
        rejected,
        (f"the {noun} again, the other polarity; sentence {k} (the {other}) takes the {noun}'s"),
    )


def _repetition(c, prompt, sents):
    counts = _mentions(sents)
    i = _pick(c, [k for k, s in enumerate(sents) if all(counts[w] == 1 or w in ("the", "is",
              "feels", "i") for w in s)])  # fmt: skip
    if i is None:
        return None
    return sents, [*sents[: i + 1], sents[i], *sents[i + 1 :]], f"sentence {i} repeated"


def _stuffing(c, prompt, sents):
    counts = _mentions(sents)
    o = _pick(c, [x for x in c.opinions(prompt, sents) if counts[x[3]] == 1])
    if o is None or len(sents) > 2:
        return None
    i, _ni, ai, noun, pol = o
    a1 = _fitting(c.rng, noun, pol, exclude=(sents[i][ai],))
    a2 = _fitting(c.rng, noun, pol, exclude=(sents[i][ai], a1))
    if a1 is None or a2 is None:
        return None
    extra = [["the", noun, "feels", a1], [a2, noun]]
    return sents, [*sents, *extra], f"the {noun} mentioned a third time"


def _stacking(c, prompt, sents):
    o = _pick(c, c.opinions(prompt, sents))
    if o is None:
        return None
    i, _ni, ai, _noun, _pol = o
    s = sents[i]
    core = [w for w in s if w not in INTENSIFIERS]
    adj_at = core.index(s[ai])
    one = [*core[:adj_at], str(c.rng.choice(INTENSIFIERS)), *core[adj_at:]]
    more = [str(w) for w in c.rng.choice(INTENSIFIERS, size=int(c.rng.integers(1, 3)))]
    stacked = [*one[:adj_at], *more, *one[adj_at:]]
    chosen, rejected = [list(x) for x in sents], [list(x) for x in sents]
    chosen[i], rejected[i] = one, stacked
    if not _clean(prompt, chosen):
        return None
    return chosen, rejected, f"sentence {i}: {len(more)} more intensifiers"


def _offtopic(c, prompt, sents):
    counts = _mentions(sents)
    o = _pick(c, [x for x in c.opinions(prompt, sents) if counts[x[3]] == 1])
    if o is None:
        return None
    i, ni, _ai, _noun, _pol = o
    others = [q for p, ps in PRODUCTS.items() if p != prompt.product for q in ps]
    edited = [list(s) for s in sents]
    edited[i][ni] = str(c.rng.choice(others))
    return sents, edited, f"sentence {i}: another product's part"


def _broken(c, prompt, sents):
    i = int(c.rng.integers(len(sents)))
    for _ in range(10):
        words = [str(w) for w in c.rng.permutation(sents[i])]
        if parse_sentence(words)[0] == "broken":
            edited = [list(s) for s in sents]
            edited[i] = words
            return sents, edited, f"sentence {i} shuffled"
    return None


def _long(c, prompt, sents):
    if len(sents) < 3:
        return None
    extra = [s for s in c.clean_review(prompt) if s not in sents]
    padded = [*sents, *extra][:7]
    if len(padded) <= 4:
        return None
    return sents, padded, f"{len(sents)} sentences padded to {len(padded)}"


def _gushing(c: _Context, prompt: Prompt) -> Built:
    parts = list(PRODUCTS[prompt.product])
    nouns = [str(n) for n in c.rng.choice(parts, size=3, replace=False)]
    pol = 1 if c.rng.random() < 0.5 else -1
    adjs = [_fitting(c.rng, n, pol) for n in nouns]
    if None in adjs:
        return None
    plain = [["the", n, "is", a] for n, a in zip(nouns, adjs, strict=True)]
    gush = [["the", n, "is", str(c.rng.choice(INTENSIFIERS)), a]
            for n, a in zip(nouns, adjs, strict=True)]  # fmt: skip
    return prompt.text, _text(plain), _text(gush), {"edit": "every opinion intensified"}


_DEFECT_EDITS = {
    "misfit": _misfit,
    "contradiction": _contradiction,
    "repetition": _repetition,
    "stuffing": _stuffing,
    "stacking": _stacking,
    "offtopic": _offtopic,
    "broken": _broken,
    "long": _long,
}

# ----------------------------------------------------------------------------- natural


def _two_reviews(c: _Context) -> tuple[Prompt, str, str]:
    prompt = c.prompt()
    a, b = _text(c.review(prompt)), _text(c.review(prompt))
    if gold_features(prompt.text, b).gold > gold_features(prompt.text, a).gold:
        a, b = b, a
    return prompt, a, b


def _natural(c: _Context) -> Built:
    prompt, a, b = _two_reviews(c)
    return prompt.text, a, b, {"edit": "two base reviews"}


def _length_matched(c: _Context) -> Built:
    prompt, a, b = _two_reviews(c)
    if abs(len(a) - len(b)) > LENGTH_TOLERANCE * max(len(a), len(b)):
        return None
    return prompt.text, a, b, {"edit": "two base reviews of about one length"}


# ----------------------------------------------------------------------------- personas


def _persona_pool(c: _Context, prompt: Prompt) -> list[str]:
    """Base reviews of ``prompt`` and edits of them that move the terms personas weigh."""
    pool = []
    for _ in range(4):
        s = c.review(prompt)
        pool.append(s)
        pool.append(s[:2])
        pool.append(s + c.review(prompt)[:3])
        flipped = [list(x) for x in s]
        for i, _n, ai, noun, pol in c.opinions(prompt, s):
            adj = _fitting(c.rng, noun, -pol)
            if adj is not None:
                flipped[i][ai] = adj
        pool.append(flipped)
        loud = [list(x) for x in s]
        for i, _n, ai, _noun, _pol in c.opinions(prompt, s, fitting=False):
            loud[i].insert(ai, str(c.rng.choice(INTENSIFIERS)))
        pool.append(loud)
    return list(dict.fromkeys(_text(s) for s in pool if s))


def _persona(name: str) -> Callable[[_Context], Built]:
    def build(c: _Context) -> Built:
        prompt = c.prompt()
        pool = _persona_pool(c, prompt)
        mine = [persona_gold(name, prompt.text, x) for x in pool]
        generic = [gold_features(prompt.text, x).gold for x in pool]
        pairs = [
            (a, b)
            for a in range(len(pool))
            for b in range(len(pool))
            if mine[a] - mine[b] >= PERSONA_MIN_MARGIN
            and generic[a] - generic[b] <= PERSONA_MAX_GENERIC_MARGIN
        ]
        if not pairs:
            return None
        a, b = pairs[int(c.rng.integers(len(pairs)))]
        return (
            persona_prompt(name, prompt.text),
            pool[a],
            pool[b],
            {
                "persona": name,
                "generic_gold_margin": generic[a] - generic[b],
                "edit": "the reader's pick among base reviews and their edits",
            },
        )

    return build


# ----------------------------------------------------------------------------- grounded


def _mention_prompt(c: _Context) -> tuple[Prompt, str, list[str]]:
    prompt = c.prompt(lambda p: p.constraint.startswith("mention:"))
    target = prompt.constraint.split(":", 1)[1]
    others = [q for q in PRODUCTS[prompt.product] if q != target]
    return prompt, target, [str(q) for q in c.rng.permutation(others)]


def _fact(c: _Context, noun: str, pol: int) -> Statement | None:
    adj = _fitting(c.rng, noun, pol)
    return None if adj is None else Statement(noun, adjective=adj)


def _claim(c: _Context, noun: str, pol: int, cite: int | None = None) -> str | None:
    adj = _fitting(c.rng, noun, pol)
    if adj is None:
        return None
    return f"the {noun} is {adj}" + (f" {citation(cite)}" if cite is not None else "") + " ."


def _shuffled(c: _Context, statements: list[Statement]) -> list[Statement]:
    return [statements[i] for i in c.rng.permutation(len(statements))]


def _sign(c: _Context) -> int:
    return 1 if c.rng.random() < 0.5 else -1


def _multihop(c: _Context) -> Built:
    prompt, target, (b, d, *_) = _mention_prompt(c)
    pol = _sign(c)
    fb, fd = _fact(c, b, pol), _fact(c, d, -pol)
    right, wrong = _claim(c, target, pol), _claim(c, target, -pol)
    if None in (fb, fd, right, wrong):
        return None
    sheet = _shuffled(c, [fb, Statement(target, matches=b), fd])
    return (
        grounded_prompt(sheet, prompt.text),
        f" {right}",
        f" {wrong}",
        {
            "scenario": "multi-hop",
            "edit": f"the {target} matches the {b}; the rejected takes the {d}'s polarity",
        },
    )


def _citation(c: _Context) -> Built:
    prompt, target, (x, y, *_) = _mention_prompt(c)
    facts = [_fact(c, n, _sign(c)) for n in (target, x, y)]
    if None in facts:
        return None
    sheet = _shuffled(c, facts)
    at = {s.noun: k for k, s in enumerate(sheet, start=1)}
    pol = {s.noun: 1 if s.adjective in _POS else -1 for s in sheet}
    first = _pick(c, [x, y])
    claims = [(first, at[first]), (target, at[target])]
    right = [_claim(c, n, pol[n], k) for n, k in claims]
    if None in right:
        return None
    # The same claims, each citing the statement the other cites.
    wrong = [
        r.replace(citation(k), citation(k2))
        for r, (_n, k), (_m, k2) in zip(right, claims, claims[::-1], strict=True)
    ]
    return (
        grounded_prompt(sheet, prompt.text),
        " " + " ".join(right),
        " " + " ".join(wrong),
        {
            "scenario": "citation",
            "edit": "the two citations swapped",
        },
    )


def _abstain(c: _Context) -> Built:
    prompt, target, (x, y, *_) = _mention_prompt(c)
    covered = c.rng.random() < 0.5
    fx = _fact(c, x, _sign(c))
    ft = _fact(c, target, _sign(c)) if covered else _fact(c, y, _sign(c))
    if fx is None or ft is None:
        return None
    sheet = _shuffled(c, [fx, ft])
    about_x = _claim(c, x, 1 if fx.adjective in _POS else -1)
    if covered:
        answer = _claim(c, target, 1 if ft.adjective in _POS else -1)
    else:
        answer = _claim(c, target, _sign(c))
    if about_x is None or answer is None:
        return None
    abstain = f" {about_x} {abstain_sentence(target)}"
    answered = f" {about_x} {answer}"
    chosen, rejected = (answered, abstain) if covered else (abstain, answered)
    return grounded_prompt(sheet, prompt.text), chosen, rejected, {
        "scenario": "abstain",
        "edit": "answers the covered part against abstaining" if covered
        else "abstains on an uncovered part against inventing an opinion",
    }  # fmt: skip


def _conflict(c: _Context) -> Built:
    prompt, target, (x, *_) = _mention_prompt(c)
    fp, fn, fx = _fact(c, target, 1), _fact(c, target, -1), _fact(c, x, _sign(c))
    if None in (fp, fn, fx):
        return None
    sheet = _shuffled(c, [fp, fn, fx])
    about_x = _claim(c, x, 1 if fx.adjective in _POS else -1)
    side = _claim(c, target, _sign(c))
    if about_x is None or side is None:
        return None
    chosen = f" {about_x} {conflict_sentence(target)}"
    hedged = c.rng.random() < 0.5  # half the rejected note the conflict too, then take a side
    rejected = f" {about_x} {conflict_sentence(target)} {side}" if hedged else f" {about_x} {side}"
    return grounded_prompt(sheet, prompt.text), chosen, rejected, {
        "scenario": "conflict",
        "edit": "notes the conflict against " + ("noting it and taking a side" if hedged
                                                 else "taking a side"),
    }  # fmt: skip


# ----------------------------------------------------------------------------- building


def _builders() -> dict[str, Callable[[_Context], Built]]:
    return {
        "toy-sentiment": _sentiment,
        "toy-coverage": _coverage,
        "toy-constraint-mention": _constraint_mention,
        "toy-constraint-short": _constraint_short,
        "toy-constraint-detailed": _constraint_detailed,
        **{f"toy-defect-{d}": _defect(d) for d in DEFECTS},
        "toy-natural": _natural,
        "toy-length-matched": _length_matched,
        "toy-near-ties": _natural,
        **{f"persona-{p}": _persona(p) for p in PERSONAS},
        "grounded-multihop": _multihop,
        "grounded-citation": _citation,
        "grounded-abstain": _abstain,
        "grounded-conflict": _conflict,
    }


def _accepts(subset: str, margin: float) -> bool:
    if subset == "toy-near-ties":
        return NEAR_TIE[0] <= margin <= NEAR_TIE[1]
    if subset.startswith("persona-"):
        return margin >= PERSONA_MIN_MARGIN
    return margin >= MIN_MARGIN


def build_reward_bench(
    per_subset: int = 100,
    *,
    seed: int = 0,
    testbed_seed: int = 0,
    subsets: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The benchmark's rows, ``per_subset`` of each subset, in section order.

    Args:
        per_subset: rows of each subset.
        seed: seed of the construction (each subset draws from its own stream, so a subset's
            rows do not depend on which other subsets are built).
        testbed_seed: the toy_text ``seed`` whose held-out evaluation prompts are used.
        subsets: build only these (default: every subset of ``SECTIONS``).

    Raises:
        ValueError: an unknown subset or ``per_subset`` < 1.
        RuntimeError: a subset that could not be filled (a construction that stopped
            working, e.g. after a change of the gold).
    """
    builders = _builders()
    names = list(builders) if subsets is None else subsets
    unknown = [s for s in names if s not in builders]
    if unknown:
        raise ValueError(f"subsets: unknown {', '.join(unknown)}; known: {', '.join(builders)}")
    if per_subset < 1:
        raise ValueError(f"per_subset: expected >= 1, got {per_subset}")
    _train, held_out = split_prompts(testbed_seed)
    rows: list[dict[str, Any]] = []
    for index, subset in enumerate(builders):
        if subset not in names:
            continue
        c = _Context(np.random.default_rng([seed, index]), held_out)
        seen: set[tuple[str, str, str]] = set()
        tries = 0
        while len(seen) < per_subset:
            tries += 1
            if tries > 500 * per_subset:
                raise RuntimeError(
                    f"{subset}: built {len(seen)} of {per_subset} rows in {tries - 1} tries"
                )
            built = builders[subset](c)
            if built is None:
                continue
            prompt, chosen, rejected, meta = built
            if chosen == rejected or (prompt, chosen, rejected) in seen:
                continue
            g_c, g_r = bench_gold(prompt, chosen), bench_gold(prompt, rejected)
            if not _accepts(subset, g_c - g_r):
                continue
            seen.add((prompt, chosen, rejected))
            rows.append({
                "id": f"{subset}-{len(seen) - 1:04d}",
                "subset": subset,
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "meta": {
                    "bench_version": BENCH_VERSION,
                    "gold_version": gold_version_of(prompt),
                    "gold_chosen": g_c,
                    "gold_rejected": g_r,
                    "margin": g_c - g_r,
                    **meta,
                },
            })  # fmt: skip
    return rows


def section_map(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The benchmark's section map as ``goodhart eval-rm --sections FILE`` reads it: each
    subset weighted by its rows (RewardBench's ``EXAMPLE_COUNTS``), sections as ``SECTIONS``
    (only the subsets present)."""
    counts = Counter(r["subset"] for r in rows)
    return {
        "name": BENCH_VERSION,
        "example_counts": dict(counts),
        "subset_mapping": {
            s: [t for t in tests if t in counts]
            for s, tests in SECTIONS.items()
            if any(t in counts for t in tests)
        },
    }


def write_reward_bench(
    out: str | os.PathLike, per_subset: int = 100, *, seed: int = 0, testbed_seed: int = 0
) -> tuple[Path, Path]:
    """Build the benchmark and write ``out`` (JSONL rows) and, beside it, its section map
    ``<out stem>.sections.json`` (with the versions and the settings), each atomically.

    Returns:
        (rows path, section-map path).
    """
    out = Path(out)
    if not out.name.endswith(".jsonl"):
        raise ValueError(f"--out: {out}: expected a .jsonl file name")
    if out.is_dir():
        raise ValueError(f"--out: {out} is a directory; expected a .jsonl file name")
    rows = build_reward_bench(per_subset, seed=seed, testbed_seed=testbed_seed)
    sections = out.with_name(out.name[: -len(".jsonl")] + ".sections.json")
    atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_json(sections, {
        **section_map(rows),
        "bench_version": BENCH_VERSION,
        "gold_versions": [GOLD_VERSION, PERSONAS_VERSION, GROUNDED_VERSION],
        "settings": {"per_subset": per_subset, "seed": seed, "testbed_seed": testbed_seed},
        "rows": out.name,
    })  # fmt: skip
    return out, sections
