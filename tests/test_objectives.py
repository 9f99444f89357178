"""Objectives: closed-form values, exact gradient weights, the SimPO -> RePO limit, the registry
and the validation of objective options. TRL comparisons are in test_objectives_trl.py."""

from __future__ import annotations

import inspect
import math
from dataclasses import replace

import pytest
import torch

from relupo.config import ObjectiveConfig, TrainConfig
from relupo.errors import ConfigError
from relupo.objectives import (
    HYPERPARAMETER_FIELDS,
    OBJECTIVES,
    PairLogps,
    compute_objective,
    resolve_hyperparameters,
    sft_loss,
    validate_objective_config,
)


def pairs(chosen, rejected, chosen_lengths, rejected_lengths, reference_chosen=None, reference_rejected=None):
    def tensor(values):
        return None if values is None else torch.tensor(values, dtype=torch.float64)

    return PairLogps(
        chosen_logps=tensor(chosen),
        rejected_logps=tensor(rejected),
        chosen_lengths=tensor(chosen_lengths),
        rejected_lengths=tensor(rejected_lengths),
        reference_chosen_logps=tensor(reference_chosen),
        reference_rejected_logps=tensor(reference_rejected),
    )


def softplus(x: float) -> float:
    """-log sigmoid(-x), computed with the math module only."""
    return math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# Two pairs whose margins are easy to check by hand:
#   mean log-probs  chosen -1, -2   rejected -2, -1.5   ->  M = [1.0, -0.5]
#   log-ratios      chosen 1, -2    rejected -1, 2      ->  h = [2.0, -4.0]
#   summed margin   m = [2.0, -6.0]
HAND = pairs(
    chosen=[-4.0, -12.0],
    rejected=[-6.0, -6.0],
    chosen_lengths=[4.0, 6.0],
    rejected_lengths=[3.0, 4.0],
    reference_chosen=[-5.0, -10.0],
    reference_rejected=[-5.0, -8.0],
)
M = [1.0, -0.5]
H = [2.0, -4.0]
SUMMED = [2.0, -6.0]
MEAN_NLL_CHOSEN = [1.0, 2.0]


def log_odds(mean_logp: float) -> float:
    p = math.exp(mean_logp)
    return math.log(p / (1 - p))


ORPO_R = [log_odds(-1.0) - log_odds(-2.0), log_odds(-2.0) - log_odds(-1.5)]

# loss_type -> (hyperparameters, expected margins, expected losses, expected grad weights), each
# value written out from the formula in the objective's docstring.
HAND_CASES = {
    "repo": (dict(gamma=0.5), M, [0.0, 1.0], [0.0, -1.0]),
    "repo++": (
        dict(beta=2.0, gamma=0.5),
        M,
        [math.log(2), softplus(2.0)],  # z = [1, -2]: the first pair is past gamma and inactive
        [0.0, -2.0 * sigmoid(2.0)],
    ),
    "simpo": (
        dict(beta=2.0, gamma=0.5),
        M,
        [softplus(-1.0), softplus(2.0)],
        [-2.0 * sigmoid(-1.0), -2.0 * sigmoid(2.0)],
    ),
    "dpo": (
        dict(beta=0.1, label_smoothing=0.0),
        H,
        [softplus(-0.2), softplus(0.4)],
        [-0.1 * sigmoid(-0.2), -0.1 * sigmoid(0.4)],
    ),
    "ipo": (dict(tau=0.1), H, [9.0, 81.0], [-6.0, -18.0]),  # target 1 / (2 tau) = 5
    "slic": (
        dict(delta=1.0, nll_weight=0.1),
        SUMMED,
        [0.0 + 0.4, 7.0 + 1.2],  # hinge + 0.1 * summed NLL of chosen (4 and 12 nats)
        [0.0, -1.0],
    ),
    "cpo": (
        dict(beta=0.1, nll_weight=1.0),
        SUMMED,
        [softplus(-0.2) + 1.0, softplus(0.6) + 2.0],
        [-0.1 * sigmoid(-0.2), -0.1 * sigmoid(0.6)],
    ),
    "orpo": (
        dict(odds_ratio_weight=0.1),
        ORPO_R,
        [1.0 + 0.1 * softplus(-ORPO_R[0]), 2.0 + 0.1 * softplus(-ORPO_R[1])],
        [-0.1 * sigmoid(-ORPO_R[0]), -0.1 * sigmoid(-ORPO_R[1])],
    ),
    "rdpo": (
        dict(beta=0.1, alpha=0.05),
        H,
        [softplus(-0.15), softplus(0.5)],  # z = 0.1 h - 0.05 * (|w| - |l|), length gaps 1 and 2
        [-0.1 * sigmoid(-0.15), -0.1 * sigmoid(0.5)],
    ),
    "dpo+repo": (dict(gamma=0.5), H, [0.0, 4.5], [0.0, -1.0]),
    "dpo+repo++": (
        dict(beta=0.5, gamma=0.5),
        H,
        [math.log(2), softplus(2.5)],  # z = 0.5 h - 0.5 = [0.5, -2.5]
        [0.0, -0.5 * sigmoid(2.5)],
    ),
}


