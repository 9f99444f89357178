"""Self-contained HTML reports: figures embedded as base64 PNG, no scripts or styles from a network.

The page's one inline script counts the images that finished loading and writes the counts to
`<body data-images-loaded=N data-images-total=M>`, so a headless browser can check the page.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import yaml

from relupo.report import figures
from relupo.report.runs import RunData, load_run
from relupo.report.tables import COMPARISON_HEADERS, comparison_rows

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; }
img { max-width: 100%; display: block; margin: 0.8em 0; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
details { margin: 0.5em 0; } .note { color: #555; font-size: 0.9em; }
"""

IMAGE_CHECK = """
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var loaded = images.filter(function (image) { return image.complete && image.naturalWidth > 0; });
  document.body.dataset.imagesLoaded = String(loaded.length);
  document.body.dataset.imagesTotal = String(images.length);
});
"""

FIGURE_NOTES = {
    "curves.png": "Loss and accuracy on the training batches of each step, held-out accuracy (eval/accuracy) at each "
    "evaluation, and the mean log-prob per token of the chosen and rejected responses.",
    "active_fraction.png": "Share of pairs whose gradient is nonzero, and the spread of the margin M across the pairs of each step.",
    "margin_distribution.png": "Margin M of a fixed training sample and of the held-out pairs at several steps. "
    "For RePO, pairs at or above gamma give no gradient.",
    "grad_weight.png": "How much gradient a pair gets as a function of its margin. RePO gives the same weight to every pair "
    "below gamma and none above; SimPO and DPO give every pair a weight that decays smoothly.",
    "schedules.png": "Learning rate and gamma at each step.",
}


def image_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def table_html(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, sections: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1>\n" + "\n".join(sections) + f"\n<script>{IMAGE_CHECK}</script></body></html>\n"
    )


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_format(v)}" for k, v in value.items())
    return str(value)


def summary_rows(run: RunData) -> list[list[str]]:
    summary = run.summary or {}
    before, after = summary.get("eval_before") or {}, summary.get("eval_after") or {}
    last = run.train_records[-1] if run.train_records else {}
    rows = [
        ["loss_type", run.loss_type],
        ["hyperparameters", _format(summary.get("hyperparameters", "-"))],
        ["model", summary.get("model", run.config.get("model", {}).get("model_name_or_path", "-"))],
        ["train pairs / eval pairs", f"{summary.get('train_pairs', '-')} / {summary.get('eval_pairs', '-')}"],
        ["steps", str(summary.get("steps", last.get("step", "-")))],
        ["train_runtime_seconds", _format(summary.get("train_runtime_seconds", "-"))],
        ["eval/accuracy before -> after", f"{_format(before.get('accuracy', '-'))} -> {_format(after.get('accuracy', '-'))}"],
        ["eval/margin before -> after", f"{_format(before.get('margin', '-'))} -> {_format(after.get('margin', '-'))}"],
        ["last active_fraction", _format(last.get("active_fraction", "-"))],
    ]
    if run.summary is None:
        rows.append(["status", "no summary.json: the run has not finished"])
    return rows


def run_section(run: RunData, heading: str | None = None) -> str:
    parts = [f"<h2>{html.escape(heading or run.name)}</h2>", f'<p class="note">{html.escape(str(run.directory))}</p>']
    parts.append(table_html(["quantity", "value"], summary_rows(run)))
    for name, figure in figures.run_figures(run).items():
        parts.append(f'<p class="note">{html.escape(FIGURE_NOTES.get(name, ""))}</p>')
        parts.append(image_tag(figures.figure_png(figure), f"{run.name} {name}"))
    config_text = yaml.safe_dump(run.config, sort_keys=False) if run.config else "(no config.yaml)"
    parts.append(f"<details><summary>configuration</summary><pre>{html.escape(config_text)}</pre></details>")
    return "\n".join(parts)


def runs_table(runs: list[RunData]) -> str:
    headers = ["run", "loss_type", "hyperparameters", "steps", "eval/accuracy before", "eval/accuracy after", "eval/margin after", "train_runtime_seconds"]
    rows = []
    for run in runs:
        summary = run.summary or {}
        before, after = summary.get("eval_before") or {}, summary.get("eval_after") or {}
        rows.append([run.name, run.loss_type, _format(summary.get("hyperparameters", "-")), summary.get("steps", "-"),
                     _format(before.get("accuracy", "-")), _format(after.get("accuracy", "-")),
                     _format(after.get("margin", "-")), _format(summary.get("train_runtime_seconds", "-"))])
    return table_html(headers, rows)


def write_run_report(run_dirs: list[str | Path], output: str | Path, title: str | None = None) -> Path:
    """Write one HTML report of one run, or of several with a comparison table and overlaid curves."""
    runs = [load_run(directory) for directory in run_dirs]
    sections = []
    if len(runs) > 1:
        sections.append("<h2>Comparison</h2>" + runs_table(runs))
        sections.append(image_tag(figures.figure_png(figures.overlaid_curves(runs)), "overlaid curves"))
    sections += [run_section(run) for run in runs]
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page(title or ("relupo run " + runs[0].name if len(runs) == 1 else "relupo runs"), sections), encoding="utf-8")
    return output


def write_comparison_report(comparison: dict[str, Any], output: str | Path) -> Path:
    """Write the report of `relupo compare`: the per-configuration table, overlaid curves, one run per configuration."""
    groups = comparison["groups"]
    runs_by_group = [[load_run(d) for d in group["run_dirs"]] for group in groups]
    flat = [run for runs in runs_by_group for run in runs]
    labels = [group["group"] for group, runs in zip(groups, runs_by_group) for _ in runs]
    colors = [figures.COLORS[i % len(figures.COLORS)] for i, runs in enumerate(runs_by_group) for _ in runs]

    sections = [
        "<h2>Comparison</h2>",
        '<p class="note">Accuracy and margin after training on the held-out pairs, shared by every run: mean ± sample '
        "standard deviation across seeds (min-max). Wall time is each run's whole process, loading included; peak RSS "
        "is the largest resident memory of one run's process.</p>",
        table_html(COMPARISON_HEADERS, comparison_rows(groups)),
        image_tag(figures.figure_png(figures.overlaid_curves(flat, labels, colors)), "overlaid curves of every run"),
    ]
    for group, runs in zip(groups, runs_by_group):
        sections.append(run_section(runs[0], f"{group['group']}: {runs[0].name} (first seed)"))
    base = comparison.get("base_config")
    if base:
        sections.append(f"<details><summary>base configuration</summary><pre>{html.escape(json.dumps(base, indent=2))}</pre></details>")
    output = Path(output)
    output.write_text(page("relupo compare", sections), encoding="utf-8")
    return output
