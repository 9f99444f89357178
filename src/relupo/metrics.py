"""Per-pair statistics and their batch summaries, under the names used in logs, plots and docs.

margin           M, the length-normalized margin (nats per token), whatever the objective
margin/p10, /p50, /p90  10th, 50th and 90th percentiles of M over the pairs of the logging window
accuracy         share of pairs with M > 0
active_fraction  share of pairs whose gradient weight is nonzero; for RePO, the pairs with M < gamma
grad_weight      mean over pairs of the objective's dL/d(margin) (for RePO: -active_fraction)
logps/chosen     mean over pairs of the length-normalized chosen log-prob (nats per token)
logps/rejected   the same for rejected
sft_loss         mean NLL per token of the chosen response, when sft_weight > 0

`loss` is the objective's batch mean alone; the SFT term is reported apart as `sft_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from relupo.objectives import ObjectiveOutput, PairLogps


@dataclass(frozen=True)
class PairStats:
    """Detached per-pair values of one batch, each of shape (B,); gathered across processes."""

    margins: Tensor
    chosen_mean_logps: Tensor
    rejected_mean_logps: Tensor
    grad_weights: Tensor
    losses: Tensor
    tokens: Tensor  # tokens of prompt + chosen + prompt + rejected actually fed to the model
    sft_losses: Tensor | None = None  # mean NLL per token of chosen, when an SFT term is trained

    @staticmethod
    def from_batch(logps: PairLogps, output: ObjectiveOutput, tokens: Tensor, sft_losses: Tensor | None = None) -> PairStats:
        return PairStats(
            margins=logps.normalized_margins.detach().float(),
            chosen_mean_logps=logps.chosen_mean_logps.detach().float(),
            rejected_mean_logps=logps.rejected_mean_logps.detach().float(),
            grad_weights=output.grad_weights.detach().float(),
            losses=output.losses.detach().float(),
            tokens=tokens.float(),
            sft_losses=None if sft_losses is None else sft_losses.detach().float(),
        )

    @staticmethod
    def concat(parts: list[PairStats]) -> PairStats:
        columns = {}
        for name in PairStats.__dataclass_fields__:
            values = [getattr(p, name) for p in parts]
            columns[name] = None if values[0] is None else torch.cat(values)
        return PairStats(**columns)


def summarize(stats: PairStats) -> dict[str, float]:
    """Batch means of the per-pair values, keyed by their public metric names."""
    p10, p50, p90 = torch.quantile(stats.margins, torch.tensor([0.1, 0.5, 0.9])).tolist()
    summary = {
        "loss": stats.losses.mean().item(),
        "margin": stats.margins.mean().item(),
        "margin/p10": p10,
        "margin/p50": p50,
        "margin/p90": p90,
        "accuracy": (stats.margins > 0).float().mean().item(),
        "active_fraction": (stats.grad_weights != 0).float().mean().item(),
        "grad_weight": stats.grad_weights.mean().item(),
        "logps/chosen": stats.chosen_mean_logps.mean().item(),
        "logps/rejected": stats.rejected_mean_logps.mean().item(),
    }
    if stats.sft_losses is not None:
        summary["sft_loss"] = stats.sft_losses.mean().item()
    return summary
