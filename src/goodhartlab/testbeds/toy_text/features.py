"""Domain-knowledge features of a toy_text review (the opinion-summarization case study).

"Leveraging Domain Knowledge for Efficient Reward Modelling in RLHF: A Case-Study in
E-Commerce Opinion Summarization" (February 2024) writes down what a domain expert knows
makes a good product opinion and learns the reward over it (``core.feature_reward``). The
toy_text domain is product reviews; what an expert can write down from the public grammar
and catalogue (``language``), never from the gold (this module imports neither ``gold`` nor
its components; a test checks it):

    own_parts         distinct parts of the prompt's product mentioned (catalogue lookup)
    generic_nouns     distinct generic nouns mentioned (price, design, ...)
    off_parts         distinct parts of other products mentioned
    sentences         sentences ("." ends one; a trailing fragment counts)
    over_budget       max(0, sentences − budget), budget 2 for "keep it short", else 4
    repeated          sentences beyond a first copy
    top_mentions      mentions of the most-mentioned noun
    words             whitespace tokens (punctuation included)
    intensifiers      intensifier words (very, really, ...)
    stacked           intensifiers beyond one per sentence
    positive          positive adjectives and verbs
    negative          negative adjectives and verbs
    mixed_nouns       nouns with both a positive and a negative sentence
    malformed         sentences matching none of the grammar's templates (a filler,
                      "the N is|feels ADJP", "ADJP N", "i VERB the N"; ADJP = intensifier* adj)
    asked_part        for "mention the X": +1 if X is mentioned, −1 if not; 0 otherwise
    detailed_parts    own_parts when the prompt says "be detailed", else 0

The counts come from ``tools.toy_text_counts`` (the Themis counter's, reused). Which
adjective fits which noun is the gold's hidden table (``language.fits``): not a feature.
Bump ``FEATURES_VERSION`` on any change of a value.

The list was written by someone who had read the gold's documented formula (which defects
it penalizes), so it is the knowledge of an expert who knows what the reader cares about,
not a blind guess; it knows none of the gold's weights, thresholds (but the sentence budget)
or its plausibility table.

Measured (``benchmarks/domain_features.py``, first N of the study's 25 %-noise pairs, clean
accuracy on the last 1,000, 3 seeds, 95 % t-intervals; paired differences per seed):
BT / BT + features / features alone: N = 30: 0.526 ± 0.067 / 0.644 ± 0.028 / 0.621;
N = 100: 0.484 ± 0.022 / 0.587 ± 0.139 / 0.545; N = 300: 0.585 ± 0.063 / 0.720 ± 0.035 /
0.682; N = 1,000: 0.623 ± 0.018 / 0.756 ± 0.076 / 0.779; N = 3,000: 0.650 ± 0.007 / 0.798 ±
0.020 / 0.802 (features alone is deterministic over seeds). Gain of the features: +0.118 ±
0.083, +0.103 ± 0.122, +0.135 ± 0.090, +0.133 ± 0.058, +0.148 ± 0.025: roughly constant in
N, not largest at few pairs; but BT + features on 300 pairs beats BT on 3,000. Best-of-n
gold at N = 3,000 (64 prompts x 256): n = 16 2.265 ± 0.123 (BT 0.725 ± 0.450; paired over
prompts +1.540 ± 0.108), n = 256 2.974 ± 0.273 (BT 0.379 ± 0.761; paired +2.595 ± 0.462).
Without ``over_budget`` (``toy_text_domain_no_budget``): BT + features 0.678 ± 0.051 (N =
30), 0.596 ± 0.137 (100), 0.721 ± 0.016 (300), 0.741 ± 0.061 (1,000), 0.778 ± 0.006 (3,000;
best-of-256 gold 2.698 ± 0.429): the gain does not hinge on the shared threshold.
``features_lr`` 0.2 instead of 0.05: 0.634, 0.608, 0.602 at N = 30, 100, 300 (worse at 300).
"""

from __future__ import annotations

from goodhartlab.registry import RM_FEATURES
from goodhartlab.testbeds.toy_text.language import (
    FILLERS,
    GENERIC_NOUNS,
    INTENSIFIERS,
    NEGATIVE,
    POSITIVE,
    PRODUCTS,
    VERBS_NEG,
    VERBS_POS,
    parse_prompt,
)
from goodhartlab.testbeds.toy_text.tools import toy_text_counts

FEATURES_VERSION = "toy_text-features-v1"

FEATURE_NAMES: tuple[str, ...] = (
    "own_parts",
    "generic_nouns",
    "off_parts",
    "sentences",
    "over_budget",
    "repeated",
    "top_mentions",
    "words",
    "intensifiers",
    "stacked",
    "positive",
    "negative",
    "mixed_nouns",
    "malformed",
    "asked_part",
    "detailed_parts",
)

