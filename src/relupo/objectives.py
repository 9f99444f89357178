"""Preference objectives as pure tensor functions, and a registry of them by `loss_type`.

Every objective takes a `PairLogps` (summed response log-probs of chosen and rejected, their token
counts, and reference sums where the method needs them) plus its hyperparameters, and returns an
`ObjectiveOutput`: the per-pair loss, the per-pair margin the loss is a function of, and the
per-pair gradient weight dL/d(margin) in closed form. The trainer takes the batch mean of the
losses, counting every pair, active or not.

Notation used in the docstrings (w = chosen, l = rejected, logp = summed log-prob in nats):
    M = logp_w / |w| - logp_l / |l|               length-normalized margin, nats per token
    h = (logp_w - ref_w) - (logp_l - ref_l)       DPO log-ratio margin, summed over tokens, nats
    m = logp_w - logp_l                           summed margin without a reference model, nats

Kinks: a ReLU-gated loss gives zero gradient at its kink, as torch's relu'(0) = 0 does, so a pair
exactly on the threshold (M == gamma for RePO) is inactive. Active means strictly below it.

Objectives whose loss also has an NLL term (slic, cpo, orpo) report dL/d(margin) with that term
held fixed: it depends on the chosen response alone, never on the margin.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
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

    @property
    def log_ratio_margins(self) -> Tensor:
        """h: the DPO margin of policy-to-reference log-ratios on summed log-probs, in nats."""
        if self.reference_chosen_logps is None or self.reference_rejected_logps is None:
            raise ValueError("this objective needs reference log-probs, but the batch has none.")
        chosen_log_ratios = self.chosen_logps - self.reference_chosen_logps
        rejected_log_ratios = self.rejected_logps - self.reference_rejected_logps
        return chosen_log_ratios - rejected_log_ratios


@dataclass(frozen=True)
class ObjectiveOutput:
    """Per-pair results of an objective. All tensors have shape (B,)."""

    losses: Tensor  # differentiable
    margins: Tensor  # the margin the loss is a function of, detached
    grad_weights: Tensor  # dL/d(margin) at each pair, detached; 0 where the pair gives no gradient


def _output(losses: Tensor, margins: Tensor, grad_weights: Tensor) -> ObjectiveOutput:
    return ObjectiveOutput(losses=losses, margins=margins.detach(), grad_weights=grad_weights.detach())


def _hinge_grad_weights(margins: Tensor, threshold: float) -> Tensor:
    """Return d ReLU(threshold - margin) / d margin: -1 where margin < threshold, else 0."""
    active = margins.detach() < threshold
    return torch.where(active, -torch.ones_like(margins), torch.zeros_like(margins)).detach()


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
    return _output(losses, margins, _hinge_grad_weights(margins, gamma))


def repo_plus_plus(logps: PairLogps, *, beta: float, gamma: float) -> ObjectiveOutput:
    """RePO++: SimPO's logistic weighting on the pairs that RePO's filter keeps.

    Wu et al. 2025, "RePO: ReLU-based Preference Optimization", arXiv 2503.07426.

        z = beta * (M - gamma)
        loss = -log sigmoid(min(z, 0))  dL/dM = -beta * sigmoid(-z) if M < gamma else 0

    A pair with M >= gamma has the constant loss log 2 and no gradient, as in RePO; below gamma
    the loss is exactly SimPO's. gamma sits inside the sigmoid, on M (nats per token), as in
    SimPO. beta (per nat per token, default 2.0 as for SimPO) sets how fast the weight falls from
    beta towards beta / 2 as M rises to gamma. gamma default 0.5, as for RePO.
    """
    margins = logps.normalized_margins
    logits = beta * (margins - gamma)
    # min(z, 0) written as -ReLU(-z) so that autograd gives 0 at z == 0, the kink convention.
    losses = -F.logsigmoid(-torch.relu(-logits))
    detached = logits.detach()
    grad_weights = torch.where(detached < 0, -beta * torch.sigmoid(-detached), torch.zeros_like(detached))
    return _output(losses, margins, grad_weights)


def simpo(logps: PairLogps, *, beta: float, gamma: float) -> ObjectiveOutput:
    """SimPO: Simple Preference Optimization with a Reference-Free Reward.

    Meng, Xia and Chen 2024, "SimPO: Simple Preference Optimization with a Reference-Free
    Reward", arXiv 2405.14734.

        loss = -log sigmoid(beta * (M - gamma))      dL/dM = -beta * sigmoid(-beta * (M - gamma))

    gamma here is a target margin on M in nats per token: the paper's gamma divided by its beta,
    the ratio its code calls gamma_beta_ratio. The defaults are those of the authors'
    Llama-3-8B-Base config (princeton-nlp/SimPO, training_configs/llama-3-8b-base-simpo.yaml):
    beta 2.0 and gamma_beta_ratio 0.5, so gamma 0.5 here, which is the paper's gamma 1.0. Their
    Mistral-7B-Base config uses gamma_beta_ratio 0.8. Every pair gets a nonzero gradient.
    """
    margins = logps.normalized_margins
    logits = beta * (margins - gamma)
    losses = -F.logsigmoid(logits)
    grad_weights = -beta * torch.sigmoid(-logits.detach())
    return _output(losses, margins, grad_weights)


def dpo(logps: PairLogps, *, beta: float, label_smoothing: float) -> ObjectiveOutput:
    """DPO: Direct Preference Optimization, with the conservative (cDPO) label smoothing.

    Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a
    Reward Model", arXiv 2305.18290.

        z = beta * h,  e = label_smoothing
        loss = -(1 - e) log sigmoid(z) - e log sigmoid(-z)
        dL/dh = -beta * ((1 - e) * sigmoid(-z) - e * sigmoid(z))

    beta (per nat, usually 0.1 to 0.5; default 0.1) is the strength of the implicit KL penalty
    towards the reference. label_smoothing (in [0, 0.5), default 0) is the assumed probability
    that a pair's label is flipped; with e > 0 the loss stops pushing once sigmoid(z) = 1 - e.
    """
    margins = logps.log_ratio_margins
    logits = beta * margins
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    detached = logits.detach()
    grad_weights = -beta * ((1 - label_smoothing) * torch.sigmoid(-detached) - label_smoothing * torch.sigmoid(detached))
    return _output(losses, margins, grad_weights)


def ipo(logps: PairLogps, *, tau: float) -> ObjectiveOutput:
    """IPO: Identity Preference Optimization.

    Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", arXiv 2310.12036.

        loss = (h - 1 / (2 * tau))^2        dL/dh = 2 * (h - 1 / (2 * tau))

    h is on summed log-probs, as the paper's sequence-level log-likelihoods are. The squared loss
    pulls h towards the target 1 / (2 tau) nats from both sides instead of pushing it up without
    bound. tau (per nat, default 0.1, so the target is 5 nats) is the regularization strength:
    a smaller tau sets a larger target margin.
    """
    margins = logps.log_ratio_margins
    target = 1 / (2 * tau)
    losses = (margins - target) ** 2
    grad_weights = 2 * (margins.detach() - target)
    return _output(losses, margins, grad_weights)


def slic(logps: PairLogps, *, delta: float, nll_weight: float) -> ObjectiveOutput:
    """SLiC-HF: Sequence Likelihood Calibration with Human Feedback, rank calibration loss.

    Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with Human Feedback",
    arXiv 2305.10425.

        loss = ReLU(delta - m) - nll_weight * logp_w        dL/dm = -1 if m < delta else 0

    No reference model. delta (nats, default 1.0) is the hinge margin on the summed log-prob
    difference. nll_weight (the paper's lambda, default 0.1, relupo's choice) weights the
    regularizing NLL of the chosen response, which is summed over its tokens here.
    """
    margins = logps.chosen_logps - logps.rejected_logps
    losses = torch.relu(delta - margins) - nll_weight * logps.chosen_logps
    return _output(losses, margins, _hinge_grad_weights(margins, delta))


def cpo(logps: PairLogps, *, beta: float, nll_weight: float) -> ObjectiveOutput:
    """CPO: Contrastive Preference Optimization.

    Xu et al. 2024, "Contrastive Preference Optimization: Pushing the Boundaries of LLM
    Performance in Machine Translation", arXiv 2401.08417.

        loss = -log sigmoid(beta * m) + nll_weight * (-logp_w / |w|)
        dL/dm = -beta * sigmoid(-beta * m)

    DPO with the reference model dropped, plus an NLL term on the chosen response. beta (per nat,
    default 0.1) scales the summed margin m. nll_weight (default 1.0, the paper's unweighted sum
    of the two terms) multiplies the chosen response's mean NLL per token.
    """
    margins = logps.chosen_logps - logps.rejected_logps
    logits = beta * margins
    losses = -F.logsigmoid(logits) + nll_weight * sft_loss(logps)
    grad_weights = -beta * torch.sigmoid(-logits.detach())
    return _output(losses, margins, grad_weights)


def orpo(logps: PairLogps, *, odds_ratio_weight: float) -> ObjectiveOutput:
    """ORPO: Odds Ratio Preference Optimization.

    Hong, Lee and Thorne 2024, "ORPO: Monolithic Preference Optimization without Reference
    Model", arXiv 2403.07691.

        p = exp(logp / |y|),  odds = p / (1 - p),  r = log(odds_w / odds_l)
        loss = -logp_w / |w| - odds_ratio_weight * log sigmoid(r)
        dL/dr = -odds_ratio_weight * sigmoid(-r)

    The margin is the log odds ratio r, computed from the mean log-probs per token. No reference
    model. odds_ratio_weight (the paper's lambda, default 0.1) weights the odds-ratio term against
    the chosen response's mean NLL per token.
    """
    margins = _log_odds(logps.chosen_mean_logps) - _log_odds(logps.rejected_mean_logps)
    losses = sft_loss(logps) - odds_ratio_weight * F.logsigmoid(margins)
    grad_weights = -odds_ratio_weight * torch.sigmoid(-margins.detach())
    return _output(losses, margins, grad_weights)


def _log_odds(mean_logps: Tensor) -> Tensor:
    """Return log(p / (1 - p)) for log p = mean_logps < 0, with log(1 - p) computed stably."""
    # log1p(-exp(x)) loses precision as x -> 0 and log(-expm1(x)) as x -> -inf, so switch at -log 2.
    log_one_minus_p = torch.where(
        mean_logps < -math.log(2),
        torch.log1p(-torch.exp(mean_logps)),
        torch.log(-torch.expm1(mean_logps)),
    )
    return mean_logps - log_one_minus_p


def rdpo(logps: PairLogps, *, beta: float, alpha: float) -> ObjectiveOutput:
    """R-DPO: DPO with a length regularizer.

    Park et al. 2024, "Disentangling Length from Quality in Direct Preference Optimization",
    arXiv 2403.19159.

        z = beta * h - alpha * (|w| - |l|)
        loss = -log sigmoid(z)              dL/dh = -beta * sigmoid(-z)

    beta as in DPO (default 0.1). alpha (nats per token of length difference, default 0.05,
    relupo's choice) penalizes a chosen response for each token it is longer than the rejected
    one, so the policy cannot win pairs by verbosity alone.
    """
    margins = logps.log_ratio_margins
    logits = beta * margins - alpha * (logps.chosen_lengths - logps.rejected_lengths)
    losses = -F.logsigmoid(logits)
    grad_weights = -beta * torch.sigmoid(-logits.detach())
    return _output(losses, margins, grad_weights)


def dpo_repo(logps: PairLogps, *, gamma: float) -> ObjectiveOutput:
    """DPO+RePO: RePO's ReLU loss on DPO's reference-based margin h.

    Wu et al. 2025, "RePO: ReLU-based Preference Optimization", arXiv 2503.07426.

        loss = ReLU(gamma - h)              dL/dh = -1 if h < gamma else 0

    gamma (nats of summed log-ratio margin, default 0.5) is the threshold past which a pair drops
    out. h is summed over tokens, so gamma here is on a larger scale than RePO's per-token gamma.
    """
    margins = logps.log_ratio_margins
    losses = torch.relu(gamma - margins)
    return _output(losses, margins, _hinge_grad_weights(margins, gamma))


def dpo_repo_plus_plus(logps: PairLogps, *, beta: float, gamma: float) -> ObjectiveOutput:
    """DPO+RePO++: DPO's logistic weighting on the pairs whose beta * h is below gamma.

    Wu et al. 2025, "RePO: ReLU-based Preference Optimization", arXiv 2503.07426.

        z = beta * h - gamma
        loss = -log sigmoid(-ReLU(-z))      dL/dh = -beta * sigmoid(-z) if z < 0 else 0

    A pair with beta * h >= gamma has the constant loss log 2 and no gradient. beta as in DPO
    (default 0.1). gamma (default 0.5) is on the scale of DPO's reward beta * h, not of h.
    """
    margins = logps.log_ratio_margins
    logits = beta * margins - gamma
    losses = -F.logsigmoid(-torch.relu(-logits))
    detached = logits.detach()
    grad_weights = torch.where(detached < 0, -beta * torch.sigmoid(-detached), torch.zeros_like(detached))
    return _output(losses, margins, grad_weights)


def sft_loss(logps: PairLogps) -> Tensor:
    """Return the per-pair mean NLL per token of the chosen response: -logp_w / |w|, in nats.

    The trainer adds `sft_weight * sft_loss(logps)` to any objective's losses and logs it on its
    own, so the objective functions stay as their papers define them.
    """
    return -logps.chosen_mean_logps


@dataclass(frozen=True)
class Interval:
    """The accepted values of one hyperparameter: bounds that are None are open-ended."""

    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def __contains__(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
            return False
        if self.high is not None and (value > self.high or (value == self.high and not self.high_inclusive)):
            return False
        return True

    def describe(self, name: str) -> str:
        """Write the interval as an inequality on `name`: 'beta > 0', '0 <= label_smoothing < 0.5'."""
        low_sign = "<=" if self.low_inclusive else "<"
        high_sign = "<=" if self.high_inclusive else "<"
        if self.low is not None and self.high is not None:
            return f"{self.low:g} {low_sign} {name} {high_sign} {self.high:g}"
        if self.low is not None:
            return f"{name} {'>=' if self.low_inclusive else '>'} {self.low:g}"
        if self.high is not None:
            return f"{name} {high_sign} {self.high:g}"
        return f"any {name}"


POSITIVE = Interval(low=0.0, low_inclusive=False)
NON_NEGATIVE = Interval(low=0.0)
LABEL_SMOOTHING = Interval(low=0.0, high=0.5, high_inclusive=False)


@dataclass(frozen=True)
class Objective:
    """A registered objective: its function, its hyperparameters with defaults and ranges."""

    name: str
    function: Callable[..., ObjectiveOutput]
    defaults: dict[str, float]  # hyperparameter name -> default value
    ranges: dict[str, Interval]  # hyperparameter name -> accepted values
    needs_reference: bool = False


OBJECTIVES: dict[str, Objective] = {
    objective.name: objective
    for objective in (
        Objective("repo", repo, {"gamma": 0.5}, {"gamma": NON_NEGATIVE}),
        Objective(
            "repo++", repo_plus_plus, {"beta": 2.0, "gamma": 0.5}, {"beta": POSITIVE, "gamma": NON_NEGATIVE}
        ),
        Objective("simpo", simpo, {"beta": 2.0, "gamma": 0.5}, {"beta": POSITIVE, "gamma": NON_NEGATIVE}),
        Objective(
            "dpo",
            dpo,
            {"beta": 0.1, "label_smoothing": 0.0},
            {"beta": POSITIVE, "label_smoothing": LABEL_SMOOTHING},
            needs_reference=True,
        ),
        Objective("ipo", ipo, {"tau": 0.1}, {"tau": POSITIVE}, needs_reference=True),
        Objective(
            "slic", slic, {"delta": 1.0, "nll_weight": 0.1}, {"delta": NON_NEGATIVE, "nll_weight": NON_NEGATIVE}
        ),
        Objective("cpo", cpo, {"beta": 0.1, "nll_weight": 1.0}, {"beta": POSITIVE, "nll_weight": NON_NEGATIVE}),
        Objective("orpo", orpo, {"odds_ratio_weight": 0.1}, {"odds_ratio_weight": NON_NEGATIVE}),
        Objective(
            "rdpo",
            rdpo,
            {"beta": 0.1, "alpha": 0.05},
            {"beta": POSITIVE, "alpha": NON_NEGATIVE},
            needs_reference=True,
        ),
        Objective("dpo+repo", dpo_repo, {"gamma": 0.5}, {"gamma": NON_NEGATIVE}, needs_reference=True),
        Objective(
            "dpo+repo++",
            dpo_repo_plus_plus,
            {"beta": 0.1, "gamma": 0.5},
            {"beta": POSITIVE, "gamma": NON_NEGATIVE},
            needs_reference=True,
        ),
    )
}


# ObjectiveConfig fields that are objective hyperparameters: each one must be unset (None) unless
# config.loss_type uses it.
HYPERPARAMETER_FIELDS = ("beta", "gamma", "label_smoothing", "tau", "delta", "nll_weight", "odds_ratio_weight", "alpha")

# Schedule options -> the gamma_schedule values that use them.
GAMMA_SCHEDULE_FIELDS = {"gamma_start": "linear, cosine or step", "gamma_end": "linear, cosine or step", "gamma_stages": "step"}


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
    """Reject an unknown loss_type, a hyperparameter out of range or unused, or a bad gamma schedule."""
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
        _check_range(objective, f.name, value)
    _validate_gamma_schedule(config, objective)


def _check_range(objective: Objective, name: str, value: float) -> None:
    accepted = objective.ranges[name]
    if value not in accepted:
        raise ConfigError(f"{name} is {value}; loss_type {objective.name} accepts {accepted.describe(name)}.")


def _validate_gamma_schedule(config: Any, objective: Objective) -> None:
    schedule = config.gamma_schedule
    if schedule == "constant":
        for name, schedules in GAMMA_SCHEDULE_FIELDS.items():
            if getattr(config, name) is not None:
                raise ConfigError(
                    f"{name} is set, but gamma_schedule is constant; set gamma_schedule to {schedules} "
                    f"to use it, or remove {name}."
                )
        return

    if "gamma" not in objective.defaults:
        raise ConfigError(
            f"gamma_schedule is {schedule}, but loss_type {objective.name} has no gamma; remove "
            f"gamma_schedule or choose a loss_type with gamma (repo, repo++, simpo, dpo+repo, dpo+repo++)."
        )
    if config.gamma is not None:
        raise ConfigError(
            f"gamma is {config.gamma} and gamma_schedule is {schedule}; the schedule sets gamma at every "
            f"step from gamma_start to gamma_end, so remove gamma."
        )
    for name in ("gamma_start", "gamma_end"):
        value = getattr(config, name)
        if value is None:
            raise ConfigError(
                f"gamma_schedule is {schedule}, but {name} is missing; set both gamma_start and gamma_end "
                f"(for example 1.0 and 0.2)."
            )
        accepted = objective.ranges["gamma"]
        if value not in accepted:
            raise ConfigError(f"{name} is {value}; loss_type {objective.name} accepts {accepted.describe('gamma')}.")
    if config.gamma_stages is not None and schedule != "step":
        raise ConfigError(
            f"gamma_stages is set, but gamma_schedule is {schedule}; only the step schedule has stages, "
            f"so remove gamma_stages or set gamma_schedule to step."
        )


def compute_objective(config: Any, logps: PairLogps, **overrides: float) -> ObjectiveOutput:
    """Run config.loss_type on a batch; `overrides` replace hyperparameters (a scheduled gamma)."""
    objective = OBJECTIVES[config.loss_type]
    hyperparameters = resolve_hyperparameters(config)
    hyperparameters.update(overrides)
    return objective.function(logps, **hyperparameters)
