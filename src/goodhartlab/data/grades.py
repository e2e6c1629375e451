"""Graded preference labels: how much better the chosen completion is, on a small ordinal scale.

A pair's grade is ``meta["grade"]`` when a labeller recorded one; otherwise it is derived from
the gold rewards the labelling stored (``gold_chosen``, ``gold_rejected``):

    grade = 1 + #{e in edges : |g_c − g_r| ≥ e}

so with the default edges (1.0, 3.0) in gold units a pair is grade 1 ("slightly better",
|Δ| < 1), 2 ("better", 1 ≤ |Δ| < 3) or 3 ("much better", |Δ| ≥ 3). On toy_text's default
pairs (gold v4) the tertiles of |Δ| are about 1.26 and 3.0, so the grades are roughly balanced.
The magnitude, not the sign, sets the grade: a label that noise flipped keeps the grade of
the comparison the labeller saw, as a rater who picks the wrong side still says how sure
they are. Results record ``GRADES_VERSION``; bump it on every change of this rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from goodhartlab.data.schema import PreferencePair

GRADES_VERSION = "gold-margin-grades-v1"

#: Default edges between grades, in gold units (see the module docstring).
DEFAULT_GRADE_EDGES: tuple[float, ...] = (1.0, 3.0)


def preference_grades(
    pairs: Sequence[PreferencePair], edges: Sequence[float] = DEFAULT_GRADE_EDGES
) -> list[int]:
    """The grade (1 .. len(edges) + 1) of each pair, from ``meta["grade"]`` or the gold margin.

    Raises ValueError naming the first pair that has neither, or whose recorded grade is not
    an integer in range, or if ``edges`` are not positive and increasing.
    """
    edges = [float(e) for e in edges]
    if any(e <= 0 for e in edges) or any(b <= a for a, b in pairwise(edges)):
        raise ValueError(f"grade_edges: expected positive, increasing values; got {edges}")
    top = len(edges) + 1
    grades = []
    for i, p in enumerate(pairs):
        recorded = p.meta.get("grade")
        if recorded is not None:
            if (
                isinstance(recorded, bool)
                or not isinstance(recorded, int)
                or not (1 <= recorded <= top)
            ):
                raise ValueError(
                    f"pair {i} (id {p.id!r}): meta['grade'] must be an integer in [1, {top}], "
                    f"got {recorded!r}"
                )
            grades.append(recorded)
            continue
        if p.gold_chosen is None or p.gold_rejected is None:
            raise ValueError(
                f"pair {i} (id {p.id!r}): a graded objective needs meta['grade'] or both "
                "gold_chosen and gold_rejected (label the pairs with goodhart data)"
            )
        gap = abs(p.gold_chosen - p.gold_rejected)
        grades.append(1 + sum(gap >= e for e in edges))
    return grades
