"""Figures of one run or several, drawn with matplotlib's Agg backend (no display needed).

Every function returns a matplotlib Figure; `save_run_figures` writes a run's figures as PNG
files. Metric names in titles and labels are the ones in metrics.jsonl.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from relupo.objectives import OBJECTIVES, PairLogps, dpo, repo, simpo  # noqa: E402
from relupo.report.runs import RunData  # noqa: E402
from relupo.snapshots import read_snapshot  # noqa: E402

# Loss types whose margin is the length-normalized M, so their snapshots lie on the M axis.
M_MARGIN_LOSSES = ("repo", "repo++", "simpo")
MAX_HISTOGRAM_PANELS = 4
COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def figure_png(figure: Figure) -> bytes:
    """Render a figure to PNG bytes and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _gamma(run: RunData) -> float | None:
    """Return the run's gamma: the last logged value, else the configured one, else the loss type's default."""
    steps, values = run.series("gamma")
    if values:
        return values[-1]
    configured = run.config.get("objective", {}).get("gamma")
    if configured is not None:
        return float(configured)
    return OBJECTIVES[run.loss_type].defaults.get("gamma") if run.loss_type in OBJECTIVES else None


def training_curves(run: RunData) -> Figure:
    """Loss, training and held-out accuracy, and the chosen and rejected log-probs against the step."""
    figure, (loss_axis, accuracy_axis, logps_axis) = plt.subplots(1, 3, figsize=(15, 3.6))
    loss_axis.plot(*run.series("loss"), color=COLORS[0], label="loss")
    loss_axis.set(title="loss", xlabel="step", ylabel="loss")

    accuracy_axis.plot(*run.series("accuracy"), color=COLORS[0], alpha=0.6, label="accuracy (training batches)")
    eval_steps, eval_values = run.series("eval/accuracy", "eval")
    before = ((run.summary or {}).get("eval_before") or {}).get("accuracy")
    if before is not None:
        # The evaluation before training is in summary.json, not in metrics.jsonl.
        eval_steps, eval_values = [0, *eval_steps], [before, *eval_values]
    accuracy_axis.plot(eval_steps, eval_values, "o-", color=COLORS[1], label="eval/accuracy (held-out)")
    accuracy_axis.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    accuracy_axis.set(title="accuracy: share of pairs with M > 0", xlabel="step", ylabel="accuracy", ylim=(0, 1))
    accuracy_axis.legend(loc="lower right", fontsize=8)

    # Both falling together is likelihood displacement: the margin grows while both responses
    # lose probability, which often shows up as degenerate generations.
    logps_axis.plot(*run.series("logps/chosen"), color=COLORS[2], label="logps/chosen")
    logps_axis.plot(*run.series("logps/rejected"), color=COLORS[3], label="logps/rejected")
    logps_axis.set(title="mean log-prob per response token", xlabel="step", ylabel="nats per token")
    logps_axis.legend(loc="lower left", fontsize=8)
    figure.suptitle(f"{run.name}: training curves ({run.loss_type})", y=1.04)
    return figure


def active_fraction(run: RunData) -> Figure:
    """active_fraction against step, and the margin's 10th to 90th percentile band with gamma."""
    figure, (active_axis, margin_axis) = plt.subplots(1, 2, figsize=(11, 3.6))
    active_axis.plot(*run.series("active_fraction"), color=COLORS[2])
    active_axis.set(title="active_fraction: share of pairs that give gradient", xlabel="step", ylabel="active_fraction", ylim=(0, 1.02))

    steps, low = run.series("margin/p10")
    _, middle = run.series("margin/p50")
    _, high = run.series("margin/p90")
    if steps:
        margin_axis.fill_between(steps, low, high, color=COLORS[0], alpha=0.25, label="margin/p10 to margin/p90")
        margin_axis.plot(steps, middle, color=COLORS[0], label="margin/p50")
    else:
        margin_axis.plot(*run.series("margin"), color=COLORS[0], label="margin (mean)")
    gamma_steps, gammas = run.series("gamma")
    if gammas:
        margin_axis.plot(gamma_steps, gammas, color="black", linestyle="--", label="gamma")
    margin_axis.axhline(0, color="grey", linestyle=":", linewidth=1)
    margin_axis.set(title="margin M of training batches (nats per token)", xlabel="step", ylabel="M")
    margin_axis.legend(loc="upper left", fontsize=8)
    return figure


