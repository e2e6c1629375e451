"""The claims table: each paper's headline claim, what the study measured, reproduced or not.

A study names its claims in its config (``claims:``, a list of :class:`ClaimConfig`); each
claim is checked by a registered check (registry ``claim_check``) on the table over seeds
(``report.seeds``), with 95 % t-intervals over seeds, paired by seed against the claim's
baseline. A check returns a :class:`ClaimResult`: "reproduced", "not reproduced" (the data
do not show it), "contradicted" (they show the opposite, significantly) or "not run" (a
method of the claim is not in the study). Nothing is tuned towards agreement: the check and
its metric are fixed in the config before the study runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from goodhartlab.registry import CLAIM_CHECKS, name_in
from goodhartlab.report.seeds import FIGURES, matched_proxy_gain, paired

__all__ = ["CLAIM_CHECKS", "ClaimConfig", "ClaimResult", "check_claims"]


class ClaimConfig(BaseModel):
    """One paper's claim, as a check of the study's methods against a baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    paper: str = Field(..., description="Authors, year, arXiv id.")
    claim: str = Field(..., description="The paper's headline claim, in one line.")
    check: name_in(CLAIM_CHECKS) = Field(..., description="Registry 'claim_check'.")
    methods: list[str] = Field(..., min_length=1, description="The methods (groups) it is about.")
    baseline: str | None = Field(None, description="The method they are compared with.")
    metric: str = Field(
        "final",
        description="The figure compared (report.seeds.FIGURES: final, peak, gold@1, ...).",
    )

    def model_post_init(self, _: Any) -> None:
        if self.metric not in FIGURES:
            raise ValueError(f"metric: expected one of {', '.join(FIGURES)}; got {self.metric!r}")


@dataclass(frozen=True)
class ClaimResult:
    paper: str
    claim: str
    measured: str
    verdict: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _fmt(iv: dict[str, Any] | None) -> str:
    if iv is None or iv["mean"] is None:
        return "n/a"
    if iv["lo"] is None:
        return f"{iv['mean']:+.2f} (1 seed)"
    return f"{iv['mean']:+.2f} [{iv['lo']:+.2f}, {iv['hi']:+.2f}]"


def _sign(iv: dict[str, Any] | None) -> int | None:
    """+1 / −1 when the interval lies above / below 0, 0 when it holds 0, None if undefined."""
    if iv is None or iv["lo"] is None:
        return None
    return 1 if iv["lo"] > 0 else -1 if iv["hi"] < 0 else 0


def _differences(claim: ClaimConfig, figures: dict) -> list[tuple[str, dict | None]]:
    return [(m, paired(figures, m, claim.baseline, claim.metric)) for m in claim.methods]


def _measured(claim: ClaimConfig, diffs: list[tuple[str, dict | None]]) -> str:
    what = FIGURES[claim.metric]
    return "; ".join(f"{m} − {claim.baseline}, {what}: {_fmt(iv)}" for m, iv in diffs)


@CLAIM_CHECKS.register(
    "better", description="Every method is significantly above the baseline (paired by seed)."
)
def better(claim: ClaimConfig, figures: dict, rows: dict) -> tuple[str, str]:
    diffs = _differences(claim, figures)
    signs = [_sign(iv) for _, iv in diffs]
    if any(s == -1 for s in signs):
        return _measured(claim, diffs), "contradicted"
    ok = all(s == 1 for s in signs)
    return _measured(claim, diffs), "reproduced" if ok else "not reproduced"


@CLAIM_CHECKS.register(
    "best",
    description="The baseline (the method claimed best) is significantly above every method "
    "(paired by seed); contradicted where one is significantly above it.",
)
def best(claim: ClaimConfig, figures: dict, rows: dict) -> tuple[str, str]:
    diffs = [(m, paired(figures, claim.baseline, m, claim.metric)) for m in claim.methods]
    what = FIGURES[claim.metric]
    measured = "; ".join(f"{claim.baseline} − {m}, {what}: {_fmt(iv)}" for m, iv in diffs)
    signs = [_sign(iv) for _, iv in diffs]
    if any(s == -1 for s in signs):
        return measured, "contradicted"
    return measured, "reproduced" if all(s == 1 for s in signs) else "not reproduced"


