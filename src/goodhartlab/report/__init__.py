"""Plots, tables, the plain-language verdict and the HTML report of a study's run directory."""

from goodhartlab.report.report import build_report, collect_metrics, summary_table, verdict

__all__ = ["build_report", "collect_metrics", "summary_table", "verdict"]
