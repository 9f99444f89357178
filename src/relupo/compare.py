"""Train several configurations on the same model, data and budget, and compare the results.

The grid is loss_types x gammas (for the loss types that have a gamma) x seeds. Every run gets
the same base options and the same held-out pairs. When the base configuration carves its eval
set out of train_data, the split is made once with the base seed and written to
`OUTPUT_DIR/data/{train,eval}.jsonl`, so seeds change the data order but not the held-out set.

Each run trains in its own Python process (`python -m relupo.compare CONFIG RESULT`), so its
peak resident memory (`resource.getrusage(RUSAGE_SELF).ru_maxrss` at exit) is its own and a
crash or memory blow-up ends only that run. A run whose result file already exists is not
trained again, so rerunning the same command after an interruption finishes the grid.

Layout of OUTPUT_DIR:
    configs/NAME.yaml       the resolved configuration of each run
    runs/NAME/              each run directory (metrics, snapshots, summary, model)
    logs/NAME.log           each run's console output
    results/NAME.json       each run's summary plus wall time and peak memory
    compare.json            the per-configuration table; report.html the report
"""

from __future__ import annotations

import copy
import json
import logging
import math
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relupo.config import TrainConfig, load_config
from relupo.errors import ConfigError, RelupoError
from relupo.objectives import GAMMA_SCHEDULE_FIELDS, HYPERPARAMETER_FIELDS, OBJECTIVES, resolve_hyperparameters

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid."""

    name: str  # e.g. "repo-gamma0.5-seed42"
    group: str  # runs that differ only in seed share it, e.g. "repo gamma=0.5"
    loss_type: str
    gamma: float | None  # None: the loss type's default gamma, or no gamma at all
    seed: int


def plan_runs(loss_types: list[str], gammas: list[float] | None, seeds: list[int]) -> list[RunSpec]:
    """Return the runs of the grid; gammas apply only to loss types that have a gamma."""
    runs = []
    for loss_type in loss_types:
        if loss_type not in OBJECTIVES:
            raise ConfigError(f"--loss-types names {loss_type!r}; accepted values: {', '.join(OBJECTIVES)}.")
        has_gamma = "gamma" in OBJECTIVES[loss_type].defaults
        for gamma in (gammas if gammas and has_gamma else [None]):
            group = loss_type if gamma is None else f"{loss_type} gamma={gamma:g}"
            for seed in seeds:
                name = loss_type.replace("+", "p") + ("" if gamma is None else f"-gamma{gamma:g}") + f"-seed{seed}"
                runs.append(RunSpec(name=name, group=group, loss_type=loss_type, gamma=gamma, seed=seed))
    return runs


def run_config(base: TrainConfig, spec: RunSpec, output_dir: Path) -> TrainConfig:
    """Return the base configuration with the run's loss type, gamma, seed and output_dir set.

    Hyperparameters and gamma-schedule options that the run's loss type does not use are reset, so
    one set of base options serves every loss type of the grid.
    """
    config = copy.deepcopy(base)
    objective = config.objective
    objective.loss_type = spec.loss_type
    used = OBJECTIVES[spec.loss_type].defaults
    for name in HYPERPARAMETER_FIELDS:
        if name not in used:
            setattr(objective, name, None)
    if "gamma" not in used:
        objective.gamma_schedule = "constant"
        for name in GAMMA_SCHEDULE_FIELDS:
            setattr(objective, name, None)
    if spec.gamma is not None:
        objective.gamma = spec.gamma
    config.training.seed = spec.seed
    config.training.output_dir = str(output_dir / "runs" / spec.name)
    config.validate()
    return config


def fix_eval_split(base: TrainConfig, output_dir: Path) -> TrainConfig:
    """Write the base seed's train/eval split to files and point the base configuration at them."""
    if base.data.eval_data is not None or base.data.eval_split == 0:
        return base
    from relupo.data import load_pairs

    loaded = load_pairs(base.data, seed=base.training.seed)
    directory = output_dir / "data"
    directory.mkdir(parents=True, exist_ok=True)
    for split, pairs in (("train", loaded.train), ("eval", loaded.eval)):
        with open(directory / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for pair in pairs:
                row = {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected, "source_id": pair.pair_id}
                if pair.group is not None:
                    row["group"] = pair.group
                handle.write(json.dumps(row) + "\n")
    base.data.train_data = str(directory / "train.jsonl")
    base.data.eval_data = str(directory / "eval.jsonl")
    base.data.data_format = "auto"
    base.data.prompt_column, base.data.chosen_column, base.data.rejected_column = "prompt", "chosen", "rejected"
    if base.data.group_column is not None:
        base.data.group_column = "group"
    logger.info("fixed held-out split for every run: %d train pairs, %d eval pairs in %s", len(loaded.train), len(loaded.eval), directory)
    return base


def train_in_subprocess(config: TrainConfig, spec: RunSpec, output_dir: Path) -> dict[str, Any]:
    """Train one run in a child process; return its result (summary, wall time, peak memory)."""
    result_path = output_dir / "results" / f"{spec.name}.json"
    if result_path.exists():
        logger.info("%s: result exists, not training again (%s)", spec.name, result_path)
        return json.loads(result_path.read_text(encoding="utf-8"))

    config_path = output_dir / "configs" / f"{spec.name}.yaml"
    log_path = output_dir / "logs" / f"{spec.name}.log"
    for path in (config_path, log_path, result_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    config.training.overwrite_output_dir = True
    config_path.write_text(config.to_yaml(), encoding="utf-8")

    logger.info("%s: training (log: %s)", spec.name, log_path)
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        completed = subprocess.run(
            [sys.executable, "-m", "relupo.compare", str(config_path), str(result_path)], stdout=log, stderr=subprocess.STDOUT
        )
    if completed.returncode != 0:
        raise RelupoError(f"{spec.name}: training failed with exit status {completed.returncode}; see {log_path}.")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    result["process_wall_seconds"] = round(time.perf_counter() - started, 2)
    result["run"] = {"name": spec.name, "group": spec.group, "loss_type": spec.loss_type, "seed": spec.seed, "gamma": spec.gamma}
    result_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    logger.info(
        "%s: held-out accuracy %.4f in %.0f s, peak RSS %.0f MiB",
        spec.name, (result["summary"].get("eval_after") or {}).get("accuracy", float("nan")),
        result["process_wall_seconds"], result["peak_rss_mib"],
    )
    return result


def summarize_groups(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Aggregate runs that differ only in seed: mean, sample standard deviation, min and max."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault(result["run"]["group"], []).append(result)
    rows = []
    for group, members in groups.items():
        loss_type = members[0]["run"]["loss_type"]
        accuracies = [(m["summary"].get("eval_after") or {}).get("accuracy", math.nan) for m in members]
        margins = [(m["summary"].get("eval_after") or {}).get("margin", math.nan) for m in members]
        objective = OBJECTIVES[loss_type]
        rows.append(
            {
                "group": group,
                "loss_type": loss_type,
                "hyperparameters": members[0]["summary"]["hyperparameters"],
                "hyperparameter_count": len(objective.defaults),
                "reference_model": objective.needs_reference,
                "seeds": [m["run"]["seed"] for m in members],
                "eval_accuracy_before": (members[0]["summary"].get("eval_before") or {}).get("accuracy"),
                "eval_accuracy": _spread(accuracies),
                "eval_margin": _spread(margins),
                "train_seconds": _spread([m["summary"]["train_runtime_seconds"] for m in members]),
                "wall_seconds": _spread([m["process_wall_seconds"] for m in members]),
                "peak_rss_mib": max(m["peak_rss_mib"] for m in members),
                "peak_gpu_mib": max((m.get("peak_gpu_mib") or 0) for m in members) or None,
                "run_dirs": [m["run_dir"] for m in members],
            }
        )
    return rows


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def compare(
    base: TrainConfig, loss_types: list[str], gammas: list[float] | None, seeds: list[int], output_dir: Path
) -> dict[str, Any]:
    """Train the grid, write compare.json and report.html into output_dir, return the comparison."""
    output_dir.mkdir(parents=True, exist_ok=True)
    runs = plan_runs(loss_types, gammas, seeds)
    base = fix_eval_split(base, output_dir)
    configs = [run_config(base, spec, output_dir) for spec in runs]  # validates every run before training any
    logger.info("compare: %d runs (%s) into %s", len(runs), ", ".join(spec.name for spec in runs), output_dir)

    results = [train_in_subprocess(config, spec, output_dir) for spec, config in zip(runs, configs)]
    comparison = {"runs": [r["run"] for r in results], "groups": summarize_groups(results), "base_config": base.to_dict()}
    (output_dir / "compare.json").write_text(json.dumps(comparison, indent=2) + "\n", encoding="utf-8")

    from relupo.report import write_comparison_report

    report = write_comparison_report(comparison, output_dir / "report.html")
    logger.info("comparison written to %s and %s", output_dir / "compare.json", report)
    return comparison


def _worker_main(config_path: str, result_path: str) -> int:
    """Child process: train one configuration and write its summary, wall time and peak memory."""
    from relupo.train import train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    config = load_config(config_path)
    started = time.perf_counter()
    summary = train(config)
    result: dict[str, Any] = {
        "summary": summary,
        "run_dir": config.training.output_dir,
        "wall_seconds": round(time.perf_counter() - started, 2),
        # ru_maxrss is in KiB on Linux and in bytes on macOS.
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024),
    }
    import torch

    if torch.cuda.is_available():
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    Path(result_path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(*sys.argv[1:]))