def test_every_objective_has_a_hand_case():
    assert set(HAND_CASES) == set(OBJECTIVES)


@pytest.mark.parametrize("loss_type", HAND_CASES)
def test_closed_form_values(loss_type):
    hyperparameters, margins, losses, grad_weights = HAND_CASES[loss_type]
    output = OBJECTIVES[loss_type].function(HAND, **hyperparameters)
    assert output.margins.tolist() == pytest.approx(margins, abs=1e-12)
    assert output.losses.tolist() == pytest.approx(losses, abs=1e-12)
    assert output.grad_weights.tolist() == pytest.approx(grad_weights, abs=1e-12)


def test_dpo_label_smoothing_values():
    output = OBJECTIVES["dpo"].function(HAND, beta=0.1, label_smoothing=0.1)
    z = [0.2, -0.4]
    expected = [0.9 * softplus(-x) + 0.1 * softplus(x) for x in z]
    expected_grads = [-0.1 * (0.9 * sigmoid(-x) - 0.1 * sigmoid(x)) for x in z]
    assert output.losses.tolist() == pytest.approx(expected, abs=1e-12)
    assert output.grad_weights.tolist() == pytest.approx(expected_grads, abs=1e-12)


def test_dpo_label_smoothing_stops_at_one_minus_smoothing():
    # The conservative loss is minimal where sigmoid(beta * h) = 1 - e: h = logit(0.9) / beta.
    h = math.log(0.9 / 0.1) / 0.1
    batch = pairs([h], [0.0], [1.0], [1.0], [0.0], [0.0])
    output = OBJECTIVES["dpo"].function(batch, beta=0.1, label_smoothing=0.1)
    assert output.grad_weights.item() == pytest.approx(0.0, abs=1e-12)


def test_sft_loss_is_mean_nll_of_chosen():
    assert sft_loss(HAND).tolist() == MEAN_NLL_CHOSEN


# How to move each objective's margin by t without touching the chosen response, so that d loss
# / dt at t = 0 is exactly dL/d(margin), NLL terms on the chosen response held fixed.
def shift_normalized(logps: PairLogps, t: torch.Tensor) -> PairLogps:
    return replace(logps, rejected_logps=logps.rejected_logps - t * logps.rejected_lengths)


def shift_summed(logps: PairLogps, t: torch.Tensor) -> PairLogps:
    return replace(logps, rejected_logps=logps.rejected_logps - t)


def shift_log_odds(logps: PairLogps, t: torch.Tensor) -> PairLogps:
    mean = logps.rejected_mean_logps
    rejected_log_odds = mean - torch.log(-torch.expm1(mean))
    new_mean = torch.nn.functional.logsigmoid(rejected_log_odds - t)
    return replace(logps, rejected_logps=new_mean * logps.rejected_lengths)


MARGIN_SHIFTS = {
    "repo": shift_normalized,
    "repo++": shift_normalized,
    "simpo": shift_normalized,
    "dpo": shift_summed,
    "ipo": shift_summed,
    "slic": shift_summed,
    "cpo": shift_summed,
    "orpo": shift_log_odds,
    "rdpo": shift_summed,
    "dpo+repo": shift_summed,
    "dpo+repo++": shift_summed,
}


