"""Forward and backward of one micro-batch, spending backward computation only on pairs with gradient.

Under RePO (and repo++, dpo+repo, dpo+repo++, and slic without its NLL term) a pair whose margin
clears the threshold has a constant loss, so its gradient is exactly zero. Skipping has two forms:

    per pair   each pair runs forward with autograd on its own; a pair with zero gradient weight
               drops its graph, an active pair runs backward at once with loss / B. Costs one
               forward pass over all pairs plus a backward pass over the active ones.
    two pass   1. a forward pass without autograd over all B pairs: margins, losses, active pairs;
               2. forward and backward over the active pairs only, with loss = their sum / B.
               Costs one forward pass over all pairs plus forward and backward over the active.

Both count every pair in the batch mean, so the gradient equals that of the full batch up to
floating-point summation order. Per pair does less arithmetic. Two pass keeps batched matrix
products, which an accelerator needs to stay busy. On a CPU, one-pair forward and backward passes
are as fast per token as batched ones, or faster (no padding), so a CPU uses per pair and other
devices use two pass. docs/benchmarks.md has the measurements. `auto` always skips per pair, and
skips two pass while the recent active share is below `TWO_PASS_SKIP_BELOW`.

Every process takes part in every gradient all-reduce, as DDP and FSDP require. Per pair runs all
pairs but the last under `no_sync` and always runs backward on the last pair, multiplied by 0 when
it is inactive, so that one synchronizing backward pass happens on every process. Two pass lets a
process with no active pair run pass 2 on one pair with its loss multiplied by 0. The skip
decision of `auto` is taken on the active share of all processes together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import Tensor

from relupo.checkpoint import TrainerState
from relupo.config import TrainConfig
from relupo.data.batching import round_up
from relupo.logps import pair_logps
from relupo.objectives import ObjectiveOutput, PairLogps, compute_objective, resolve_hyperparameters, sft_loss
from relupo.packing import packed_pair_logps, supports_shared_prompt

logger = logging.getLogger(__name__)

# Objectives whose loss is constant on a pair with zero gradient weight, so that the pair has no
# gradient at all. slic qualifies only with nll_weight = 0: its NLL term has gradient on every pair.
SKIPPABLE_OBJECTIVES = ("repo", "repo++", "dpo+repo", "dpo+repo++", "slic")

# auto runs two pass while the estimated active share is below this value: its break-even is near
# 1 - (forward cost) / (forward + backward cost), about 0.67. auto always runs per pair, which on
# a CPU in float32 was faster than no skipping at every active share measured (0.44 to 0.79,
# docs/benchmarks.md).
TWO_PASS_SKIP_BELOW = 0.67

# Weight of the newest micro-batch in auto's running estimate of the active share.
AUTO_ESTIMATE_WEIGHT = 0.5

# Row widths (collated, selected and packed) are rounded up to a multiple of this under autocast
# on a CPU, because oneDNN keeps per-shape state for bf16 matrix products and resident memory grew
# with every new width.
# On a 50M model, 112 one-pair passes of random lengths grew it to 2,849 MiB, against 1,630 MiB
# with widths rounded to 32 and 1,600 MiB in float32 (bench/cpu_bf16_memory.py). Rounding costs
# at most 31 padding positions per row.
CPU_AUTOCAST_WIDTH_MULTIPLE = 32

# Largest difference in per-token mean log-prob, in nats, that shared-prompt packing may show
# against separate sequences before it is turned off. Half precision rounds differently in the
# two layouts; a broken mask shows differences of order 1.
PACKING_TOLERANCE = {"float32": 1e-4, "half": 5e-2}


@dataclass(frozen=True)
class MicroBatchResult:
    """The back-propagated loss, and the log-probs and objective outputs of every pair for metrics."""

    loss: Tensor | None  # the back-propagated loss, detached; None when skipping back-propagated nothing
    logps: PairLogps
    output: ObjectiveOutput
    sft_losses: Tensor | None
    skipped: bool  # True when the micro-batch ran a skipping path


def can_skip(loss_type: str, hyperparameters: dict[str, float], sft_weight: float) -> bool:
    """Tell whether pairs with zero gradient weight have exactly zero gradient under this objective."""
    if loss_type not in SKIPPABLE_OBJECTIVES or sft_weight:
        return False
    return loss_type != "slic" or hyperparameters.get("nll_weight", 0.0) == 0.0


def select_pairs(batch: dict[str, Tensor], indices: Tensor, width_multiple: int = 1) -> dict[str, Tensor]:
    """Return the sub-batch of the pairs at `indices`, its padding trimmed to its longest row.

    The trimmed width is rounded up to a multiple of `width_multiple`, and never exceeds the batch's.
    """
    pairs = batch["input_ids"].shape[0] // 2
    rows = torch.cat([indices, indices + pairs])
    longest = int(batch["attention_mask"][rows].sum(dim=1).max())
    width = min(round_up(longest, width_multiple), batch["input_ids"].shape[1])
    selected = {}
    for name, value in batch.items():
        if value.dim() == 2 and value.shape[0] == 2 * pairs:
            selected[name] = value[rows, :width]
        else:
            selected[name] = value[indices]
    return selected


def uses_per_pair(device_type: str) -> bool:
    """Tell whether skipping runs per pair (else two pass) on this device.

    Measured on a CPU (docs/benchmarks.md): per pair is the faster form in float32. Under bf16
    autocast on a 50M model the two forms are equally fast and per pair peaks lower in memory.
    On stories260K in bf16, per pair is slower than no skipping (15,887 against 19,181 tokens/s)
    because the cast operators of 8 one-pair passes dominate each step.
    """
    # NOTE: two pass on GPUs follows from its cost model: no GPU measurement has compared the two.
    return device_type == "cpu"


def row_width_multiple(device_type: str, mixed_precision: str) -> int:
    """Return the multiple that row widths are rounded up to on this device and mixed-precision mode."""
    return CPU_AUTOCAST_WIDTH_MULTIPLE if device_type == "cpu" and mixed_precision != "no" else 1


def detach(result: object) -> object:
    """Return a copy of a dataclass of tensors (PairLogps, ObjectiveOutput) cut from the autograd graph.

    A kept reference to an attached tensor keeps its whole graph, saved activations included.
    """
    values = {field.name: getattr(result, field.name) for field in dataclasses.fields(result)}
    return type(result)(**{name: None if value is None else value.detach() for name, value in values.items()})


def concatenate(parts: list) -> object:
    """Join dataclasses of (B_i,) tensors (PairLogps, ObjectiveOutput) into one of (sum B_i,) tensors."""
    joined = {}
    for field in dataclasses.fields(parts[0]):
        values = [getattr(part, field.name) for part in parts]
        joined[field.name] = None if values[0] is None else torch.cat(values)
    return type(parts[0])(**joined)


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
        self.per_pair = uses_per_pair(accelerator.device.type)
        self.width_multiple = row_width_multiple(accelerator.device.type, accelerator.mixed_precision)
        self.share_prompt = training.share_prompt
        self.packing_checked = False
        half = training.bf16 or training.fp16 or config.model.dtype != "float32"
        self.packing_tolerance = PACKING_TOLERANCE["half" if half else "float32"]

    def score(self, batch: dict[str, Tensor]) -> PairLogps:
        if self.share_prompt:
            return packed_pair_logps(self.model, batch, self.width_multiple)
        return pair_logps(self.model, batch)

    def _check_packing(self, batch: dict[str, Tensor]) -> None:
        self.packing_checked = True
        supported, reason = supports_shared_prompt(self.model, batch, self.packing_tolerance)
        if supported:
            logger.info("share_prompt: on (%s)", reason)
        else:
            logger.warning("share_prompt turned off: %s; chosen and rejected are scored as separate sequences", reason)
            self.share_prompt = False

    def run(self, batch: dict[str, Tensor], hyperparameters: dict[str, float]) -> MicroBatchResult:
        """Run forward and backward on a micro-batch, with autograd only where the gradient can be nonzero."""
        if self.share_prompt and not self.packing_checked:
            self._check_packing(batch)
        if not self._should_skip():
            return self._run_full(batch, hyperparameters)
        if self.per_pair:
            return self._run_per_pair(batch, hyperparameters)
        return self._run_two_pass(batch, hyperparameters)

    def _should_skip(self) -> bool:
        if self.skip_mode == "auto" and not self.per_pair:
            return self.trainer_state().active_fraction_estimate < TWO_PASS_SKIP_BELOW
        return self.skip_mode != "off"

    def _run_full(self, batch: dict[str, Tensor], hyperparameters: dict[str, float]) -> MicroBatchResult:
        logps = self.score(batch)
        output = compute_objective(self.objective_config, logps, **hyperparameters)
        loss = output.losses.mean()
        sft = sft_loss(logps) if self.sft_weight else None
        if sft is not None:
            loss = loss + self.sft_weight * sft.mean()
        self.accelerator.backward(loss)
        self._update_estimate(output.grad_weights)
        return MicroBatchResult(loss=loss.detach(), logps=logps, output=output, sft_losses=sft, skipped=False)

    def _run_per_pair(self, batch: dict[str, Tensor], hyperparameters: dict[str, float]) -> MicroBatchResult:
        pairs = batch["pair_index"].shape[0]
        distributed = self.accelerator.num_processes > 1
        logps_parts, output_parts, losses = [], [], []
        for index in range(pairs):
            last = index == pairs - 1
            # Only the last pair's backward pass all-reduces the gradients across processes.
            synchronize = last or not distributed
            context = contextlib.nullcontext() if synchronize else self.accelerator.no_sync(self.model)
            with context:
                logps, output, loss = self._one_pair(batch, index, hyperparameters, always_backward=last and distributed)
            logps_parts.append(logps)
            output_parts.append(output)
            if loss is not None:
                losses.append(loss)
        output = concatenate(output_parts)
        self._update_estimate(output.grad_weights)
        loss = torch.stack(losses).sum() if losses else None
        return MicroBatchResult(loss=loss, logps=concatenate(logps_parts), output=output, sft_losses=None, skipped=True)

    def _one_pair(
        self, batch: dict[str, Tensor], index: int, hyperparameters: dict[str, float], always_backward: bool
    ) -> tuple[PairLogps, ObjectiveOutput, Tensor | None]:
        """Run pair `index` forward, and backward if it is active; return its results detached.

        The pair's graph is freed when this returns, so an inactive pair's activations never
        outlive its own forward pass. `always_backward` runs backward on an inactive pair too,
        with the loss multiplied by 0.
        """
        pairs = batch["pair_index"].shape[0]
        logps = self.score(select_pairs(batch, torch.tensor([index], device=batch["input_ids"].device), self.width_multiple))
        output = compute_objective(self.objective_config, logps, **hyperparameters)
        active = bool(output.grad_weights[0] != 0)
        loss = None
        if active or always_backward:
            loss = output.losses.sum() / pairs * (1.0 if active else 0.0)
            self.accelerator.backward(loss)
            loss = loss.detach()
        return detach(logps), detach(output), loss

    def _run_two_pass(self, batch: dict[str, Tensor], hyperparameters: dict[str, float]) -> MicroBatchResult:
        with torch.no_grad():
            logps = self.score(batch)
            output = compute_objective(self.objective_config, logps, **hyperparameters)
        active = (output.grad_weights != 0).nonzero().flatten()
        pairs = output.losses.shape[0]

        loss = None
        if active.numel() > 0:
            subset_logps = self.score(select_pairs(batch, active, self.width_multiple))
            subset_output = compute_objective(self.objective_config, subset_logps, **hyperparameters)
            loss = subset_output.losses.sum() / pairs
        elif self.accelerator.num_processes > 1:
            # The other processes may run a backward pass, and DDP and FSDP need every process in it.
            subset_logps = self.score(select_pairs(batch, torch.zeros(1, dtype=torch.long, device=active.device), self.width_multiple))
            subset_output = compute_objective(self.objective_config, subset_logps, **hyperparameters)
            loss = subset_output.losses.sum() * 0.0
        if loss is not None:
            self.accelerator.backward(loss)
            loss = loss.detach()
        self._update_estimate(output.grad_weights)
        return MicroBatchResult(loss=loss, logps=logps, output=output, sft_losses=None, skipped=True)

    def _update_estimate(self, grad_weights: Tensor) -> None:
        # Only two pass under auto reads the estimate; the reduce is a collective on every micro-batch.
        if self.skip_mode != "auto" or self.per_pair:
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
