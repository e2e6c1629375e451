"""A rule-based check of toy_text completions, for Cooper's pair selection (rewards.cooper).

Cooper (Hong et al. 2025, arXiv 2508.05613) picks the reward model's positives with a rule
whose "correct" is high-precision. toy_text has no verifiable answer, so the rule here is a
surface check that rejects the degenerate text optimization pressure produces, from what
the text shows (the counts of ``tools.toy_text_counts``, the public catalogue
``language.PRODUCTS`` and the intensifier list):

    pass(x, y) = [y ends with "."] ∧ [1 ≤ sentences ≤ 4 (≤ 2 when x says "keep it short")]
               ∧ [words ≤ 32] ∧ [no sentence repeated] ∧ [no noun mentioned > 2 times]
               ∧ [no other product's part] ∧ [at most one intensifier per sentence]

It does not import or call the gold (``gold.py``): it knows nothing of the hidden
plausibility table (``language.fits``), of polarity or sentiment, of grammar or of the gold's
weights, so a passing completion can still be a bad one (misfit adjectives, broken
sentences, contradictions): it is high-precision for *rejecting*, not a verifier.
"""

from __future__ import annotations

from goodhartlab.testbeds.toy_text.language import INTENSIFIERS, parse_prompt
from goodhartlab.testbeds.toy_text.tools import toy_text_counts

__all__ = ["CHECKS_VERSION", "toy_text_surface_check"]

CHECKS_VERSION = "toy_text-checks-v1"

_INT = set(INTENSIFIERS)


def toy_text_surface_check(prompt: str, completion: str) -> bool:
    """True when ``completion`` passes the surface check above."""
    words = completion.split()
    if not words or words[-1] != ".":
        return False
    counts = toy_text_counts(prompt, completion)
    short = parse_prompt(prompt).constraint == "short"
    if not 1 <= counts["sentences"] <= (2 if short else 4) or len(words) > 32:
        return False
    if counts["repeated"] or counts["off"] or counts["top_mentions"] > 2:
        return False
    stacked, cur = False, 0
    for w in words:
        if w == ".":
            cur = 0
        elif w in _INT:
            cur += 1
            stacked |= cur > 1
    return not stacked