def autograd_weights(loss_type: str, logps: PairLogps, hyperparameters: dict) -> torch.Tensor:
    t = torch.zeros_like(logps.chosen_logps, requires_grad=True)
    output = OBJECTIVES[loss_type].function(MARGIN_SHIFTS[loss_type](logps, t), **hyperparameters)
    (gradient,) = torch.autograd.grad(output.losses.sum(), t)
    return gradient


def random_pairs(seed: int, size: int = 64) -> PairLogps:
    generator = torch.Generator().manual_seed(seed)
    chosen_lengths = torch.randint(1, 40, (size,), generator=generator).double()
    rejected_lengths = torch.randint(1, 40, (size,), generator=generator).double()
    mean_logps = -torch.rand(2, size, generator=generator, dtype=torch.float64) * 3 - 0.05
    reference = -torch.rand(2, size, generator=generator, dtype=torch.float64) * 3 - 0.05
    return PairLogps(
        chosen_logps=mean_logps[0] * chosen_lengths,
        rejected_logps=mean_logps[1] * rejected_lengths,
        chosen_lengths=chosen_lengths,
        rejected_lengths=rejected_lengths,
        reference_chosen_logps=reference[0] * chosen_lengths,
        reference_rejected_logps=reference[1] * rejected_lengths,
    )


@pytest.mark.parametrize("loss_type", OBJECTIVES)
@pytest.mark.parametrize("seed", [0, 1])
def test_grad_weights_match_autograd(loss_type, seed):
    objective = OBJECTIVES[loss_type]
    logps = random_pairs(seed)
    output = objective.function(logps, **objective.defaults)
    expected = autograd_weights(loss_type, logps, objective.defaults)
    torch.testing.assert_close(output.grad_weights, expected, atol=1e-12, rtol=1e-10)


def test_random_pairs_cover_both_sides_of_thresholds():
    # Without active and inactive pairs the autograd test could not fail on a wrong gate.
    for loss_type in ("repo", "repo++", "slic", "dpo+repo", "dpo+repo++"):
        objective = OBJECTIVES[loss_type]
        weights = objective.function(random_pairs(0), **objective.defaults).grad_weights
        assert (weights == 0).any(), loss_type
        assert (weights != 0).any(), loss_type


# Pairs exactly on each gated objective's kink, built from values that are exact in binary:
#   M = -2/4 - (-4/4) = 0.5        m = -3 - (-4) = 1        h = (-3 + 3) - (-4.5 + 4) = 0.5
ON_NORMALIZED_KINK = pairs([-2.0], [-4.0], [4.0], [4.0])
ON_SUMMED_KINK = pairs([-3.0], [-4.0], [2.0], [2.0])
ON_LOG_RATIO_KINK = pairs([-3.0], [-4.5], [2.0], [2.0], [-3.0], [-4.0])
KINKS = {
    "repo": (dict(gamma=0.5), ON_NORMALIZED_KINK),
    "repo++": (dict(beta=2.0, gamma=0.5), ON_NORMALIZED_KINK),
    "slic": (dict(delta=1.0, nll_weight=0.1), ON_SUMMED_KINK),
    "dpo+repo": (dict(gamma=0.5), ON_LOG_RATIO_KINK),
    "dpo+repo++": (dict(beta=0.5, gamma=0.25), ON_LOG_RATIO_KINK),  # beta * h - gamma = 0
}


@pytest.mark.parametrize("loss_type", KINKS)
def test_pair_on_kink_is_inactive(loss_type):
    hyperparameters, logps = KINKS[loss_type]
    output = OBJECTIVES[loss_type].function(logps, **hyperparameters)
    assert output.grad_weights.item() == 0.0
    assert autograd_weights(loss_type, logps, hyperparameters).item() == 0.0


@pytest.mark.parametrize("loss_type", KINKS)
def test_pair_just_below_kink_is_active(loss_type):
    hyperparameters, logps = KINKS[loss_type]
    below = replace(logps, rejected_logps=logps.rejected_logps + 1e-3)
    output = OBJECTIVES[loss_type].function(below, **hyperparameters)
    assert output.grad_weights.item() < 0
    torch.testing.assert_close(output.grad_weights, autograd_weights(loss_type, below, hyperparameters))


