"""Held-out preference accuracy and margins of a model on tokenized pairs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from relupo.logps import pair_logps
from relupo.objectives import ObjectiveOutput, PairLogps


@dataclass(frozen=True)
class EvalResult:
    """Per-pair held-out values, in dataset order, and their summaries."""

    pair_index: Tensor  # (N,) row index into the evaluated dataset
    margins: Tensor  # (N,) length-normalized margin M, nats per token
    summed_margins: Tensor  # (N,) logp(chosen) - logp(rejected), summed over response tokens
    grad_weights: Tensor | None = None  # (N,) the objective's dL/d(margin), when evaluate_pairs got an objective

    @property
    def accuracy(self) -> float:
        """Share of pairs with M > 0."""
        return (self.margins > 0).float().mean().item()

    @property
    def summed_accuracy(self) -> float:
        """Share of pairs whose chosen response has the larger summed log-prob."""
        return (self.summed_margins > 0).float().mean().item()

    @property
    def mean_margin(self) -> float:
        return self.margins.mean().item()

    def as_metrics(self, prefix: str = "eval/") -> dict[str, float]:
        return {f"{prefix}accuracy": self.accuracy, f"{prefix}margin": self.mean_margin}


@torch.inference_mode()
def evaluate_pairs(
    model: torch.nn.Module,
    dataloader: DataLoader,
    accelerator,
    objective: Callable[[PairLogps], ObjectiveOutput] | None = None,
) -> EvalResult:
    """Score every pair of a prepared dataloader; results are gathered across processes.

    With `objective` (logps -> ObjectiveOutput), the result also contains each pair's gradient weight.
    """
    indices, margins, summed, weights = [], [], [], []
    for batch in dataloader:
        with accelerator.autocast():
            logps = pair_logps(model, batch)
        values = [batch["pair_index"], logps.normalized_margins.float(), (logps.chosen_logps - logps.rejected_logps).float()]
        if objective is not None:
            values.append(objective(logps).grad_weights.float())
        gathered = accelerator.gather_for_metrics(tuple(values))
        indices.append(gathered[0].cpu())
        margins.append(gathered[1].cpu())
        summed.append(gathered[2].cpu())
        if objective is not None:
            weights.append(gathered[3].cpu())
    order = torch.cat(indices).argsort()
    return EvalResult(
        pair_index=torch.cat(indices)[order],
        margins=torch.cat(margins)[order],
        summed_margins=torch.cat(summed)[order],
        grad_weights=torch.cat(weights)[order] if weights else None,
    )
