"""Plots and the self-contained HTML report of one run, several runs or a comparison."""

from relupo.report.html import write_comparison_report, write_run_report
from relupo.report.runs import RunData, load_run

__all__ = ["RunData", "load_run", "write_comparison_report", "write_run_report"]
