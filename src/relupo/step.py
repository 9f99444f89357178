"""Forward and backward of one micro-batch, spending backward computation only on pairs with gradient.

Under RePO (and repo++, dpo+repo, dpo+repo++, and slic without its NLL term) a pair whose margin
clears the threshold has a constant loss, so its gradient is exactly zero. Skipping runs the
micro-batch in two passes:

    1. a forward pass without autograd over all B pairs: margins, losses, metrics, active pairs;
    2. forward and backward over the active pairs only, with loss = sum of their losses / B.

The batch mean still counts every pair, so the gradient equals that of the full batch up to
floating-point summation order. Pass 1 costs about one forward pass. A backward pass costs about
two, so skipping pays when fewer than roughly two thirds of the pairs are active. `auto`
runs pass 1 only while the recent active share is below `AUTO_SKIP_BELOW`, measured in
docs/benchmarks.md.

Every process takes part in every forward and backward pass, as DDP's gradient all-reduce and
FSDP's parameter gathering require: a process with no active pair runs pass 2 on one pair with
its loss multiplied by 0, and the skip decision of `auto` is taken on the active share of all
processes together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import Tensor

from relupo.checkpoint import TrainerState
from relupo.config import TrainConfig
from relupo.logps import pair_logps
from relupo.objectives import ObjectiveOutput, PairLogps, compute_objective, resolve_hyperparameters, sft_loss
from relupo.packing import packed_pair_logps, supports_shared_prompt

logger = logging.getLogger(__name__)

# Objectives whose loss is constant on a pair with zero gradient weight, so that the pair has no
# gradient at all. slic qualifies only with nll_weight = 0: its NLL term has gradient on every pair.
SKIPPABLE_OBJECTIVES = ("repo", "repo++", "dpo+repo", "dpo+repo++", "slic")

# auto runs the gradient-free first pass while the estimated active share is below this value.
# Break-even is 1 - (first pass cost) / (forward + backward cost), about 0.67 when a backward
# costs two forward passes. The value sits below it because the extra passes add overhead.
AUTO_SKIP_BELOW = 0.5

# Weight of the newest micro-batch in auto's running estimate of the active share.
AUTO_ESTIMATE_WEIGHT = 0.5

# Largest difference in per-token mean log-prob, in nats, that shared-prompt packing may show
# against separate sequences before it is turned off. Half precision rounds differently in the
# two layouts; a broken mask shows differences of order 1.
PACKING_TOLERANCE = {"float32": 1e-4, "half": 5e-2}


@dataclass(frozen=True)
class MicroBatchResult:
    """The loss to back-propagate, and the log-probs and objective outputs of every pair for metrics."""

    loss: Tensor | None  # None when skipping found nothing to back-propagate on a single process
    logps: PairLogps
    output: ObjectiveOutput
    sft_losses: Tensor | None
    skipped: bool  # True when the micro-batch ran the two-pass skipping path


def can_skip(loss_type: str, hyperparameters: dict[str, float], sft_weight: float) -> bool:
    """Tell whether pairs with zero gradient weight have exactly zero gradient under this objective."""
    if loss_type not in SKIPPABLE_OBJECTIVES or sft_weight:
        return False
    return loss_type != "slic" or hyperparameters.get("nll_weight", 0.0) == 0.0


def select_pairs(batch: dict[str, Tensor], indices: Tensor) -> dict[str, Tensor]:
    """Return the sub-batch of the pairs at `indices`, its padding trimmed to its longest row."""
    pairs = batch["input_ids"].shape[0] // 2
    rows = torch.cat([indices, indices + pairs])
    width = int(batch["attention_mask"][rows].sum(dim=1).max())
    selected = {}
    for name, value in batch.items():
        if value.dim() == 2 and value.shape[0] == 2 * pairs:
            selected[name] = value[rows, :width]
        else:
            selected[name] = value[indices]
    return selected


class PairStep:
    """Run forward and backward for one micro-batch as configured: skipping and shared-prompt packing."""

    def __init__(self, accelerator: Accelerator, model: torch.nn.Module, config: TrainConfig, trainer_state: Callable[[], TrainerState]) -> None:
        self.accelerator = accelerator
        self.model = model
        self.objective_config = config.objective
        # The trainer's state holds auto's active-share estimate, so that a checkpoint saves it and
        # a resumed run takes the same skip decisions. It is fetched on use: resume replaces it.
        self.trainer_state = trainer_state
        training = config.training
        self.sft_weight = config.objective.sft_weight or 0.0

        eligible = can_skip(config.objective.loss_type, resolve_hyperparameters(config.objective), self.sft_weight)
        self.skip_mode = training.skip_inactive_pairs if eligible else "off"
        if self.skip_mode != "off" and accelerator.distributed_type == DistributedType.DEEPSPEED:
            # NOTE: DeepSpeed's engine counts its own micro-steps inside backward(); the extra
            # forward passes of skipping have not been checked against it, so it is turned off.
            logger.warning("skip_inactive_pairs is turned off under DeepSpeed")
            self.skip_mode = "off"
        self.share_prompt = training.share_prompt
        self.packing_checked = False
        half = training.bf16 or training.fp16 or config.model.dtype != "float32"
        self.packing_tolerance = PACKING_TOLERANCE["half" if half else "float32"]

    def score(self, batch: dict[str, Tensor]) -> PairLogps:
        if self.share_prompt and not self.packing_checked:
            self._check_packing(batch)
        return packed_pair_logps(self.model, batch) if self.share_prompt else pair_logps(self.model, batch)

    def _check_packing(self, batch: dict[str, Tensor]) -> None:
        self.packing_checked = True
        supported, reason = supports_shared_prompt(self.model, batch, self.packing_tolerance)
        if supported:
            logger.info("share_prompt: on (%s)", reason)
        else:
            logger.warning("share_prompt turned off: %s; chosen and rejected are scored as separate sequences", reason)
            self.share_prompt = False

    def forward(self, batch: dict[str, Tensor], hyperparameters: dict[str, float]) -> MicroBatchResult:
        """Compute the micro-batch's loss, with autograd only where the gradient can be nonzero."""
        if self._should_skip():
            return self._run_skipping(batch, hyperparameters)
        return self._run_full(batch, hyperparameters)

    def _should_skip(self) -> bool:
        if self.skip_mode == "auto":
            return self.trainer_state().active_fraction_estimate < AUTO_SKIP_BELOW
        return self.skip_mode == "on"

    def _run_full(self, batch: dict[str, Tensor], hyperparameters: dict[str, float]) -> MicroBatchResult:
        logps = self.score(batch)
        output = compute_objective(self.objective_config, logps, **hyperparameters)
        loss = output.losses.mean()
        sft = sft_loss(logps) if self.sft_weight else None
        if sft is not None:
            loss = loss + self.sft_weight * sft.mean()
        self._update_estimate(output.grad_weights)
        return MicroBatchResult(loss=loss, logps=logps, output=output, sft_losses=sft, skipped=False)

    def _run_skipping(self, batch: dict[str, Tensor], hyperparameters: dict[str, float]) -> MicroBatchResult:
        with torch.no_grad():
            logps = self.score(batch)
            output = compute_objective(self.objective_config, logps, **hyperparameters)
        active = (output.grad_weights != 0).nonzero().flatten()
        pairs = output.losses.shape[0]

        loss = None
        if active.numel() > 0:
            subset_logps = self.score(select_pairs(batch, active))
            subset_output = compute_objective(self.objective_config, subset_logps, **hyperparameters)
            loss = subset_output.losses.sum() / pairs
        elif self.accelerator.num_processes > 1:
            # The other processes may run a backward pass, and DDP and FSDP need every process in it.
            subset_logps = self.score(select_pairs(batch, torch.zeros(1, dtype=torch.long, device=active.device)))
            subset_output = compute_objective(self.objective_config, subset_logps, **hyperparameters)
            loss = subset_output.losses.sum() * 0.0
        self._update_estimate(output.grad_weights)
        return MicroBatchResult(loss=loss, logps=logps, output=output, sft_losses=None, skipped=True)

    def _update_estimate(self, grad_weights: Tensor) -> None:
        if self.skip_mode != "auto":
            return
        counts = torch.stack([(grad_weights != 0).sum(), torch.tensor(grad_weights.shape[0], device=grad_weights.device)]).float()
        counts = self.accelerator.reduce(counts, reduction="sum") if self.accelerator.num_processes > 1 else counts
        share = (counts[0] / counts[1]).item()
        state = self.trainer_state()
        state.active_fraction_estimate = AUTO_ESTIMATE_WEIGHT * share + (1 - AUTO_ESTIMATE_WEIGHT) * state.active_fraction_estimate

    def fill_missing_gradients(self) -> None:
        """Give every trainable parameter a zero gradient where skipping ran no backward pass.

        AdamW skips a parameter whose gradient is None but moves one whose gradient is zero
        (momentum, weight decay), so a step in which every pair was inactive must see zeros to
        match the update without skipping.
        """
        if self.skip_mode == "off":
            return
        for parameter in self.model.parameters():
            if parameter.requires_grad and parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