_NOUNS = {q for parts in PRODUCTS.values() for q in parts} | set(GENERIC_NOUNS)
_ADJ = set(POSITIVE) | set(NEGATIVE)
_POS = set(POSITIVE) | set(VERBS_POS)
_NEG = set(NEGATIVE) | set(VERBS_NEG)
_FILLERS = {tuple(f.split()) for f in FILLERS}
_BUDGET = {"short": 2}
DEFAULT_BUDGET = 4


def _sentences(completion: str) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    cur: list[str] = []
    for w in completion.split():
        if w == ".":
            out.append(tuple(cur))
            cur = []
        else:
            cur.append(w)
    if cur:
        out.append(tuple(cur))
    return out


def _adjp(words: tuple[str, ...]) -> bool:
    """intensifier* adjective"""
    return len(words) >= 1 and words[-1] in _ADJ and all(w in INTENSIFIERS for w in words[:-1])


def well_formed(s: tuple[str, ...]) -> bool:
    """Whether a sentence (without its ".") matches a template of the grammar."""
    if s in _FILLERS:
        return True
    if len(s) >= 4 and s[0] == "the" and s[1] in _NOUNS and s[2] in ("is", "feels"):
        return _adjp(s[3:])
    if len(s) == 4 and s[0] == "i" and s[1] in (set(VERBS_POS) | set(VERBS_NEG)):
        return s[2] == "the" and s[3] in _NOUNS
    return len(s) >= 2 and s[-1] in _NOUNS and _adjp(s[:-1])


@RM_FEATURES.register(
    "toy_text_domain",
    paper="Leveraging Domain Knowledge for Efficient Reward Modelling in RLHF: A Case-Study "
    "in E-Commerce Opinion Summarization (February 2024)",
    version=FEATURES_VERSION,
    testbed="toy_text",
    names=FEATURE_NAMES,
)
def toy_text_domain(prompt: str, completion: str) -> list[float]:
    """What a reviewer of products knows: coverage of the product's parts, off-topic parts,
    length against the prompt's budget, repetition, intensifiers, sentiment, grammar."""
    spec = parse_prompt(prompt)
    counts = toy_text_counts(prompt, completion)
    sentences = _sentences(completion)
    words = completion.split()
    polarity: dict[str, set[int]] = {}
    for s in sentences:
        sign = sum(w in _POS for w in s) - sum(w in _NEG for w in s)
        for w in s:
            if w in _NOUNS and sign:
                polarity.setdefault(w, set()).add(1 if sign > 0 else -1)
    n = counts["sentences"]
    constraint = spec.constraint
    asked = 0.0
    if constraint.startswith("mention:"):
        asked = 1.0 if constraint.split(":", 1)[1] in words else -1.0
    own = len(counts["parts"])
    values = {
        "own_parts": own,
        "generic_nouns": len({w for w in words if w in GENERIC_NOUNS}),
        "off_parts": len(counts["off"]),
        "sentences": n,
        "over_budget": max(0, n - _BUDGET.get(constraint, DEFAULT_BUDGET)),
        "repeated": counts["repeated"],
        "top_mentions": counts["top_mentions"],
        "words": len(words),
        "intensifiers": sum(w in INTENSIFIERS for w in words),
        "stacked": sum(max(0, sum(w in INTENSIFIERS for w in s) - 1) for s in sentences),
        "positive": sum(w in _POS for w in words),
        "negative": sum(w in _NEG for w in words),
        "mixed_nouns": sum(len(v) == 2 for v in polarity.values()),
        "malformed": sum(not well_formed(s) for s in sentences),
        "asked_part": asked,
        "detailed_parts": own if constraint == "detailed" else 0,
    }
    return [float(values[k]) for k in FEATURE_NAMES]


NO_BUDGET_NAMES: tuple[str, ...] = tuple(n for n in FEATURE_NAMES if n != "over_budget")


@RM_FEATURES.register(
    "toy_text_domain_no_budget",
    paper="Leveraging Domain Knowledge for Efficient Reward Modelling in RLHF: A Case-Study "
    "in E-Commerce Opinion Summarization (February 2024)",
    version=FEATURES_VERSION,
    testbed="toy_text",
    names=NO_BUDGET_NAMES,
)
def toy_text_domain_no_budget(prompt: str, completion: str) -> list[float]:
    """``toy_text_domain`` without ``over_budget`` (an ablation: its budget of 4 sentences is
    the one threshold the feature set shares with the gold; ``sentences`` stays)."""
    values = toy_text_domain(prompt, completion)
    return [v for n, v in zip(FEATURE_NAMES, values, strict=True) if n != "over_budget"]