def margin_distribution(run: RunData) -> Figure | None:
    """Histograms of M at up to four snapshot steps, with gamma and the share of pairs at or above it."""
    if not run.snapshots:
        return None
    chosen = _spread_pick(run.snapshots, MAX_HISTOGRAM_PANELS)
    snapshots = [read_snapshot(path) for path in chosen]
    figure, axes = plt.subplots(1, len(snapshots), figsize=(3.4 * len(snapshots) + 1, 3.4), sharex=True, squeeze=False)
    all_margins = torch.cat([split["margins"] for s in snapshots for split in s.splits.values()])
    low, high = torch.quantile(all_margins, torch.tensor([0.005, 0.995])).tolist()
    bins = torch.linspace(low, high, 41).tolist()

    for axis, snapshot in zip(axes[0], snapshots):
        lines = []
        for color, split, label in ((COLORS[0], "train", "training sample"), (COLORS[1], "eval", "held-out")):
            if split not in snapshot.splits:
                continue
            margins = snapshot.splits[split]["margins"].clamp(low, high)
            axis.hist(margins.tolist(), bins=bins, density=True, color=color, alpha=0.45, label=f"{label} ({margins.numel()} pairs)")
            if snapshot.gamma is not None and snapshot.loss_type in M_MARGIN_LOSSES:
                share = (snapshot.splits[split]["margins"] >= snapshot.gamma).float().mean().item()
                lines.append(f"{label}: {share:.0%} at or above gamma")
            else:
                share = (snapshot.splits[split]["margins"] > 0).float().mean().item()
                lines.append(f"{label}: {share:.0%} with M > 0")
        if snapshot.gamma is not None and snapshot.loss_type in M_MARGIN_LOSSES:
            axis.axvline(snapshot.gamma, color="black", linestyle="--", label=f"gamma = {snapshot.gamma:g}")
        axis.axvline(0, color="grey", linestyle=":", linewidth=1)
        axis.text(0.02, 0.98, "\n".join(lines), transform=axis.transAxes, va="top", fontsize=7.5,
                  bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
        axis.set(title=f"step {snapshot.step}", xlabel="M (nats per token)")
    axes[0][0].set_ylabel("density")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, -0.1))
    figure.suptitle(f"{run.name}: distribution of the margin M over training", y=1.04)
    return figure


def _spread_pick(items: list, count: int) -> list:
    """Pick `count` items spread evenly from first to last."""
    if len(items) <= count:
        return list(items)
    positions = sorted({round(i * (len(items) - 1) / (count - 1)) for i in range(count)})
    return [items[p] for p in positions]


def gradient_weight_curves(gamma: float = 0.5, simpo_beta: float = 2.0, simpo_gamma: float = 0.5, dpo_beta: float = 0.1,
                           low: float = -3.0, high: float = 3.0, points: int = 601) -> dict[str, tuple[list[float], list[float]]]:
    """Return |dL/d(margin)| of RePO, SimPO and DPO over a margin grid, from the objective functions.

    Each objective is called on pairs of one-token responses with logp(rejected) = 0 and a zero
    reference, so its margin (M for RePO and SimPO, h for DPO) equals the grid value.
    """
    grid = torch.linspace(low, high, points, dtype=torch.float64)
    ones, zeros = torch.ones_like(grid), torch.zeros_like(grid)
    logps = PairLogps(grid, zeros, ones, ones, reference_chosen_logps=zeros, reference_rejected_logps=zeros)
    outputs = {
        f"RePO (gamma={gamma:g})": repo(logps, gamma=gamma),
        f"SimPO (beta={simpo_beta:g}, gamma={simpo_gamma:g})": simpo(logps, beta=simpo_beta, gamma=simpo_gamma),
        f"DPO (beta={dpo_beta:g}), margin h": dpo(logps, beta=dpo_beta, label_smoothing=0.0),
    }
    return {name: (output.margins.tolist(), (-output.grad_weights).tolist()) for name, output in outputs.items()}


