"""Choose gamma: the starting model's margin distribution, and short probe trainings over a grid.

A RePO pair gives gradient while its margin M is below gamma. Before any training, the share of
training pairs with M < gamma is therefore the share that a candidate gamma would train on at the
first step: near 0 the model learns almost nothing, near 1 every pair pushes with equal weight
and RePO behaves like a hinge on all pairs. The probe trains briefly with each candidate (same
data, seed and steps, each in its own process through `relupo.compare`) and recommends the gamma
with the best held-out accuracy, breaking ties by the larger held-out margin.

NOTE: the recommended gamma is chosen on the same held-out pairs whose accuracy it reports, so
that accuracy is optimistic. Confirm it on other data before quoting it.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from relupo.config import TrainConfig
from relupo.errors import ConfigError, RelupoError

logger = logging.getLogger(__name__)

DEFAULT_GAMMAS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
M_MARGIN_LOSSES = ("repo", "repo++", "simpo")


def check_config(config: TrainConfig) -> None:
    if config.objective.loss_type not in M_MARGIN_LOSSES:
        raise ConfigError(
            f"loss_type is {config.objective.loss_type}; gamma calibration works on the length-normalized margin M "
            f"of {', '.join(M_MARGIN_LOSSES)}. Set loss_type to one of them."
        )
    if config.objective.gamma_schedule != "constant":
        raise ConfigError("gamma calibration chooses one constant gamma; remove gamma_schedule, gamma_start and gamma_end from the config.")


def starting_margins(config: TrainConfig, max_pairs: int) -> Tensor:
    """Return M of the starting model on up to max_pairs training pairs (a seeded sample)."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from relupo.data import load_or_tokenize, load_pairs
    from relupo.data.batching import LengthGroupedBatchSampler, PairCollator, pair_lengths
    from relupo.evaluate import evaluate_pairs
    from relupo.modeling import load_model, load_tokenizer
    from relupo.snapshots import sample_indices
    from relupo.train import IndexedPairs

    tokenizer = load_tokenizer(config.model)
    loaded = load_pairs(config.data, seed=config.training.seed)
    rows = load_or_tokenize(loaded.train, tokenizer, config.data).dataset
    if len(rows) == 0:
        raise RelupoError(f"{config.data.train_data}: no usable training pairs remain after tokenization.")
    rows = rows.select(sample_indices(len(rows), max_pairs, config.training.seed))

    accelerator = Accelerator()
    model = load_model(config.model).eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batches = LengthGroupedBatchSampler(pair_lengths(rows), config.training.per_device_eval_batch_size, shuffle=False)
    loader = DataLoader(IndexedPairs(rows), batch_sampler=batches, collate_fn=PairCollator(pad_id if pad_id is not None else 0))
    model, loader = accelerator.prepare(model, loader)
    return evaluate_pairs(model, loader, accelerator).margins


def active_shares(margins: Tensor, gammas: list[float]) -> list[dict[str, float]]:
    """For each gamma: the share of pairs with M < gamma and the mean RePO loss ReLU(gamma - M)."""
    return [
        {
            "gamma": gamma,
            "active_fraction": (margins < gamma).double().mean().item(),
            "loss": torch.relu(gamma - margins.double()).mean().item(),
        }
        for gamma in gammas
    ]