def margins_away_from(gamma: float) -> PairLogps:
    """Pairs with M spread over [-2, 3] but at least 0.05 from gamma, all of length 1."""
    margins = torch.linspace(-2.0, 3.0, 101, dtype=torch.float64)
    margins = margins[(margins - gamma).abs() >= 0.05]
    ones = torch.ones_like(margins)
    return PairLogps(chosen_logps=margins - 4.0, rejected_logps=-4.0 * ones, chosen_lengths=ones, rejected_lengths=ones)


def test_simpo_gradient_over_beta_tends_to_repo():
    logps = margins_away_from(0.5)
    repo_weights = OBJECTIVES["repo"].function(logps, gamma=0.5).grad_weights
    simpo_weights = OBJECTIVES["simpo"].function(logps, beta=1e4, gamma=0.5).grad_weights
    torch.testing.assert_close(simpo_weights / 1e4, repo_weights, atol=1e-6, rtol=0)


def test_simpo_loss_over_beta_tends_to_repo():
    logps = margins_away_from(0.5)
    repo_losses = OBJECTIVES["repo"].function(logps, gamma=0.5).losses
    simpo_losses = OBJECTIVES["simpo"].function(logps, beta=1e4, gamma=0.5).losses
    torch.testing.assert_close(simpo_losses / 1e4, repo_losses, atol=1e-6, rtol=0)


def test_simpo_at_usual_beta_is_far_from_repo():
    # The limit test above must be able to fail: at beta = 2 the weights differ a lot.
    logps = margins_away_from(0.5)
    repo_weights = OBJECTIVES["repo"].function(logps, gamma=0.5).grad_weights
    simpo_weights = OBJECTIVES["simpo"].function(logps, beta=2.0, gamma=0.5).grad_weights
    assert (simpo_weights / 2.0 - repo_weights).abs().max() > 0.4


