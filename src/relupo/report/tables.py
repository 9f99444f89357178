"""Plain-text and Markdown tables for the console and the docs."""

from __future__ import annotations

from typing import Any


def format_table(headers: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    """Align columns; with `markdown`, write a GitHub Markdown table instead."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def spread_text(spread: dict[str, float], digits: int = 3) -> str:
    """'0.612 ± 0.010 (0.601-0.623)': mean, sample standard deviation across seeds, min-max."""
    if len(spread.get("values", [])) < 2:
        return f"{spread['mean']:.{digits}f}"
    return f"{spread['mean']:.{digits}f} ± {spread['std']:.{digits}f} ({spread['min']:.{digits}f}-{spread['max']:.{digits}f})"


COMPARISON_HEADERS = [
    "configuration", "seeds", "hyperparameters", "reference model", "eval accuracy before",
    "eval accuracy after", "eval margin after", "wall time (s)", "peak RSS (MiB)",
]


def comparison_rows(groups: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for group in groups:
        names = ", ".join(f"{k}={v:g}" for k, v in group["hyperparameters"].items())
        before = group["eval_accuracy_before"]
        rows.append([
            group["group"],
            str(len(group["seeds"])),
            f"{group['hyperparameter_count']} ({names})",
            "yes" if group["reference_model"] else "no",
            "-" if before is None else f"{before:.3f}",
            spread_text(group["eval_accuracy"]),
            spread_text(group["eval_margin"]),
            spread_text(group["wall_seconds"], 0),
            f"{group['peak_rss_mib']:.0f}",
        ])
    return rows


def format_comparison_table(groups: list[dict[str, Any]], markdown: bool = False) -> str:
    return format_table(COMPARISON_HEADERS, comparison_rows(groups), markdown)