def recommend(probe_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the probe row with the best held-out accuracy; ties go to the larger held-out margin."""
    usable = [row for row in probe_rows if not math.isnan(row["eval_accuracy"])]
    if not usable:
        raise RelupoError("no probe run produced a held-out accuracy; set eval_split above 0 or give eval_data.")
    return max(usable, key=lambda row: (row["eval_accuracy"], row["eval_margin"]))


def probe(config: TrainConfig, gammas: list[float], steps: int, output_dir: Path) -> list[dict[str, Any]]:
    """Train `steps` optimizer steps with each gamma; return one row per gamma."""
    from relupo.compare import RunSpec, fix_eval_split, run_config, train_in_subprocess

    base = copy.deepcopy(config)
    base.training.max_steps = steps
    base.training.eval_steps = 0
    base.training.save_steps = 0
    base.training.snapshot_steps = 0
    base = fix_eval_split(base, output_dir)
    rows = []
    for gamma in gammas:
        loss_type = base.objective.loss_type
        spec = RunSpec(
            name=f"{loss_type.replace('+', 'p')}-gamma{gamma:g}-seed{base.training.seed}",
            group=f"{loss_type} gamma={gamma:g}", loss_type=loss_type, gamma=gamma, seed=base.training.seed,
        )
        result = train_in_subprocess(run_config(base, spec, output_dir), spec, output_dir)
        after = result["summary"].get("eval_after") or {}
        rows.append({
            "gamma": gamma,
            "eval_accuracy": after.get("accuracy", math.nan),
            "eval_margin": after.get("margin", math.nan),
            "eval_accuracy_before": (result["summary"].get("eval_before") or {}).get("accuracy", math.nan),
            "run_dir": result["run_dir"],
            "wall_seconds": result.get("process_wall_seconds"),
        })
    return rows


def format_active_table(rows: list[dict[str, float]]) -> str:
    from relupo.report.tables import format_table

    return format_table(
        ["gamma", "active_fraction at start (M < gamma)", "starting loss"],
        [[f"{r['gamma']:g}", f"{r['active_fraction']:.3f}", f"{r['loss']:.4f}"] for r in rows],
    )


def format_probe_table(rows: list[dict[str, Any]], best: dict[str, Any] | None) -> str:
    from relupo.report.tables import format_table

    return format_table(
        ["gamma", "eval/accuracy before", "eval/accuracy after", "eval/margin after", ""],
        [
            [f"{r['gamma']:g}", f"{r['eval_accuracy_before']:.4f}", f"{r['eval_accuracy']:.4f}", f"{r['eval_margin']:.4f}",
             "<- recommended" if best is not None and r is best else ""]
            for r in rows
        ],
    )


def write_gamma_report(margins: Tensor, shares: list[dict[str, float]], probe_rows: list[dict[str, Any]] | None,
                       best: dict[str, Any] | None, config: TrainConfig, output_dir: Path, probe_steps: int | None = None) -> Path:
    """Write gamma.json and report.html (margin histogram, active-share curve, probe table and curves)."""
    import html

    import matplotlib.pyplot as plt

    from relupo.report import figures
    from relupo.report.html import image_tag, page, table_html
    from relupo.report.runs import load_run

    output_dir.mkdir(parents=True, exist_ok=True)
    evidence = {
        "loss_type": config.objective.loss_type,
        "pairs": int(margins.numel()),
        "starting_margin": {"mean": margins.mean().item(), **{f"p{int(q * 100)}": v for q, v in zip((0.1, 0.5, 0.9), torch.quantile(margins, torch.tensor([0.1, 0.5, 0.9])).tolist())}},
        "active_shares": shares,
        "probe": probe_rows,
        "recommended_gamma": best["gamma"] if best else None,
    }
    (output_dir / "gamma.json").write_text(json.dumps(evidence, indent=2) + "\n", encoding="utf-8")

    figure, (histogram, curve) = plt.subplots(1, 2, figsize=(11, 3.6))
    histogram.hist(margins.clamp(*torch.quantile(margins, torch.tensor([0.005, 0.995])).tolist()).tolist(), bins=40, color=figures.COLORS[0], alpha=0.6)
    for row in shares:
        histogram.axvline(row["gamma"], color="black", linestyle=":", linewidth=1)
    if best is not None:
        histogram.axvline(best["gamma"], color=figures.COLORS[3], linewidth=2, label=f"recommended gamma = {best['gamma']:g}")
        histogram.legend(fontsize=8)
    histogram.set(title=f"starting M on {margins.numel()} training pairs (dotted: candidates)", xlabel="M (nats per token)", ylabel="pairs")
    grid = torch.linspace(min(0.0, margins.min().item()), max(1.5, max(r["gamma"] for r in shares)), 200)
    curve.plot(grid.tolist(), [(margins < g).float().mean().item() for g in grid], color=figures.COLORS[2])
    curve.scatter([r["gamma"] for r in shares], [r["active_fraction"] for r in shares], color="black", zorder=3)
    curve.set(title="share of pairs active at the first step", xlabel="gamma", ylabel="active_fraction", ylim=(0, 1.02))
    sections = [
        "<h2>Margin of the starting model</h2>",
        image_tag(figures.figure_png(figure), "starting margin distribution"),
        table_html(["gamma", "active_fraction at start", "starting loss"],
                   [[f"{r['gamma']:g}", f"{r['active_fraction']:.3f}", f"{r['loss']:.4f}"] for r in shares]),
    ]
    if probe_rows:
        sections.append(f"<h2>Probe: {html.escape(str(probe_steps))} optimizer steps per gamma</h2>")
        sections.append(table_html(["gamma", "eval/accuracy before", "eval/accuracy after", "eval/margin after", "run"],
                                   [[f"{r['gamma']:g}", f"{r['eval_accuracy_before']:.4f}", f"{r['eval_accuracy']:.4f}",
                                     f"{r['eval_margin']:.4f}", r["run_dir"]] for r in probe_rows]))
        if best is not None:
            sections.append(f"<p><b>Recommended gamma: {best['gamma']:g}</b> (best held-out accuracy, {best['eval_accuracy']:.4f}). "
                             "It was chosen on the same held-out pairs, so that accuracy is optimistic.</p>")
        runs = [load_run(r["run_dir"]) for r in probe_rows]
        sections.append(image_tag(figures.figure_png(figures.overlaid_curves(runs, [f"gamma={r['gamma']:g}" for r in probe_rows])), "probe curves"))
    path = output_dir / "report.html"
    path.write_text(page("relupo gamma calibration", sections), encoding="utf-8")
    return path
