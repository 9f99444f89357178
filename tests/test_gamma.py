"""Gamma schedules: exact values at the start, middle and end, the config helper and validation."""

from __future__ import annotations

import dataclasses
import math

import pytest

from relupo.config import ObjectiveConfig, TrainConfig
from relupo.errors import ConfigError
from relupo.gamma import GAMMA_SCHEDULES, gamma_for_step, scheduled_gamma
from relupo.objectives import validate_objective_config

# 11 optimizer steps (0..10): step 5 is the middle, progress 0.5.
TOTAL = 11


def gamma_at(step: int, schedule: str, **options) -> float:
    return scheduled_gamma(step, TOTAL, schedule=schedule, gamma_start=1.0, gamma_end=0.2, **options)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "step"])
def test_schedule_ends_are_exact(schedule):
    assert gamma_at(0, schedule) == 1.0
    assert gamma_at(TOTAL - 1, schedule) == 0.2


def test_linear_values():
    assert gamma_at(5, "linear") == pytest.approx(0.6, abs=1e-12)
    assert gamma_at(1, "linear") == pytest.approx(0.92, abs=1e-12)


def test_cosine_values():
    assert gamma_at(5, "cosine") == pytest.approx(0.6, abs=1e-12)
    # progress 0.2: 0.2 + 0.8 * (1 + cos(0.2 pi)) / 2
    assert gamma_at(2, "cosine") == pytest.approx(0.2 + 0.8 * (1 + math.cos(0.2 * math.pi)) / 2, abs=1e-12)
    assert gamma_at(2, "cosine") == pytest.approx(0.92360680, abs=1e-8)


def test_step_values_with_default_five_stages():
    # Stages of progress [0, 0.2), [0.2, 0.4), ... use 1.0, 0.8, 0.6, 0.4, 0.2.
    assert [gamma_at(step, "step") for step in (0, 1, 3, 5, 7, 9, 10)] == pytest.approx(
        [1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.2], abs=1e-12
    )


def test_step_values_with_two_stages():
    assert [gamma_at(step, "step", stages=2) for step in (0, 4, 5, 10)] == [1.0, 1.0, 0.2, 0.2]


def test_constant_returns_start():
    assert scheduled_gamma(7, TOTAL, schedule="constant", gamma_start=0.4, gamma_end=0.4) == 0.4


def test_increasing_schedule():
    assert scheduled_gamma(5, TOTAL, schedule="linear", gamma_start=0.2, gamma_end=1.0) == pytest.approx(0.6)


def test_step_past_end_returns_end():
    assert gamma_at(TOTAL + 5, "cosine") == 0.2


def test_single_step_run_uses_start():
    assert scheduled_gamma(0, 1, schedule="linear", gamma_start=1.0, gamma_end=0.2) == 1.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: gamma_at(0, "exponential"), "unknown gamma schedule 'exponential'"),
        (lambda: gamma_at(-1, "linear"), "step must be >= 0"),
        (lambda: scheduled_gamma(0, 0, schedule="linear", gamma_start=1.0, gamma_end=0.2), "total_steps >= 1"),
        (lambda: gamma_at(3, "step", stages=1), "at least 2 stages, got 1"),
        (lambda: gamma_at(3, "constant"), "needs gamma_start == gamma_end, got 1.0 and 0.2"),
    ],
)
def test_invalid_arguments_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_schedule_names_match_config_choices():
    field = next(f for f in dataclasses.fields(ObjectiveConfig) if f.name == "gamma_schedule")
    assert field.metadata["choices"] == GAMMA_SCHEDULES


def test_gamma_for_step_follows_config_schedule():
    config = ObjectiveConfig(loss_type="repo", gamma_schedule="linear", gamma_start=1.0, gamma_end=0.2)
    assert gamma_for_step(config, 5, TOTAL) == pytest.approx(0.6)


def test_gamma_for_step_default_stages():
    config = ObjectiveConfig(loss_type="repo", gamma_schedule="step", gamma_start=1.0, gamma_end=0.2)
    assert gamma_for_step(config, 3, TOTAL) == pytest.approx(0.8)
    config.gamma_stages = 2
    assert gamma_for_step(config, 3, TOTAL) == 1.0


def test_gamma_for_step_constant():
    assert gamma_for_step(ObjectiveConfig(loss_type="repo"), 3, TOTAL) == 0.5
    assert gamma_for_step(ObjectiveConfig(loss_type="simpo", gamma=0.3), 3, TOTAL) == 0.3


def test_gamma_for_step_objective_without_gamma():
    assert gamma_for_step(ObjectiveConfig(loss_type="dpo"), 3, TOTAL) is None


def test_valid_schedule_config_passes():
    validate_objective_config(
        ObjectiveConfig(loss_type="dpo+repo", gamma_schedule="step", gamma_start=2.0, gamma_end=0.5, gamma_stages=3)
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            dict(loss_type="dpo", gamma_schedule="linear", gamma_start=1.0, gamma_end=0.2),
            "gamma_schedule is linear, but loss_type dpo has no gamma; remove gamma_schedule or choose a "
            "loss_type with gamma (repo, repo++, simpo, dpo+repo, dpo+repo++).",
        ),
        (
            dict(gamma=0.5, gamma_schedule="cosine", gamma_start=1.0, gamma_end=0.2),
            "gamma is 0.5 and gamma_schedule is cosine; the schedule sets gamma at every step from "
            "gamma_start to gamma_end, so remove gamma.",
        ),
        (
            dict(gamma_schedule="linear", gamma_end=0.2),
            "gamma_schedule is linear, but gamma_start is missing; set both gamma_start and gamma_end "
            "(for example 1.0 and 0.2).",
        ),
        (
            dict(gamma_schedule="linear", gamma_start=1.0),
            "gamma_schedule is linear, but gamma_end is missing; set both gamma_start and gamma_end "
            "(for example 1.0 and 0.2).",
        ),
        (
            dict(gamma_schedule="linear", gamma_start=1.0, gamma_end=-0.2),
            "gamma_end is -0.2; loss_type repo accepts gamma >= 0.",
        ),
        (
            dict(gamma_start=1.0),
            "gamma_start is set, but gamma_schedule is constant; set gamma_schedule to linear, cosine or "
            "step to use it, or remove gamma_start.",
        ),
        (
            dict(gamma_stages=3),
            "gamma_stages is set, but gamma_schedule is constant; set gamma_schedule to step to use it, "
            "or remove gamma_stages.",
        ),
        (
            dict(gamma_schedule="linear", gamma_start=1.0, gamma_end=0.2, gamma_stages=3),
            "gamma_stages is set, but gamma_schedule is linear; only the step schedule has stages, so "
            "remove gamma_stages or set gamma_schedule to step.",
        ),
    ],
)
def test_invalid_schedule_config_rejected(options, message):
    with pytest.raises(ConfigError) as error:
        validate_objective_config(ObjectiveConfig(**options))
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("gamma_stages", 1, "gamma_stages is 1; it must be at least 2."),
        ("gamma_schedule", "exponential", "gamma_schedule is 'exponential'; accepted values: constant, linear, cosine, step."),
    ],
)
def test_invalid_schedule_option_rejected(name, value, message):
    config = TrainConfig()
    setattr(config.objective, name, value)
    with pytest.raises(ConfigError) as error:
        config.validate()
    assert str(error.value) == message
