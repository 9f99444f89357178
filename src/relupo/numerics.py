"""Guards against training on NaN or infinite values, and the mixed-precision check at start.

fp16 runs scale the loss with accelerate's GradScaler. A gradient overflow with a finite loss is
left to the scaler, which skips that optimizer step and lowers the scale. Such an overflow does
not count as a non-finite step here, but a non-finite loss is a fault under every precision.

An optimizer step is skipped when the loss or the log-probs of any pair in it, or the gradient
norm, is NaN or infinite. A skipped step zeroes the gradients and steps neither the optimizer nor
the learning-rate scheduler, so the weights and the optimizer state stay exactly as they were. The
step counter still advances and the step's micro-batches count as consumed: the data order, the
gamma schedule and resume stay the same as in a run without the fault, and the learning-rate
schedule falls one step behind the step counter for every skipped step.

After `max_nonfinite_steps` skipped steps in a row, training stops with a RelupoError and writes
no checkpoint on the way out. A checkpoint written during the skipped steps holds the weights from
before the fault, because a skipped step changes nothing.

Under several processes every process takes the same decision: the flags are reduced across
processes before the step, because a process that stepped alone would leave the replicas apart.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from relupo.config import TrainingConfig
from relupo.errors import ConfigError, RelupoError
from relupo.objectives import ObjectiveOutput, PairLogps

logger = logging.getLogger(__name__)

# Pair ids named in one warning; the rest are counted.
MAX_NAMED_PAIRS = 8


class NonFiniteGuard:
    """Track non-finite values over the micro-batches of one optimizer step and decide whether to step."""

    def __init__(self, accelerator: Accelerator, max_nonfinite_steps: int) -> None:
        self.accelerator = accelerator
        self.max_nonfinite_steps = max_nonfinite_steps
        self.consecutive_skips = 0
        self.skipped_steps = 0
        self._bad_pairs: list[str] = []  # pair ids with a non-finite loss or log-prob in this step

    def check_micro_batch(
        self, logps: PairLogps, output: ObjectiveOutput, loss: torch.Tensor | None, pair_ids: Callable[[list[int]], list[str]]
    ) -> bool:
        """Record the pairs of a micro-batch whose loss or log-probs are not finite; return True when all are finite.

        `pair_ids` maps positions in the micro-batch to pair ids; it is called only when a value is not finite.
        """
        values = torch.stack([output.losses.detach(), logps.chosen_logps.detach(), logps.rejected_logps.detach()])
        finite = torch.isfinite(values.float()).all(dim=0)
        positions = (~finite).nonzero().flatten().tolist()
        if not positions and loss is not None and not bool(torch.isfinite(loss.detach()).all()):
            positions = list(range(finite.shape[0]))  # a term outside the per-pair losses (the SFT term) is not finite
        if positions:
            self._bad_pairs.extend(pair_ids(positions))
        return not positions

    def allow_step(self, step: int, grad_norm: float) -> bool:
        """Decide whether optimizer step `step` (1-based) may run; warn, count and stop on faults.

        Raises RelupoError when this is the `max_nonfinite_steps`-th skipped step in a row.
        """
        bad_pairs, self._bad_pairs = self._bad_pairs, []
        flags = torch.tensor([float(bool(bad_pairs)), float(not math.isfinite(grad_norm))], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            flags = self.accelerator.reduce(flags, reduction="sum")
        bad_values, bad_gradient = (bool(flag > 0) for flag in flags.tolist())
        if not (bad_values or bad_gradient):
            self.consecutive_skips = 0
            return True
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and not bad_values:
            # An fp16 gradient overflow with a finite loss: the loss scaler skips this optimizer step
            # and lowers the scale, which is its normal way of finding the largest safe scale.
            logger.info("step %d: fp16 gradient overflow; the loss scaler skips the step and lowers its scale", step)
            return True

        self.consecutive_skips += 1
        self.skipped_steps += 1
        what = "the loss or log-probs are" if bad_values else "the gradient norm is"
        logger.warning(
            "step %d: %s not finite (NaN or inf); skipped the optimizer step (%d of at most %d in a row)%s",
            step, what, self.consecutive_skips, self.max_nonfinite_steps, describe_pairs(bad_pairs),
        )
        if scaler is not None:
            # The scaler unscaled this step's gradients; update() clears that record (and lowers the
            # scale when it saw inf), as the next unscale requires.
            scaler.update()
        if self.consecutive_skips >= self.max_nonfinite_steps:
            raise RelupoError(
                f"step {step}: {what} not finite for {self.consecutive_skips} optimizer steps in a row "
                f"(max_nonfinite_steps {self.max_nonfinite_steps}), so training stopped; the checkpoints "
                f"written so far are kept. Lower learning_rate, check the pairs named in the warnings, or "
                f"train in float32 without bf16/fp16, then continue with --resume true."
            )
        return False


def describe_pairs(pair_ids: list[str]) -> str:
    if not pair_ids:
        return ""
    named = ", ".join(pair_ids[:MAX_NAMED_PAIRS])
    more = f" and {len(pair_ids) - MAX_NAMED_PAIRS} more" if len(pair_ids) > MAX_NAMED_PAIRS else ""
    return f"; pairs: {named}{more}"


def check_mixed_precision(accelerator: Accelerator, training: TrainingConfig) -> None:
    """Reject fp16 where accelerate would run it without loss scaling.

    With mixed_precision="fp16", accelerate (1.16) creates a torch GradScaler on CUDA and other
    accelerators, and DeepSpeed scales the loss itself. On CPU it creates no scaler, so small
    float16 gradients would underflow to zero without any warning.
    """
    if not training.fp16 or accelerator.distributed_type == DistributedType.DEEPSPEED:
        return
    if getattr(accelerator, "scaler", None) is None:
        raise ConfigError(
            f"fp16 needs loss scaling, which accelerate provides only on a GPU or other accelerator; this run "
            f"is on {accelerator.device}. Use bf16 (which needs no loss scaling) or float32 instead."
        )