def gradient_weight(run: RunData) -> Figure:
    """Plot the objective's gradient weight against the margin, over the RePO, SimPO and DPO curves."""
    hyperparameters = (run.summary or {}).get("hyperparameters") or {}
    gamma = _gamma(run) if run.loss_type in ("repo", "repo++") else 0.5
    simpo_beta = hyperparameters.get("beta", 2.0) if run.loss_type == "simpo" else 2.0
    simpo_gamma = hyperparameters.get("gamma", 0.5) if run.loss_type == "simpo" else 0.5
    dpo_beta = hyperparameters.get("beta", 0.1) if run.loss_type == "dpo" else 0.1
    curves = gradient_weight_curves(gamma or 0.5, simpo_beta, simpo_gamma, dpo_beta)

    figure, axis = plt.subplots(figsize=(8, 4))
    for color, (name, (margins, weights)) in zip(COLORS, curves.items()):
        axis.plot(margins, weights, color=color, linewidth=2, label=name)
    if run.snapshots and run.loss_type in M_MARGIN_LOSSES:
        snapshot = read_snapshot(run.snapshots[-1])
        train = snapshot.splits.get("train")
        if train is not None:
            axis.scatter(train["margins"].tolist(), (-train["grad_weights"]).tolist(), s=9, color="black", alpha=0.5, zorder=3,
                         label=f"{run.name}: training sample at step {snapshot.step}")
    axis.set(
        title="gradient weight -dL/d(margin): how hard each pair pushes",
        xlabel="margin (M in nats per token for RePO and SimPO; h in nats for DPO)",
        ylabel="-dL/d(margin)",
        xlim=(-3, 3),
    )
    axis.axvline(0, color="grey", linestyle=":", linewidth=1)
    axis.legend(fontsize=8, loc="upper right")
    return figure


def schedules(run: RunData) -> Figure:
    """learning_rate and gamma against step."""
    figure, (lr_axis, gamma_axis) = plt.subplots(1, 2, figsize=(11, 3.2))
    lr_axis.plot(*run.series("learning_rate"), color=COLORS[3])
    lr_axis.set(title="learning_rate", xlabel="step", ylabel="learning_rate")
    lr_axis.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    steps, gammas = run.series("gamma")
    if gammas:
        gamma_axis.plot(steps, gammas, color="black")
        gamma_axis.set(ylim=(min(0.0, min(gammas)), max(gammas) * 1.15 + 1e-9))
    else:
        gamma_axis.text(0.5, 0.5, f"loss_type {run.loss_type} has no gamma", ha="center", va="center", transform=gamma_axis.transAxes)
    gamma_axis.set(title="gamma", xlabel="step", ylabel="gamma (nats per token)")
    return figure


def run_figures(run: RunData) -> dict[str, Figure]:
    """Draw every figure of one run; return them keyed by file name."""
    figures = {
        "curves.png": training_curves(run),
        "active_fraction.png": active_fraction(run),
        "margin_distribution.png": margin_distribution(run),
        "grad_weight.png": gradient_weight(run),
        "schedules.png": schedules(run),
    }
    return {name: figure for name, figure in figures.items() if figure is not None}


def save_run_figures(run: RunData, directory: str | Path) -> list[Path]:
    """Write the run's figures as PNG files into `directory`; return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure in run_figures(run).items():
        path = directory / name
        path.write_bytes(figure_png(figure))
        paths.append(path)
    return paths


def overlaid_curves(runs: list[RunData], labels: list[str] | None = None, colors: list[str] | None = None) -> Figure:
    """loss, accuracy, eval/accuracy and active_fraction of several runs on shared axes."""
    labels = labels or [run.name for run in runs]
    colors = colors or [COLORS[i % len(COLORS)] for i in range(len(runs))]
    figure, axes = plt.subplots(2, 2, figsize=(12, 7))
    panels = (("loss", "train"), ("accuracy", "train"), ("eval/accuracy", "eval"), ("active_fraction", "train"))
    for axis, (key, records) in zip(axes.flat, panels):
        shown = set()
        for run, label, color in zip(runs, labels, colors):
            steps, values = run.series(key, records)
            style = "o-" if records == "eval" else "-"
            axis.plot(steps, _smooth(values) if records == "train" else values, style, color=color, alpha=0.8, markersize=3,
                      label=None if label in shown else label)
            shown.add(label)
        axis.set(title=key + (" (moving average of 5 steps)" if records == "train" else ""), xlabel="step", ylabel=key)
    axes[0][0].legend(fontsize=7)
    return figure


def _smooth(values: list[float], window: int = 5) -> list[float]:
    smoothed = []
    for index in range(len(values)):
        part = [v for v in values[max(0, index - window + 1) : index + 1] if not math.isnan(v)]
        smoothed.append(sum(part) / len(part) if part else math.nan)
    return smoothed
