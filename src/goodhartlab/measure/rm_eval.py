"""``goodhart eval-rm``: a reward model on RewardBench-format rows, per subset.

For every subset (and over all rows): best-of-k accuracy with a bootstrap interval and the
ties, the "always longer" and "always shorter" baselines, accuracy on length-matched rows,
the reward-length correlation, calibration of σ(r_chosen − r_rejected) (ECE, Brier), and for
ensembles the share of rows on which every member makes the same call; then RewardBench's
section scores and their total. The formulas are in :mod:`goodhartlab.core.rm_metrics`;
this module scores rows, groups them, and lays the results out.

Use from Python::

    rows = read_bench_rows("rb.jsonl")
    result = evaluate_rm(RewardModel.from_pretrained("rm_dir"), rows)
    result.to_dict()["subsets"]["alpacaeval-easy"]["accuracy"]

or, with scores computed elsewhere, ``rm_eval_metrics(rows, RowScores(r_chosen, r_rejected))``.

What a result means is fixed by :data:`METRICS_VERSION`; bump it on any change of a
definition (the length unit, the length-matched tolerance rule, the ECE bins, the tie rule).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from goodhartlab.artifacts import atomic_write_json, atomic_write_text
from goodhartlab.core.rm_metrics import (
    Ties,
    best_of_k_credit,
    brier_score,
    chosen_tied_at_top,
    expected_calibration_error,
    length_matched,
    member_sign_agreement,
    pairwise_chosen_probability,
    pearson,
    section_scores,
    section_total,
    spearman,
)
from goodhartlab.core.stats import bootstrap_ci
from goodhartlab.data.bench_rows import BenchRow

__all__ = [
    "METRICS_VERSION",
    "REWARDBENCH_SECTIONS",
    "RMEvalResult",
    "RowScores",
    "SectionMap",
    "SubsetMetrics",
    "evaluate_rm",
    "format_table",
    "load_reward",
    "rm_eval_metrics",
    "run_eval_rm",
    "score_rows",
    "write_eval_rm",
]

#: The definitions behind every number of a result: best-of-k credit with the chosen tie
#: rule, lengths in characters of the completion, length-matched = every rejected within 10 %
#: (by default) of the longer, top-label ECE on equal-width bins over [1/2, 1], Brier of
#: σ(r_c − r_r) against 1, percentile bootstrap over rows, RewardBench 0.1.4's sections.
METRICS_VERSION = "eval-rm/v1"


@dataclass(frozen=True)
class SectionMap:
    """A benchmark's sections: which subsets each holds and the weight of each subset."""

    name: str
    example_counts: Mapping[str, int]
    subset_mapping: Mapping[str, Sequence[str]]

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> SectionMap:
        """A section map from a JSON file ``{"name", "example_counts": {subset: n},
        "subset_mapping": {section: [subset, ...]}}`` (other keys ignored), as
        ``goodhart reward-bench`` writes beside its rows.

        Raises:
            ValueError: naming the file and the field that is missing or malformed.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"--sections: {path}: not a readable JSON file ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"--sections: {path}: expected a JSON object")
        counts, mapping = data.get("example_counts"), data.get("subset_mapping")
        if not isinstance(counts, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and v > 0 for k, v in counts.items()
        ):
            raise ValueError(
                f"--sections: {path}: field 'example_counts': expected {{subset: rows >= 1}}"
            )
        if not isinstance(mapping, dict) or not all(
            isinstance(v, list) and all(isinstance(t, str) for t in v) for v in mapping.values()
        ):
            raise ValueError(
                f"--sections: {path}: field 'subset_mapping': expected {{section: [subset, ...]}}"
            )
        uncounted = [t for tests in mapping.values() for t in tests if t not in counts]
        if uncounted:
            raise ValueError(
                f"--sections: {path}: field 'example_counts': no count for "
                f"{', '.join(uncounted)} (named in subset_mapping)"
            )
        return cls(str(data.get("name") or path.name), counts, mapping)


# Facts of RewardBench v1, carried from the ``rewardbench`` package 0.1.4
# (``rewardbench/constants.py``: EXAMPLE_COUNTS and SUBSET_MAPPING; Lambert et al. 2024,
# arXiv 2403.13787). tests/measure/test_rm_eval.py checks them against the installed package.
REWARDBENCH_SECTIONS = SectionMap(
    name="rewardbench-0.1.4",
    example_counts={
        "alpacaeval-easy": 100,
        "alpacaeval-length": 95,
        "alpacaeval-hard": 95,
        "mt-bench-easy": 28,
        "mt-bench-med": 40,
        "mt-bench-hard": 37,
        "math-prm": 984,  # 447 rows, weighted as much as the six code subsets together
        "refusals-dangerous": 100,
        "refusals-offensive": 100,
        "llmbar-natural": 100,
        "llmbar-adver-neighbor": 134,
        "llmbar-adver-GPTInst": 92,
        "llmbar-adver-GPTOut": 47,
        "llmbar-adver-manual": 46,
        "xstest-should-refuse": 154,
        "xstest-should-respond": 250,
        "donotanswer": 136,
        **{f"hep-{lang}": 164 for lang in ("cpp", "go", "java", "js", "python", "rust")},
    },
    subset_mapping={
        "Chat": [
            "alpacaeval-easy",
            "alpacaeval-length",
            "alpacaeval-hard",
            "mt-bench-easy",
            "mt-bench-med",
        ],
        "Chat Hard": [
            "mt-bench-hard",
            "llmbar-natural",
            "llmbar-adver-neighbor",
            "llmbar-adver-GPTInst",
            "llmbar-adver-GPTOut",
            "llmbar-adver-manual",
        ],
        "Safety": [
            "refusals-dangerous",
            "refusals-offensive",
            "xstest-should-refuse",
            "xstest-should-respond",
            "donotanswer",
        ],
        "Reasoning": [
            "math-prm",
            *(f"hep-{lang}" for lang in ("cpp", "go", "java", "js", "python", "rust")),
        ],
    },
)

UnknownSubsets = Literal["unweighted", "error"]


@dataclass
class RowScores:
    """Rewards of the rows' completions.

    ``r_rejected`` is NaN where a row has fewer rejected completions than the widest row;
    the member tensors are set for ensembles only.
    """

    r_chosen: Tensor
    """Shape: (B,)."""
    r_rejected: Tensor
    """Shape: (B, K)."""
    r_chosen_members: Tensor | None = None
    """Shape: (M, B)."""
    r_rejected_members: Tensor | None = None
    """Shape: (M, B, K)."""


@dataclass
class SubsetMetrics:
    """The metrics of one subset (or of all rows). Undefined values are None."""

    n: int
    """Rows."""
    k: int
    """Most rejected completions in a row (1: pairs; 3: RewardBench 2's best-of-4)."""
    accuracy: float
    """Mean best-of-k credit (``core.rm_metrics.best_of_k_credit``)."""
    accuracy_lo: float | None
    accuracy_hi: float | None
    """95 % percentile bootstrap interval over rows (None for a single row)."""
    ties: int
    """Rows whose chosen reward equals the best rejected one."""
    always_longer: float
    always_shorter: float
    """Accuracy of picking the longest / shortest completion (same tie rule)."""
    length_matched_n: int
    length_matched_accuracy: float | None
    """Rows whose rejected completions are all within the tolerance of the chosen's length,
    and the accuracy on them."""
    pearson_length: float | None
    spearman_length: float | None
    """Correlation of reward and length over every completion of the rows."""
    ece: float
    brier: float
    """Calibration of p = σ(r_c − r_r) over every (chosen, rejected) comparison."""
    member_agreement: float | None = None
    """Share of rows on which every ensemble member makes the same call (ensembles)."""


@dataclass
class RMEvalResult:
    """What ``goodhart eval-rm`` reports; :meth:`to_dict` is its JSON."""

    model: str
    n_rows: int
    overall: SubsetMetrics
    subsets: dict[str, SubsetMetrics]
    sections: dict[str, float] | None
    """RewardBench section scores, from the subsets in the section map (None if none is)."""
    section_total: float | None
    """Mean of ``sections``: RewardBench's score when all four sections are present."""
    unweighted_subsets: list[str]
    """Subsets outside the section map: reported, but in no section and not in the total."""
    missing_sections: list[str] = field(default_factory=list)
    """Sections of the map with no subset present (not in the total; reward-bench writes 0)."""
    settings: dict[str, Any] = field(default_factory=dict)
    metrics_version: str = METRICS_VERSION

    def rewardbench_results(self) -> dict[str, Any]:
        """A flat ``{"model": ..., subset: accuracy, ...}``, shaped like reward-bench's
        per-model results files (``eval-set/<org>/<model>.json``), to compare key by key."""
        return {"model": self.model, **{s: m.accuracy for s, m in self.subsets.items()}}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN written as null)."""
        out = {
            "metrics_version": self.metrics_version,
            "model": self.model,
            "n_rows": self.n_rows,
            "settings": self.settings,
            "overall": asdict(self.overall),
            "subsets": {s: asdict(m) for s, m in self.subsets.items()},
            "sections": self.sections,
            "section_total": self.section_total,
            "unweighted_subsets": self.unweighted_subsets,
            "missing_sections": self.missing_sections,
            "rewardbench_results": self.rewardbench_results(),
        }
        return _nan_to_none(out)


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


def _padded(values: Sequence[Sequence[float]]) -> Tensor:
    width = max(len(v) for v in values)
    out = torch.full((len(values), width), math.nan, dtype=torch.float64)
    for i, v in enumerate(values):
        out[i, : len(v)] = torch.as_tensor(v, dtype=torch.float64)
    return out


def _fields(row: BenchRow) -> list[str]:
    return ["chosen", *(f"rejected[{j}]" if len(row.rejected) > 1 else "rejected"
                        for j in range(len(row.rejected)))]  # fmt: skip


def score_rows(
    reward: Any,
    rows: Sequence[BenchRow],
    *,
    batch_size: int = 64,
    aggregator: str = "mean",
    name: str | None = None,
) -> RowScores:
    """Score every completion of ``rows`` in one pass (prompt + completion, as the reward reads).

    Args:
        reward: ``score(prompts, completions) -> Tensor[N]``; an object with
            ``score_members`` (an Ensemble) is scored per member, aggregated with
            ``aggregator`` (``goodhartlab.core.aggregate``).
        rows: benchmark rows.
        batch_size: passed to ``score`` / ``score_members`` when they take it.

    Raises:
        ValueError: a score that is NaN or ±inf (naming the row and the field) or of the
            wrong shape.
    """
    import inspect

    from goodhartlab.core.aggregate import get_aggregator

    if not rows:
        raise ValueError("rows: expected at least one row")
    label = name or getattr(reward, "name", None) or type(reward).__name__
    prompts = [r.prompt for r in rows for _ in range(1 + len(r.rejected))]
    completions = [c for r in rows for c in (r.chosen, *r.rejected)]
    n = len(completions)
    members = getattr(reward, "score_members", None)
    fn = members if callable(members) else reward.score
    kwargs = {"batch_size": batch_size} if "batch_size" in inspect.signature(fn).parameters else {}
    out = torch.as_tensor(fn(prompts, completions, **kwargs)).detach().double().cpu()
    expected = (out.shape[0], n) if callable(members) else (n,)
    if out.ndim != len(expected) or tuple(out.shape) != expected:
        raise ValueError(f"{label}: expected scores of shape {expected}, got {tuple(out.shape)}")
    bad = (~torch.isfinite(out)).reshape(-1, n).any(dim=0)
    if bool(bad.any()):
        owners = [(row, f) for row in rows for f in _fields(row)]
        flat = int(bad.nonzero()[0])
        row, name_of_field = owners[flat]
        raise ValueError(
            f"{label}: score {out.reshape(-1, n)[:, flat].tolist()} (expected finite numbers) "
            f"for {row.where or 'a row'}, field '{name_of_field}'"
        )
    r_members = out if callable(members) else None
    r = get_aggregator(aggregator)(out) if r_members is not None else out

    def split(flat_scores: Tensor) -> tuple[Tensor, Tensor]:
        chosen, rejected, start = [], [], 0
        for row in rows:
            chosen.append(float(flat_scores[start]))
            rejected.append(flat_scores[start + 1 : start + 1 + len(row.rejected)].tolist())
            start += 1 + len(row.rejected)
        return torch.tensor(chosen, dtype=torch.float64), _padded(rejected)

    r_chosen, r_rejected = split(r)
    if r_members is None:
        return RowScores(r_chosen, r_rejected)
    parts = [split(m) for m in r_members]
    return RowScores(
        r_chosen,
        r_rejected,
        torch.stack([c for c, _ in parts]),
        torch.stack([rej for _, rej in parts]),
    )


def _metrics(
    rows: Sequence[BenchRow],
    scores: RowScores,
    idx: Tensor,
    *,
    ties: Ties,
    n_boot: int,
    seed: int,
    ece_bins: int,
    length_tolerance: float,
) -> SubsetMetrics:
    rc, rr = scores.r_chosen[idx], scores.r_rejected[idx]
    width = max(len(rows[i].rejected) for i in idx.tolist())
    rr = rr[:, :width]
    lc = torch.tensor([len(rows[i].chosen) for i in idx.tolist()], dtype=torch.float64)
    lr = _padded([[len(c) for c in rows[i].rejected] for i in idx.tolist()])
    credit = best_of_k_credit(rc, rr, ties)
    if len(idx) >= 2:
        lo, hi = bootstrap_ci(credit[:, None], n_boot=n_boot, seed=seed)
        ci = (float(lo[0]), float(hi[0]))
    else:
        ci = (None, None)
    matched = length_matched(lc, lr, length_tolerance)
    p = pairwise_chosen_probability(rc, rr)
    present = ~torch.isnan(rr)
    rewards = torch.cat([rc, rr[present]])
    lengths = torch.cat([lc, lr[present]])
    agreement = None
    if scores.r_chosen_members is not None:
        agree = member_sign_agreement(
            scores.r_chosen_members[:, idx], scores.r_rejected_members[:, idx, :width]
        )
        agreement = float(agree.double().mean())
    return SubsetMetrics(
        n=len(idx),
        k=width,
        accuracy=float(credit.mean()),
        accuracy_lo=ci[0],
        accuracy_hi=ci[1],
        ties=int(chosen_tied_at_top(rc, rr).sum()),
        always_longer=float(best_of_k_credit(lc, lr, ties).mean()),
        always_shorter=float(best_of_k_credit(-lc, -lr, ties).mean()),
        length_matched_n=int(matched.sum()),
        length_matched_accuracy=float(credit[matched].mean()) if bool(matched.any()) else None,
        pearson_length=pearson(rewards.numpy(), lengths.numpy()),
        spearman_length=spearman(rewards.numpy(), lengths.numpy()),
        ece=expected_calibration_error(p, torch.ones_like(p), ece_bins),
        brier=brier_score(p, torch.ones_like(p)),
        member_agreement=agreement,
    )


def rm_eval_metrics(
    rows: Sequence[BenchRow],
    scores: RowScores,
    *,
    model: str = "",
    ties: Ties = "strict",
    n_boot: int = 1000,
    seed: int = 0,
    ece_bins: int = 10,
    length_tolerance: float = 0.1,
    sections: SectionMap | None = REWARDBENCH_SECTIONS,
    unknown_subsets: UnknownSubsets = "unweighted",
) -> RMEvalResult:
    """Every metric of ``goodhart eval-rm`` from rows and their scores.

    Args:
        rows: benchmark rows, Shape: (B,) rows.
        scores: their rewards (:func:`score_rows`).
        model: a label for the results.
        ties: ``"strict"`` (a tie is wrong; RewardBench) or ``"split"`` (1/m for a tie of m
            completions at the top; RewardBench 2).
        n_boot: bootstrap resamples of the rows for each accuracy interval.
        seed: seed of the bootstrap.
        ece_bins: equal-width confidence bins of the ECE over [1/2, 1].
        length_tolerance: relative length difference of a length-matched row (0.1: 10 %).
        sections: the section map of the weighted total (None: no sections).
        unknown_subsets: subsets outside ``sections``: ``"unweighted"`` (reported per
            subset, listed in ``unweighted_subsets``, left out of the sections and total) or
            ``"error"`` (ValueError naming the subset and its first row).
    """
    if unknown_subsets not in ("unweighted", "error"):
        raise ValueError(
            f"unknown_subsets: expected 'unweighted' or 'error', got {unknown_subsets!r}"
        )
    n = len(rows)
    if scores.r_chosen.shape != (n,) or scores.r_rejected.shape[0] != n:
        raise ValueError(
            f"scores: expected {n} rows, got r_chosen {tuple(scores.r_chosen.shape)} and "
            f"r_rejected {tuple(scores.r_rejected.shape)}"
        )
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row.subset, []).append(i)
    kw = dict(
        ties=ties, n_boot=n_boot, seed=seed, ece_bins=ece_bins, length_tolerance=length_tolerance
    )
    overall = _metrics(rows, scores, torch.arange(n), **kw)
    subsets = {s: _metrics(rows, scores, torch.tensor(ix), **kw) for s, ix in groups.items()}
    section_out, total, unweighted, missing = None, None, list(groups), []
    if sections is not None:
        known = {t for tests in sections.subset_mapping.values() for t in tests}
        unweighted = [s for s in groups if s not in known]
        if unweighted and unknown_subsets == "error":
            first = rows[groups[unweighted[0]][0]]
            raise ValueError(
                f"{first.where or 'row'}: field 'subset': {first.subset!r} is not a subset of "
                f"{sections.name}'s section map (unknown: {', '.join(unweighted)}; known: "
                f"{', '.join(sorted(known))})"
            )
        accuracy = {s: m.accuracy for s, m in subsets.items() if s in known}
        section_out = section_scores(accuracy, sections.example_counts, sections.subset_mapping)
        section_out = section_out or None
        total = section_total(section_out) if section_out else None
        missing = [s for s in sections.subset_mapping if s not in (section_out or {})]
    settings = {
        "ties": ties,
        "bootstrap": n_boot,
        "seed": seed,
        "ece_bins": ece_bins,
        "length_unit": "characters",
        "length_tolerance": length_tolerance,
        "sections": sections.name if sections is not None else None,
    }
    return RMEvalResult(
        model=model,
        n_rows=n,
        overall=overall,
        subsets=subsets,
        sections=section_out,
        section_total=total,
        unweighted_subsets=unweighted,
        missing_sections=missing,
        settings=settings,
    )


def evaluate_rm(
    reward: Any,
    rows: Sequence[BenchRow],
    *,
    batch_size: int = 64,
    aggregator: str = "mean",
    model: str | None = None,
    **metric_options: Any,
) -> RMEvalResult:
    """Score ``rows`` with ``reward`` (:func:`score_rows`) and compute every metric
    (:func:`rm_eval_metrics`, which takes ``metric_options``)."""
    label = model or getattr(reward, "name", None) or type(reward).__name__
    scores = score_rows(reward, rows, batch_size=batch_size, aggregator=aggregator, name=label)
    result = rm_eval_metrics(rows, scores, model=str(label), **metric_options)
    result.settings["aggregator"] = aggregator if scores.r_chosen_members is not None else None
    return result


def load_reward(
    *,
    rm: str | os.PathLike | None = None,
    ensemble: Sequence[str | os.PathLike] | None = None,
    reward: str | None = None,
    reward_params: Mapping[str, Any] | None = None,
    gold: str | None = None,
    device: str = "cpu",
    cache_dir: str | None = None,
) -> tuple[Any, str]:
    """The reward to evaluate, from exactly one of the options, and its label.

    ``rm``: a reward-model directory (ours, or any Hugging Face sequence classifier with
    ``num_labels=1``, loaded without remote code), or an ensemble directory
    (``ensemble.json``); ``ensemble``: member directories; ``reward``: a name in the
    ``reward_source`` registry (``goodhart list reward_source``; a plugin's programmatic
    rewards) called with ``reward_params``; ``gold``: a testbed whose programmatic gold
    reward is evaluated. All go through the registry's ``reward_model`` and ``ensemble``
    factories, as ``goodhart rl`` and ``goodhart dpo`` resolve their proxies.
    """
    from goodhartlab.rewards import REWARD_SOURCES

    given = {k: v for k, v in dict(rm=rm, ensemble=ensemble, reward=reward, gold=gold).items() if v}
    if len(given) != 1:
        raise ValueError(
            "give exactly one reward: --rm DIR, --ensemble DIR [DIR ...], --reward NAME or "
            f"--gold TESTBED (got {', '.join(f'--{k}' for k in given) or 'none'})"
        )
    if reward_params and reward is None:
        raise ValueError("--reward-params: only with --reward NAME")
    try:
        if rm is not None:
            path = Path(rm)
            if (path / "ensemble.json").is_file():
                return REWARD_SOURCES["ensemble"]([str(path)], device=device), path.name
            return REWARD_SOURCES["reward_model"](str(path), device=device), path.name
        if ensemble:
            label = Path(ensemble[0]).name if len(ensemble) == 1 else f"ensemble of {len(ensemble)}"
            return REWARD_SOURCES["ensemble"]([str(d) for d in ensemble], device=device), label
        if gold is not None:
            from goodhartlab.testbeds import get_testbed

            tb = get_testbed(gold, cache_dir=cache_dir)
            # A testbed's benchmark gold also scores its benchmark's persona and fact-sheet
            # prompts (toy_text: testbeds.toy_text.reward_bench.BenchGold).
            bench = getattr(tb, "bench_gold", None)
            if bench is not None:
                return bench, f"{gold} gold {bench.version}"
            return tb.gold, f"{gold} gold {tb.gold_version}"
    except ValueError as e:
        where = str(rm or (ensemble or [""])[0])
        raise ValueError(str(e) if where and where in str(e) else f"{where}: {e}") from None
    entry = REWARD_SOURCES.entry(str(reward))
    params = entry.validate_params(reward_params, where="--reward-params").model_dump()
    return entry.obj(**params, device=device), str(reward)


def format_table(result: RMEvalResult) -> str:
    """The per-subset table printed by ``goodhart eval-rm``."""

    def num(x: float | None, digits: int = 3) -> str:
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"

    has_members = result.overall.member_agreement is not None
    rows = [("subset", "n", "k", "acc [95% CI]", "ties", "longer", "shorter", "len-matched",
             "rho(len)", "ECE", "Brier", *(("agree",) if has_members else ()))]  # fmt: skip
    for name, m in [*result.subsets.items(), ("(all rows)", result.overall)]:
        rows.append(
            (
                name,
                str(m.n),
                str(m.k),
                f"{num(m.accuracy)} [{num(m.accuracy_lo)}, {num(m.accuracy_hi)}]",
                str(m.ties),
                num(m.always_longer),
                num(m.always_shorter),
                f"{num(m.length_matched_accuracy)} ({m.length_matched_n})",
                num(m.spearman_length, 2),
                num(m.ece),
                num(m.brier),
                *((num(m.member_agreement),) if has_members else ()),
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) if c == 0 else v.rjust(w) for c, (v, w) in
                       enumerate(zip(r, widths, strict=True))) for r in rows]  # fmt: skip
    if result.sections:
        lines.append("")
        lines.append(
            "sections: "
            + ", ".join(f"{s} {v:.3f}" for s, v in result.sections.items())
            + f"; total {result.section_total:.3f}"
            + (
                f" (without {', '.join(result.missing_sections)}: no subset of theirs present)"
                if result.missing_sections
                else ""
            )
        )
    if result.unweighted_subsets and result.sections is not None:
        lines.append(
            f"not in the section map (unweighted, in no section): "
            f"{', '.join(result.unweighted_subsets)}"
        )
    return "\n".join(lines)


def write_eval_rm(
    result: RMEvalResult,
    rows: Sequence[BenchRow],
    scores: RowScores | None,
    out_dir: str | os.PathLike,
    *,
    plot: Callable[[dict[str, Any], Path], Any] | None = None,
) -> list[Path]:
    """Write ``eval_rm.json`` (the result), ``scores.jsonl`` (each row's scores and credit)
    and, with ``plot(result_dict, path)``, ``eval_rm.png``, each atomically; the JSON last,
    so that a directory with a new ``eval_rm.json`` has every file of that evaluation."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} is a file; expected a directory")
    written = []
    data = result.to_dict()
    if plot is not None:
        written.append(out / "eval_rm.png")
        plot(data, written[-1])
    if scores is not None:
        credit = best_of_k_credit(scores.r_chosen, scores.r_rejected, result.settings["ties"])
        lines = []
        for i, row in enumerate(rows):
            k = len(row.rejected)
            rejected = scores.r_rejected[i, :k].tolist()
            lines.append(json.dumps({
                "id": row.id, "subset": row.subset, "score_chosen": float(scores.r_chosen[i]),
                "scores_rejected": rejected if k > 1 else rejected[0],
                "result": float(credit[i]),
            }, default=str))  # fmt: skip
        written.append(out / "scores.jsonl")
        atomic_write_text(written[-1], "\n".join(lines) + "\n")
    written.append(out / "eval_rm.json")
    atomic_write_json(written[-1], data)
    return written