@CLAIM_CHECKS.register(
    "not_worse",
    description="No method is significantly below the baseline ('at least as good').",
)
def not_worse(claim: ClaimConfig, figures: dict, rows: dict) -> tuple[str, str]:
    diffs = _differences(claim, figures)
    signs = [_sign(iv) for _, iv in diffs]
    if any(s is None for s in signs):
        return _measured(claim, diffs), "not reproduced"
    if any(s == -1 for s in signs):
        return _measured(claim, diffs), "contradicted"
    above = [m for (m, _), s in zip(diffs, signs, strict=True) if s == 1]
    note = (
        f" (significantly better: {', '.join(above)})" if above else " (no significant difference)"
    )
    return _measured(claim, diffs) + note, "reproduced"


@CLAIM_CHECKS.register(
    "same",
    description="No method differs significantly from the baseline (e.g. a KL penalty that "
    "does not move the frontier).",
)
def same(claim: ClaimConfig, figures: dict, rows: dict) -> tuple[str, str]:
    diffs = _differences(claim, figures)
    signs = [_sign(iv) for _, iv in diffs]
    if any(s is None for s in signs):
        return _measured(claim, diffs), "not reproduced"
    ok = all(s == 0 for s in signs)
    return _measured(claim, diffs), "reproduced" if ok else "not reproduced"


@CLAIM_CHECKS.register(
    "no_collapse",
    description="No method hacked: its status over seeds is 'held' or 'fell' "
    "(report.seeds.status), not 'hacked' or 'unclear'.",
)
def no_collapse(claim: ClaimConfig, figures: dict, rows: dict) -> tuple[str, str]:
    parts, ok = [], True
    for m in claim.methods:
        r = rows[m]
        parts.append(
            f"{m}: {r['status']}, drop {_fmt(r['drop'])} of the gain, final {_fmt(r['final'])}"
        )
        ok &= r["status"] in ("held", "fell")
    return "; ".join(parts), "reproduced" if ok else "not reproduced"


@CLAIM_CHECKS.register(
    "better_at_matched_proxy",
    description="Every method has significantly more gold than the baseline at the same proxy "
    "gain (the largest gain all their seeds reach).",
)
def better_at_matched_proxy(claim: ClaimConfig, figures: dict, rows: dict) -> tuple[str, str]:
    parts, signs = [], []
    for m in claim.methods:
        iv = matched_proxy_gain(figures, m, claim.baseline)
        level = f" at proxy gain {iv['proxy_gain']:.2f}" if iv else ""
        parts.append(f"{m} − {claim.baseline}, gold{level}: {_fmt(iv)}")
        signs.append(_sign(iv))
    if any(s == -1 for s in signs):
        return "; ".join(parts), "contradicted"
    return "; ".join(parts), "reproduced" if all(s == 1 for s in signs) else "not reproduced"


def check_claims(
    claims: list[ClaimConfig], figures: dict, rows: list[dict[str, Any]]
) -> list[ClaimResult]:
    """Each claim's result on the study's figures ({group: {seed: run_figures}}) and its
    table over seeds (``report.seeds.group_rows``)."""
    by_name = {r["method"]: r for r in rows}
    out = []
    for c in claims:
        missing = [m for m in [*c.methods, c.baseline] if m is not None and m not in by_name]
        if missing:
            out.append(
                ClaimResult(c.paper, c.claim, f"not in this study: {', '.join(missing)}", "not run")
            )
            continue
        measured, verdict = CLAIM_CHECKS[c.check](c, figures, by_name)
        out.append(ClaimResult(c.paper, c.claim, measured, verdict))
    return out