@pytest.mark.parametrize("loss_type", OBJECTIVES)
def test_registry_entry_is_consistent(loss_type):
    objective = OBJECTIVES[loss_type]
    keywords = [p.name for p in inspect.signature(objective.function).parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert objective.name == loss_type
    assert sorted(keywords) == sorted(objective.defaults)
    assert set(objective.ranges) == set(objective.defaults)
    assert set(objective.defaults) <= set(HYPERPARAMETER_FIELDS)
    for name, value in objective.defaults.items():
        assert value in objective.ranges[name], name


def test_hyperparameter_fields_are_config_fields_defaulting_to_none():
    config = ObjectiveConfig()
    for name in HYPERPARAMETER_FIELDS:
        assert getattr(config, name) is None, name


def test_needs_reference_matches_margin():
    expected = {"dpo", "ipo", "rdpo", "dpo+repo", "dpo+repo++"}
    assert {name for name, objective in OBJECTIVES.items() if objective.needs_reference} == expected


@pytest.mark.parametrize("loss_type", ["dpo", "ipo", "rdpo", "dpo+repo", "dpo+repo++"])
def test_reference_objective_without_reference_raises(loss_type):
    objective = OBJECTIVES[loss_type]
    without_reference = replace(HAND, reference_chosen_logps=None, reference_rejected_logps=None)
    with pytest.raises(ValueError, match="needs reference log-probs"):
        objective.function(without_reference, **objective.defaults)


@pytest.mark.parametrize("loss_type", [name for name, o in OBJECTIVES.items() if not o.needs_reference])
def test_reference_free_objective_ignores_reference(loss_type):
    objective = OBJECTIVES[loss_type]
    without_reference = replace(HAND, reference_chosen_logps=None, reference_rejected_logps=None)
    torch.testing.assert_close(
        objective.function(without_reference, **objective.defaults).losses,
        objective.function(HAND, **objective.defaults).losses,
    )


def test_resolve_uses_config_over_defaults():
    assert resolve_hyperparameters(ObjectiveConfig(loss_type="simpo")) == {"beta": 2.0, "gamma": 0.5}
    assert resolve_hyperparameters(ObjectiveConfig(loss_type="simpo", beta=10.0)) == {"beta": 10.0, "gamma": 0.5}


def test_compute_objective_applies_override():
    config = ObjectiveConfig(loss_type="repo", gamma=0.5)
    output = compute_objective(config, HAND, gamma=2.0)
    assert output.losses.tolist() == pytest.approx([1.0, 2.5])


@pytest.mark.parametrize("loss_type", OBJECTIVES)
def test_defaults_validate(loss_type):
    config = TrainConfig()
    config.objective = ObjectiveConfig(loss_type=loss_type, **OBJECTIVES[loss_type].defaults)
    config.validate()


def rejected_message(**options) -> str:
    with pytest.raises(ConfigError) as error:
        validate_objective_config(ObjectiveConfig(**options))
    return str(error.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(loss_type="simpo", beta=-0.1), "beta is -0.1; loss_type simpo accepts beta > 0."),
        (dict(loss_type="dpo", beta=0.0), "beta is 0.0; loss_type dpo accepts beta > 0."),
        (dict(loss_type="repo", gamma=-0.2), "gamma is -0.2; loss_type repo accepts gamma >= 0."),
        (dict(loss_type="dpo+repo++", gamma=-1.0), "gamma is -1.0; loss_type dpo+repo++ accepts gamma >= 0."),
        (
            dict(loss_type="dpo", label_smoothing=0.5),
            "label_smoothing is 0.5; loss_type dpo accepts 0 <= label_smoothing < 0.5.",
        ),
        (
            dict(loss_type="dpo", label_smoothing=-0.1),
            "label_smoothing is -0.1; loss_type dpo accepts 0 <= label_smoothing < 0.5.",
        ),
        (dict(loss_type="ipo", tau=0.0), "tau is 0.0; loss_type ipo accepts tau > 0."),
        (dict(loss_type="repo", gamma=float("nan")), "gamma is nan; loss_type repo accepts gamma >= 0."),
        (dict(loss_type="slic", delta=-1.0), "delta is -1.0; loss_type slic accepts delta >= 0."),
        (dict(loss_type="cpo", nll_weight=-1.0), "nll_weight is -1.0; loss_type cpo accepts nll_weight >= 0."),
        (
            dict(loss_type="orpo", odds_ratio_weight=-0.1),
            "odds_ratio_weight is -0.1; loss_type orpo accepts odds_ratio_weight >= 0.",
        ),
        (dict(loss_type="rdpo", alpha=-0.5), "alpha is -0.5; loss_type rdpo accepts alpha >= 0."),
        (
            dict(loss_type="repo", beta=2.0),
            "beta is set to 2.0, but loss_type repo does not use it (its hyperparameters: gamma); "
            "remove beta or choose another loss_type.",
        ),
        (
            dict(loss_type="dpo", gamma=0.5),
            "gamma is set to 0.5, but loss_type dpo does not use it (its hyperparameters: beta, "
            "label_smoothing); remove gamma or choose another loss_type.",
        ),
        (
            dict(loss_type="simpo", label_smoothing=0.1),
            "label_smoothing is set to 0.1, but loss_type simpo does not use it (its hyperparameters: "
            "beta, gamma); remove label_smoothing or choose another loss_type.",
        ),
        (
            dict(loss_type="repo", tau=0.1),
            "tau is set to 0.1, but loss_type repo does not use it (its hyperparameters: gamma); "
            "remove tau or choose another loss_type.",
        ),
        (
            dict(loss_type="kto"),
            "loss_type is 'kto'; accepted values: repo, repo++, simpo, dpo, ipo, slic, cpo, orpo, rdpo, "
            "dpo+repo, dpo+repo++.",
        ),
    ],
)
def test_invalid_hyperparameter_rejected(options, message):
    assert rejected_message(**options) == message


def test_negative_sft_weight_rejected():
    config = TrainConfig()
    config.objective.sft_weight = -1.0
    with pytest.raises(ConfigError) as error:
        config.validate()
    assert str(error.value) == "sft_weight is -1.0; it must be at least 0.0."


def test_dpo_smoothed_grad_weights_match_autograd():
    logps = random_pairs(2)
    hyperparameters = dict(beta=0.5, label_smoothing=0.2)
    output = OBJECTIVES["dpo"].function(logps, **hyperparameters)
    expected = autograd_weights("dpo", logps, hyperparameters)
    torch.testing.assert_close(output.grad_weights, expected, atol=1e-12, rtol=1e-10)