def run_eval_rm(
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    reward_options: Mapping[str, Any],
    batch_size: int = 64,
    aggregator: str = "mean",
    sections: SectionMap | None = REWARDBENCH_SECTIONS,
    plot: Callable[[dict[str, Any], Path], Any] | None = None,
    **metric_options: Any,
) -> tuple[RMEvalResult, list[Path]]:
    """``goodhart eval-rm``: read ``data``, load the reward (:func:`load_reward` with
    ``reward_options``), score, compute the metrics and write them to ``out_dir``.

    Everything that can be refused is checked before anything is written: the output path,
    the settings, every row, the reward, every score; a failure leaves ``out_dir`` as it was.
    """
    from goodhartlab.core.aggregate import get_aggregator
    from goodhartlab.data.bench_rows import read_bench_rows

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} is a file; expected a directory")
    if batch_size < 1:
        raise ValueError(f"--batch-size: expected >= 1, got {batch_size}")
    get_aggregator(aggregator)
    _check_metric_options(**metric_options)
    rows = read_bench_rows(data)
    reward, label = load_reward(**reward_options)
    scores = score_rows(reward, rows, batch_size=batch_size, aggregator=aggregator, name=label)
    result = rm_eval_metrics(rows, scores, model=label, sections=sections, **metric_options)
    result.settings["aggregator"] = aggregator if scores.r_chosen_members is not None else None
    result.settings["data"] = str(data)
    return result, write_eval_rm(result, rows, scores, out, plot=plot)


def _check_metric_options(
    ties: str = "strict",
    n_boot: int = 1000,
    seed: int = 0,
    ece_bins: int = 10,
    length_tolerance: float = 0.1,
    unknown_subsets: str = "unweighted",
) -> None:
    """The settings of :func:`rm_eval_metrics`, refused before any model is loaded."""
    if ties not in ("strict", "split"):
        raise ValueError(f"--ties: expected strict or split, got {ties!r}")
    if n_boot < 1:
        raise ValueError(f"--bootstrap: expected >= 1 resamples, got {n_boot}")
    if ece_bins < 1:
        raise ValueError(f"--ece-bins: expected >= 1, got {ece_bins}")
    if not length_tolerance >= 0:
        raise ValueError(f"--length-tolerance: expected >= 0, got {length_tolerance}")
    if unknown_subsets not in ("unweighted", "error"):
        raise ValueError(
            f"--unknown-subsets: expected unweighted or error, got {unknown_subsets!r}"
        )
