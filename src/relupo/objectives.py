"""Preference objectives as pure tensor functions, and a registry of them by `loss_type`.

Every objective takes a `PairLogps` (summed response log-probs of chosen and rejected, their token
counts, and reference sums where the method needs them) plus its hyperparameters, and returns an
`ObjectiveOutput`: the per-pair loss, the per-pair margin the loss is a function of, and the
per-pair gradient weight dL/d(margin). The trainer takes the batch mean of the losses, counting
every pair, active or not.

Notation used in the docstrings:
    M = logp(chosen) / |chosen| - logp(rejected) / |rejected|   (length-normalized margin, nats/token)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from relupo.errors import ConfigError


@dataclass(frozen=True)
class PairLogps:
    """Sequence log-probabilities of a batch of B preference pairs. All tensors have shape (B,)."""

    chosen_logps: Tensor  # sum of log p(token) over the chosen response tokens, in nats
    rejected_logps: Tensor
    chosen_lengths: Tensor  # number of response tokens, as a float tensor
    rejected_lengths: Tensor
    reference_chosen_logps: Tensor | None = None  # same sums under the reference model
    reference_rejected_logps: Tensor | None = None

    @property
    def chosen_mean_logps(self) -> Tensor:
        return self.chosen_logps / self.chosen_lengths

    @property
    def rejected_mean_logps(self) -> Tensor:
        return self.rejected_logps / self.rejected_lengths

    @property
    def normalized_margins(self) -> Tensor:
        """M: the length-normalized margin, in nats per token."""
        return self.chosen_mean_logps - self.rejected_mean_logps


@dataclass(frozen=True)
class ObjectiveOutput:
    """Per-pair results of an objective. All tensors have shape (B,)."""

    losses: Tensor  # differentiable
    margins: Tensor  # the margin the loss is a function of, detached
    grad_weights: Tensor  # dL/d(margin) at each pair, detached; 0 where the pair gives no gradient


def repo(logps: PairLogps, *, gamma: float) -> ObjectiveOutput:
    """RePO: ReLU-based Preference Optimization.

    Wu et al. 2025, "RePO: ReLU-based Preference Optimization", arXiv 2503.07426.

        loss = ReLU(gamma - M)          dL/dM = -1 if M < gamma else 0

    gamma (nats per token, usually 0.2 to 1.0; the paper's default is 0.5) is the only knob: a
    pair whose margin already reaches gamma contributes exactly zero gradient, so easy pairs drop
    out of training. No reference model and no beta: RePO is SimPO's limit as beta grows.
    """
    margins = logps.normalized_margins
    losses = torch.relu(gamma - margins)
    grad_weights = -(margins.detach() < gamma).to(margins.dtype)
    return ObjectiveOutput(losses=losses, margins=margins.detach(), grad_weights=grad_weights)


@dataclass(frozen=True)
class Objective:
    """A registered objective: its function, its hyperparameters with defaults and ranges."""

    name: str
    function: Callable[..., ObjectiveOutput]
    defaults: dict[str, float]  # hyperparameter name -> default value
    ranges: dict[str, tuple[float | None, float | None, str]]  # name -> (low, high, text for messages)
    needs_reference: bool = False


OBJECTIVES: dict[str, Objective] = {
    "repo": Objective(
        name="repo",
        function=repo,
        defaults={"gamma": 0.5},
        ranges={"gamma": (0.0, None, "gamma >= 0")},
    ),
}


HYPERPARAMETER_FIELDS = ("gamma",)


def resolve_hyperparameters(config: Any) -> dict[str, float]:
    """Return the hyperparameters of config.loss_type: the configured values over its defaults."""
    objective = OBJECTIVES[config.loss_type]
    resolved = dict(objective.defaults)
    for name in objective.defaults:
        value = getattr(config, name)
        if value is not None:
            resolved[name] = value
    return resolved


def validate_objective_config(config: Any) -> None:
    """Reject an unknown loss_type, a hyperparameter out of range, or one the objective does not use."""
    if config.loss_type not in OBJECTIVES:
        raise ConfigError(f"loss_type is {config.loss_type!r}; accepted values: {', '.join(OBJECTIVES)}.")
    objective = OBJECTIVES[config.loss_type]
    for f in fields(config):
        if f.name not in HYPERPARAMETER_FIELDS:
            continue
        value = getattr(config, f.name)
        if value is None:
            continue
        if f.name not in objective.defaults:
            used = ", ".join(objective.defaults) or "none"
            raise ConfigError(
                f"{f.name} is set to {value}, but loss_type {objective.name} does not use it "
                f"(its hyperparameters: {used}); remove {f.name} or choose another loss_type."
            )
        low, high, text = objective.ranges[f.name]
        if (low is not None and value < low) or (high is not None and value > high):
            raise ConfigError(f"{f.name} is {value}; loss_type {objective.name} accepts {text}.")


def compute_objective(config: Any, logps: PairLogps, **overrides: float) -> ObjectiveOutput:
    """Run config.loss_type on a batch; `overrides` replace hyperparameters (a scheduled gamma)."""
    objective = OBJECTIVES[config.loss_type]
    hyperparameters = resolve_hyperparameters(config)
    hyperparameters.update(overrides)
    return objective.function(logps, **hyperparameters)
