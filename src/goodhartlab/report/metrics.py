"""The metrics of a report's table: each an entry of ``goodhartlab.registry.METRICS``.

A metric reads one row of :func:`goodhartlab.report.report.summary_table` and carries
whether higher is better and a version, bumped whenever its definition changes (as
lm-evaluation-harness does for its metrics), so that a result records what produced it.
"""

from __future__ import annotations

from typing import Any

from goodhartlab.registry import METRICS

__all__ = ["METRICS", "metric_values"]

_GAO = "Gao, Schulman, Hilton 2023, arXiv 2210.10760"


def _column(
    key: str,
    label: str,
    description: str,
    higher_is_better: bool | None,
    paper: str | None = None,
) -> None:
    def read(row: dict[str, Any]) -> float | None:
        value = row.get(key)
        return None if value is None else float(value)

    read.__name__ = key
    METRICS.register(
        key,
        read,
        description=description,
        higher_is_better=higher_is_better,
        paper=paper,
        version="1",
        label=label,
    )


# The report's table, in this order (report.report reads the registry).
_column("peak_gold", "peak gold", "gold at the peak, relative to the base policy", True)
_column("d_peak", "d at peak", "d = sqrt(KL(π ‖ π0)) at the gold peak, nats^½", None)
_column("final_gold", "final gold", "gold at the last point, relative to the base policy", True)
_column("final_proxy", "final proxy", "proxy at the last point, relative to the base policy", None)
_column("d_max", "d max", "d at the last point", None)
_column(
    "drop",
    "overoptimization (drop)",
    "fraction of the gold gain lost after the peak (core.scaling.overoptimization)",
    False,
)
_column("alpha", "α", "α of the fitted overoptimization law", None, _GAO)
_column("beta", "β", "β of the fitted law: how fast gold falls with distance", False, _GAO)
_column("r2", "R²", "R² of the fitted law", True, _GAO)


def metric_values(row: dict[str, Any]) -> dict[str, float | None]:
    """Every registered metric of one summary-table row, with the version it was made by."""
    return {e.name: e.obj(row) for e in METRICS.entries()}
