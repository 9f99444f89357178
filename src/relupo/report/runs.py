"""Read a run directory back: configuration, summary, metric records and snapshots."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from relupo.errors import RelupoError
from relupo.snapshots import list_snapshots


@dataclass
class RunData:
    """Contents of one `relupo train` run directory."""

    directory: Path
    config: dict[str, Any]  # config.yaml, by section
    summary: dict[str, Any] | None  # summary.json; None while the run has not finished
    train_records: list[dict[str, Any]]  # metrics.jsonl records of training steps (they have "loss")
    eval_records: list[dict[str, Any]]  # metrics.jsonl records with "eval/accuracy"
    snapshots: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.directory.name

    @property
    def loss_type(self) -> str:
        return self.config.get("objective", {}).get("loss_type", "?")

    def series(self, key: str, records: str = "train") -> tuple[list[int], list[float]]:
        """Return (steps, values) of one metric, skipping records without it or with a NaN."""
        source = self.train_records if records == "train" else self.eval_records
        pairs = [(r["step"], r[key]) for r in source if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
        return [p[0] for p in pairs], [float(p[1]) for p in pairs]


def load_run(directory: str | Path) -> RunData:
    """Read a run directory; raise RelupoError when metrics.jsonl is missing."""
    directory = Path(directory)
    metrics_path = directory / "metrics.jsonl"
    if not metrics_path.exists():
        raise RelupoError(f"{directory}: no metrics.jsonl found; give the output_dir of a `relupo train` run.")
    lines = metrics_path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            # A run killed mid-write can leave a partial last line: skip it, keep the earlier ones.
            if number == len(lines):
                continue
            raise RelupoError(f"{metrics_path}, line {number}: invalid JSON; delete the line or rerun the training.") from None
    config_path = directory / "config.yaml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    summary_path = directory / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.exists() else None
    return RunData(
        directory=directory,
        config=config or {},
        summary=summary,
        train_records=[r for r in records if "loss" in r],
        eval_records=[r for r in records if "eval/accuracy" in r],
        snapshots=list_snapshots(directory),
    )
