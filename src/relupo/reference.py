"""Reference-model log-probabilities, computed once before training and cached on disk.

Reference-based objectives (dpo, ipo, rdpo, dpo+repo, dpo+repo++) compare the policy with the
model it started from. Instead of holding a second model in memory for the whole run, relupo
scores every pair once with the initial model (with LoRA: the base model, adapter disabled)
and keeps the sums next to the tokenized data. The cache key covers the tokenized data, the
model's identity and the dtype settings, so a second run on the same inputs reuses the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from relupo.logps import pair_logps

logger = logging.getLogger(__name__)


def model_identity(model_name_or_path: str) -> dict[str, object]:
    """Describe the model files cheaply: names, sizes and modification times of a local directory.

    NOTE: a hub id is identified by its name only. A hub model updated in place under the same
    name would reuse stale reference log-probs, so pin a revision by downloading it to a directory.
    """
    path = Path(model_name_or_path)
    if not path.is_dir():
        return {"hub_id": model_name_or_path}
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin", ".json"))
    return {"dir": str(path.resolve()), "files": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]}


def reference_cache_path(cache_dir: Path, data_fingerprint: str, model_name_or_path: str, settings: dict) -> Path:
    key = json.dumps({"data": data_fingerprint, "model": model_identity(model_name_or_path), "settings": settings}, sort_keys=True)
    return cache_dir / "reference" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"


@torch.inference_mode()
def compute_reference_logps(model: torch.nn.Module, loader: DataLoader, accelerator, size: int) -> dict[str, torch.Tensor]:
    """Score every pair with the model as it is now (LoRA adapters disabled); tensors of shape (size,)."""
    chosen = torch.zeros(size, dtype=torch.float32)
    rejected = torch.zeros(size, dtype=torch.float32)
    unwrapped = accelerator.unwrap_model(model)
    disable = unwrapped.disable_adapter() if hasattr(unwrapped, "disable_adapter") else contextlib.nullcontext()
    with disable:
        for batch in loader:
            with accelerator.autocast():
                logps = pair_logps(model, batch)
            index, chosen_sums, rejected_sums = accelerator.gather_for_metrics(
                (batch["pair_index"], logps.chosen_logps.float(), logps.rejected_logps.float())
            )
            chosen[index.cpu()] = chosen_sums.cpu()
            rejected[index.cpu()] = rejected_sums.cpu()
    return {"reference_chosen_logps": chosen, "reference_rejected_logps": rejected}


def load_or_compute_reference_logps(
    path: Path, model: torch.nn.Module, loader: DataLoader, accelerator, size: int, split: str
) -> dict[str, torch.Tensor]:
    """Return cached reference log-probs from `path`, or compute and store them (main process writes)."""
    if path.exists():
        cached = load_file(path)
        if cached["reference_chosen_logps"].shape[0] == size:
            logger.info("%s reference log-probs reused from %s", split, path)
            return cached
    logger.info("computing %s reference log-probs for %d pairs", split, size)
    computed = compute_reference_logps(model, loader, accelerator, size)
    if accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".tmp-{os.getpid()}")
        save_file(computed, temporary)
        os.replace(temporary, path)
        logger.info("%s reference log-probs stored in %s", split, path)
    return computed
