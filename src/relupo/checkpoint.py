"""Checkpoints that are complete or absent, and resume that continues exactly.

Layout of `<output_dir>/checkpoints/step-<N>/`:
    trainable.safetensors   every trainable parameter (all weights, or only LoRA adapters)
    optimizer.pt            optimizer state_dict: tensors and plain values only
    scheduler.pt            learning-rate scheduler state_dict
    rng.safetensors         torch CPU (and CUDA) generator states
    state.json              step, epoch, batches done in the epoch, Python and NumPy RNG states

A checkpoint is written into `.tmp-step-<N>` and renamed into place, so any `step-<N>` directory
is complete. Files are read with safetensors or `torch.load(weights_only=True)`, which never
runs code stored in a file.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from relupo.errors import RelupoError

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)$")
# Prefixes of directories that a killed process can leave in checkpoints/: a checkpoint being
# written, and an old checkpoint being deleted. Neither is ever read.
INCOMPLETE_PREFIXES = (".tmp-step-", ".deleting-step-")


@dataclass
class TrainerState:
    """Training progress: enough to rebuild the data order and continue."""

    global_step: int = 0  # optimizer steps done
    epoch: int = 0  # epoch in progress
    batches_in_epoch: int = 0  # micro-batches of that epoch already consumed
    pairs_seen: int = 0
    active_fraction_estimate: float = 1.0  # running active share that skip_inactive_pairs auto decides on


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = state
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    plain = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), position, has_gauss, cached],
    }
    return tensors, plain


def _set_rng_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    for name, state in tensors.items():
        if name.startswith("torch_cuda_") and torch.cuda.is_available():
            torch.cuda.set_rng_state(state, int(name.rsplit("_", 1)[1]))
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached))


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    output_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainerState,
    keep: int,
) -> Path:
    """Write checkpoint step-<global_step> atomically, then delete all but the newest `keep`."""
    root = output_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.global_step}"
    temporary = root / f".tmp-step-{state.global_step}"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        temporary.mkdir()
        save_file(trainable_state(model), temporary / "trainable.safetensors")
        torch.save(optimizer.state_dict(), temporary / "optimizer.pt")
        torch.save(scheduler.state_dict(), temporary / "scheduler.pt")
        rng_tensors, rng_plain = _rng_state()
        save_file(rng_tensors, temporary / "rng.safetensors")
        (temporary / "state.json").write_text(json.dumps({"trainer": asdict(state), "rng": rng_plain}))
        _fsync_tree(temporary)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        complete = list_checkpoints(output_dir)
        newest = f"{complete[-1]} is the newest complete checkpoint" if complete else "no complete checkpoint exists yet"
        raise RelupoError(
            f"{final}: failed to write the checkpoint ({error.strerror or error}); the partial copy was removed and "
            f"{newest}. Free disk space or fix the permissions of output_dir, then continue with --resume true."
        ) from None

    shutil.rmtree(final, ignore_errors=True)
    os.replace(temporary, final)
    _fsync_directory(root)
    for old in list_checkpoints(output_dir)[:-keep]:
        # Rename first, so a kill during the deletion never leaves a partial step-N that looks complete.
        doomed = root / f".deleting-{old.name}"
        os.replace(old, doomed)
        shutil.rmtree(doomed)
    return final


def remove_incomplete_checkpoints(output_dir: Path) -> list[Path]:
    """Delete the partial directories a killed run left in checkpoints/; return their paths."""
    root = output_dir / "checkpoints"
    if not root.is_dir():
        return []
    leftovers = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(INCOMPLETE_PREFIXES))
    for path in leftovers:
        shutil.rmtree(path)
    return leftovers


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = output_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> TrainerState:
    """Restore weights, optimizer, scheduler and RNG states from `path`; return the trainer state."""
    try:
        weights = load_file(path / "trainable.safetensors")
        optimizer_state = _load_state_dict(path / "optimizer.pt")
        scheduler_state = _load_state_dict(path / "scheduler.pt")
        rng_tensors = load_file(path / "rng.safetensors")
        saved = json.loads((path / "state.json").read_text())
    except pickle.UnpicklingError as error:
        raise RelupoError(
            f"{error.args[0]}: the file contains Python objects other than tensors and plain values, and loading "
            f"them would let the file run code; relupo loads checkpoints with torch.load(weights_only=True), "
            f"which rejects them. Delete this checkpoint and resume from an older one, or start a new run."
        ) from None
    except FileNotFoundError as error:
        raise RelupoError(f"{path}: checkpoint is incomplete ({Path(error.filename).name} is missing); delete it to resume from an older one.") from None
    except Exception as error:  # noqa: BLE001 - any unreadable file means the checkpoint cannot be trusted
        raise RelupoError(f"{path}: checkpoint cannot be read safely ({type(error).__name__}: {error}); delete it to resume from an older one.") from None

    parameters = dict(model.named_parameters())
    expected = {name for name, p in parameters.items() if p.requires_grad}
    if set(weights) != expected:
        raise RelupoError(
            f"{path}: checkpoint weights do not match the model's trainable parameters "
            f"({len(weights)} saved, {len(expected)} expected); resume with the same model and LoRA settings."
        )
    with torch.no_grad():
        for name, tensor in weights.items():
            parameters[name].copy_(tensor)
    optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(scheduler_state)
    _set_rng_state(rng_tensors, saved["rng"])
    return TrainerState(**saved["trainer"])


def _load_state_dict(file: Path) -> Any:
    """Load a state_dict of tensors and plain values; raise UnpicklingError naming `file` for anything else."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise pickle.UnpicklingError(str(file)) from None


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
