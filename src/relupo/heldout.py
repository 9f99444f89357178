"""Held-out preference accuracy of a saved model on a data file, overall and by group.

Used by `relupo eval`. Data is read, normalized and tokenized exactly as for training (same
options, same cache), and scored with `relupo.evaluate.evaluate_pairs`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from relupo.config import DataConfig, ModelConfig
from relupo.data import load_or_tokenize, read_pairs
from relupo.data.batching import LengthGroupedBatchSampler, PairCollator, pair_lengths
from relupo.data.formats import Columns
from relupo.errors import RelupoError

logger = logging.getLogger(__name__)

QUANTILES = (0.1, 0.5, 0.9)


def margin_statistics(margins: Tensor, summed_margins: Tensor) -> dict[str, float]:
    """Accuracy with length-normalized and with summed log-probs, and the margin's mean and percentiles."""
    p10, p50, p90 = torch.quantile(margins.double(), torch.tensor(QUANTILES, dtype=torch.float64)).tolist()
    return {
        "pairs": int(margins.numel()),
        "accuracy": (margins > 0).double().mean().item(),
        "summed_accuracy": (summed_margins > 0).double().mean().item(),
        "margin": margins.double().mean().item(),
        "margin/p10": p10,
        "margin/p50": p50,
        "margin/p90": p90,
    }


def read_data_files(data: DataConfig, paths: list[str]) -> list:
    """Read every file into pairs; with several files and no group_column, a pair's group is its file name."""
    columns = Columns(data.prompt_column, data.chosen_column, data.rejected_column, data.group_column)
    pairs = []
    for path in paths:
        file_pairs, _ = read_pairs(path, data.train_split, columns, data.data_format, data.skip_bad_rows)
        if len(paths) > 1 and data.group_column is None:
            file_pairs = [dataclasses.replace(pair, group=Path(path).name) for pair in file_pairs]
        pairs += file_pairs
    return pairs


def evaluate_data(model_config: ModelConfig, data: DataConfig, paths: list[str], batch_size: int) -> dict[str, Any]:
    """Score a model on the pairs of `paths`; return overall and per-group statistics."""
    from accelerate import Accelerator

    from relupo.evaluate import evaluate_pairs
    from relupo.modeling import load_model, load_tokenizer
    from relupo.train import IndexedPairs

    tokenizer = load_tokenizer(model_config)
    pairs = read_data_files(data, paths)
    tokenized = load_or_tokenize(pairs, tokenizer, data)
    logger.info("pairs tokenized%s: %s", " (from cache)" if tokenized.cache_hit else "", tokenized.report.summary())
    rows = tokenized.dataset
    if len(rows) == 0:
        raise RelupoError(f"{', '.join(paths)}: no usable pairs remain ({tokenized.report.summary()}).")

    accelerator = Accelerator()
    model = load_model(model_config)
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batches = LengthGroupedBatchSampler(pair_lengths(rows), batch_size, shuffle=False)
    loader = DataLoader(IndexedPairs(rows), batch_sampler=batches, collate_fn=PairCollator(pad_id if pad_id is not None else 0))
    model, loader = accelerator.prepare(model, loader)
    result = evaluate_pairs(model, loader, accelerator)

    report: dict[str, Any] = {
        "model": model_config.model_name_or_path,
        "data": paths,
        "tokenize": tokenized.report.summary(),
        "overall": margin_statistics(result.margins, result.summed_margins),
        "groups": {},
    }
    groups = [rows[index]["group"] for index in result.pair_index.tolist()]
    for name in sorted({g for g in groups if g is not None}):
        selected = torch.tensor([g == name for g in groups])
        report["groups"][name] = margin_statistics(result.margins[selected], result.summed_margins[selected])
    return report


def format_eval_table(report: dict[str, Any]) -> str:
    from relupo.report.tables import format_table

    headers = ["group", "pairs", "accuracy", "summed_accuracy", "margin", "margin/p10", "margin/p50", "margin/p90"]
    rows = []
    for name, stats in [("all", report["overall"]), *report["groups"].items()]:
        rows.append([name, str(stats["pairs"])] + [f"{stats[key]:.4f}" for key in headers[2:]])
    return format_table(headers, rows)
