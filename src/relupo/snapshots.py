"""Per-pair margin snapshots taken during training, for margin histograms and gradient-weight plots.

Every `snapshot_steps` optimizer steps, before the first step and after the last, the trainer
scores a fixed sample of training pairs and every held-out pair with the model as it is, and
writes to the run directory:

    snapshots/pair_ids.json        {"train": [pair ids of the training sample], "eval": [held-out pair ids]}
    snapshots/step-N.safetensors   for each split present (train, eval): `{split}/margins` (M, nats
                                   per token), `{split}/grad_weights` (the objective's dL/d(margin))
                                   and `{split}/active` (1 where the pair gives gradient), in the
                                   order of pair_ids.json; metadata: step, loss_type, gamma

Scoring runs on every process and is gathered; only the main process writes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from relupo.data.batching import LengthGroupedBatchSampler, pair_lengths
from relupo.evaluate import EvalResult, evaluate_pairs
from relupo.objectives import resolve_hyperparameters

SNAPSHOT_DIR = "snapshots"
# Training pairs per snapshot: enough for a histogram, few enough that a snapshot costs about
# an eighth of an epoch's forward passes on the bundled 1,962 training pairs.
TRAIN_SAMPLE_SIZE = 256


@dataclass(frozen=True)
class Snapshot:
    """One snapshot read back from disk. Each split maps margins, grad_weights and active to (N,) tensors."""

    step: int
    loss_type: str
    gamma: float | None
    splits: dict[str, dict[str, Tensor]]
    pair_ids: dict[str, list[str]]


class _SampledPairs(Dataset):
    """A fixed subset of an IndexedPairs dataset whose items carry their position in the subset."""

    def __init__(self, pairs: Any, indices: list[int]) -> None:
        self.pairs = pairs
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict[str, Any]:
        return {**self.pairs[self.indices[position]], "index": position}


def sample_indices(count: int, size: int, seed: int) -> list[int]:
    """Return a sorted sample of min(size, count) indices out of range(count), fixed by the seed."""
    return sorted(random.Random(seed).sample(range(count), min(size, count)))


class SnapshotRecorder:
    """Score the training sample and the held-out pairs at chosen steps and write snapshot files."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.every = trainer.config.training.snapshot_steps
        self.directory = trainer.output_dir / SNAPSHOT_DIR

        indices = sample_indices(len(trainer.train_pairs), TRAIN_SAMPLE_SIZE, trainer.config.training.seed)
        sample = _SampledPairs(trainer.train_pairs, indices)
        batches = LengthGroupedBatchSampler(
            pair_lengths(trainer.train_rows.select(indices)), trainer.config.training.per_device_eval_batch_size, shuffle=False
        )
        self.train_loader = trainer.accelerator.prepare(DataLoader(sample, batch_sampler=batches, collate_fn=trainer.collator))
        self.pair_ids = {"train": [trainer.train_rows[i]["pair_id"] for i in indices]}
        if trainer.eval_rows is not None:
            self.pair_ids["eval"] = list(trainer.eval_rows["pair_id"])

    def is_due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def record(self, step: int, eval_result: EvalResult | None = None) -> None:
        """Write snapshots/step-{step}.safetensors; reuse `eval_result` when it has gradient weights."""
        trainer = self.trainer
        splits = {"train": evaluate_pairs(trainer.model, self.train_loader, trainer.accelerator, trainer._current_objective)}
        if trainer.eval_loader is not None:
            if eval_result is None or eval_result.grad_weights is None:
                eval_result = evaluate_pairs(trainer.model, trainer.eval_loader, trainer.accelerator, trainer._current_objective)
            splits["eval"] = eval_result
        if not trainer.accelerator.is_main_process:
            return

        tensors: dict[str, Tensor] = {}
        for split, result in splits.items():
            tensors[f"{split}/margins"] = result.margins.contiguous()
            tensors[f"{split}/grad_weights"] = result.grad_weights.contiguous()
            tensors[f"{split}/active"] = (result.grad_weights != 0).to(torch.uint8)
        gamma = trainer._scheduled_hyperparameters().get("gamma", resolve_hyperparameters(trainer.config.objective).get("gamma"))
        metadata = {"step": str(step), "loss_type": trainer.config.objective.loss_type, "gamma": "" if gamma is None else repr(float(gamma))}

        self.directory.mkdir(parents=True, exist_ok=True)
        ids_path = self.directory / "pair_ids.json"
        if not ids_path.exists():
            ids_path.write_text(json.dumps(self.pair_ids) + "\n", encoding="utf-8")
        # Write then rename, so a killed run never leaves a half-written snapshot behind.
        path = self.directory / f"step-{step}.safetensors"
        partial = path.with_suffix(".partial")
        save_file(tensors, str(partial), metadata=metadata)
        partial.replace(path)


def list_snapshots(run_dir: str | Path) -> list[Path]:
    """Return the snapshot files of a run, ordered by step."""
    directory = Path(run_dir) / SNAPSHOT_DIR
    paths = [p for p in directory.glob("step-*.safetensors") if p.stem.split("-", 1)[1].isdigit()]
    return sorted(paths, key=lambda p: int(p.stem.split("-", 1)[1]))


def read_snapshot(path: str | Path) -> Snapshot:
    """Read one snapshot file and the pair ids next to it."""
    path = Path(path)
    splits: dict[str, dict[str, Tensor]] = {}
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        for key in handle.keys():
            split, name = key.split("/", 1)
            value = handle.get_tensor(key)
            splits.setdefault(split, {})[name] = value.bool() if name == "active" else value
    ids_path = path.parent / "pair_ids.json"
    pair_ids = json.loads(ids_path.read_text(encoding="utf-8")) if ids_path.exists() else {}
    gamma = metadata.get("gamma", "")
    return Snapshot(
        step=int(metadata.get("step", path.stem.split("-", 1)[1])),
        loss_type=metadata.get("loss_type", ""),
        gamma=float(gamma) if gamma else None,
        splits=splits,
        pair_ids=pair_ids,
    )
