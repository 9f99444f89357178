"""Schedules for the margin threshold gamma over the optimizer steps of a run.

The best schedule in the RePO paper (Wu et al. 2025, arXiv 2503.07426) decreased gamma from 1.0
to 0.2 over training. A high gamma keeps most pairs active, and lowering it drops the pairs whose
margin already exceeds it.

Every schedule is a function of the training progress p = step / (total_steps - 1) in [0, 1], so
the first optimizer step (step 0) trains with gamma_start and the last one (step total_steps - 1)
with gamma_end exactly. A run of one step uses gamma_start.
"""

from __future__ import annotations

import math
from typing import Any

from relupo.objectives import OBJECTIVES, resolve_hyperparameters

GAMMA_SCHEDULES = ("constant", "linear", "cosine", "step")
DEFAULT_GAMMA_STAGES = 5


def scheduled_gamma(
    step: int,
    total_steps: int,
    *,
    schedule: str = "constant",
    gamma_start: float,
    gamma_end: float,
    stages: int = DEFAULT_GAMMA_STAGES,
) -> float:
    """Return gamma for the optimizer step `step` (0-based) of a run of `total_steps` steps.

        constant  gamma_start at every step (gamma_end must equal it)
        linear    gamma_start + (gamma_end - gamma_start) * p
        cosine    gamma_end + (gamma_start - gamma_end) * (1 + cos(pi * p)) / 2
        step      `stages` equal-length stages; stage k of 0..stages-1 uses
                  gamma_start + (gamma_end - gamma_start) * k / (stages - 1)

    A step past the end (evaluation after the last step) gets gamma_end. Raises ValueError for an
    unknown schedule, a negative step, total_steps < 1, stages < 2 or a constant schedule whose
    ends differ.
    """
    if schedule not in GAMMA_SCHEDULES:
        raise ValueError(f"unknown gamma schedule {schedule!r}; accepted values: {', '.join(GAMMA_SCHEDULES)}.")
    if step < 0 or total_steps < 1:
        raise ValueError(f"step must be >= 0 and total_steps >= 1, got step {step} of {total_steps}.")
    if schedule == "constant":
        if gamma_start != gamma_end:
            raise ValueError(f"a constant gamma schedule needs gamma_start == gamma_end, got {gamma_start} and {gamma_end}.")
        return gamma_start

    progress = min(step / (total_steps - 1), 1.0) if total_steps > 1 else 0.0
    if schedule == "linear":
        weight = progress
    elif schedule == "cosine":
        weight = (1 - math.cos(math.pi * progress)) / 2
    else:
        if stages < 2:
            raise ValueError(f"a step gamma schedule needs at least 2 stages, got {stages}.")
        # The last stage includes p == 1, so the final step is in it whatever total_steps is.
        stage = min(math.floor(progress * stages), stages - 1)
        weight = stage / (stages - 1)
    # Interpolating as a weighted sum returns gamma_start and gamma_end exactly at the two ends.
    return (1 - weight) * gamma_start + weight * gamma_end


def gamma_for_step(config: Any, step: int, total_steps: int) -> float | None:
    """Return the gamma an ObjectiveConfig trains with at `step`, or None if its loss_type has none.

    Pass the result to `compute_objective(config, logps, gamma=...)`. The config must have passed
    validation, which guarantees that a non-constant schedule has both ends and no fixed gamma.
    """
    if "gamma" not in OBJECTIVES[config.loss_type].defaults:
        return None
    if config.gamma_schedule == "constant":
        return resolve_hyperparameters(config)["gamma"]
    stages = config.gamma_stages if config.gamma_stages is not None else DEFAULT_GAMMA_STAGES
    return scheduled_gamma(
        step,
        total_steps,
        schedule=config.gamma_schedule,
        gamma_start=config.gamma_start,
        gamma_end=config.gamma_end,
        stages=stages,
    )
