"""Held-out preference accuracy and margins of a model on tokenized pairs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from relupo.logps import pair_logps


@dataclass(frozen=True)
class EvalResult:
    """Per-pair held-out values, in dataset order, and their summaries."""

    pair_index: Tensor  # (N,) row index into the evaluated dataset
    margins: Tensor  # (N,) length-normalized margin M, nats per token
    summed_margins: Tensor  # (N,) logp(chosen) - logp(rejected), summed over response tokens

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
def evaluate_pairs(model: torch.nn.Module, dataloader: DataLoader, accelerator) -> EvalResult:
    """Score every pair of a prepared dataloader; results are gathered across processes."""
    indices, margins, summed = [], [], []
    for batch in dataloader:
        with accelerator.autocast():
            logps = pair_logps(model, batch)
        gathered = accelerator.gather_for_metrics(
            (batch["pair_index"], logps.normalized_margins.float(), (logps.chosen_logps - logps.rejected_logps).float())
        )
        indices.append(gathered[0].cpu())
        margins.append(gathered[1].cpu())
        summed.append(gathered[2].cpu())
    order = torch.cat(indices).argsort()
    return EvalResult(
        pair_index=torch.cat(indices)[order],
        margins=torch.cat(margins)[order],
        summed_margins=torch.cat(summed)[order],
    )
