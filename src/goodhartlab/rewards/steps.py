"""The steps of a completion for step-level rewards (``core.step_rewards``): its sentences.

Gao et al. 2024 (arXiv 2410.15115) score every prefix of a reasoning trace, one prefix per
reasoning step. In toy_text (and prose generally) the steps are sentences: a sentence ends at
``.``, ``!`` or ``?`` followed by whitespace or the end of the text; text after the last such
mark is one more step. The prefix of step k is the completion's text up to the end of sentence
k; the last prefix is always the whole completion (trailing whitespace included), so the last
step's score is the proxy's score of the completion. An empty or blank completion is one step,
itself.
"""

from __future__ import annotations

import re

__all__ = ["sentence_ends", "step_prefixes"]

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def sentence_ends(completion: str) -> list[int]:
    """Character offsets just past each step's end; the last is ``len(completion)``.

    >>> sentence_ends(" the screen is good . i like it .")
    [21, 33]
    >>> sentence_ends(" the screen is good . i like")
    [21, 28]
    >>> sentence_ends("")
    [0]
    """
    ends = [m.end() for m in _SENTENCE_END.finditer(completion)]
    if not ends or completion[ends[-1] :].strip():
        ends.append(len(completion))
    ends[-1] = len(completion)  # trailing whitespace belongs to the last step
    return ends


def step_prefixes(completion: str) -> list[str]:
    """The completion's text up to the end of each step.

    >>> step_prefixes(" a b . c d .")
    [' a b .', ' a b . c d .']
    """
    return [completion[:e] for e in sentence_ends(completion)]
