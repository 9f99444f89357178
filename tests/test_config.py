"""Configuration: YAML and flags into one dataclass tree, validated before anything heavy."""

import pytest

from relupo.config import BUNDLED_MODEL, TrainConfig, load_config
from relupo.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_the_bundled_run():
    config = load_config()
    config.validate()
    assert config.model.model_name_or_path == BUNDLED_MODEL
    assert config.objective.loss_type == "repo"
    assert config.training.learning_rate == 1e-3
    assert config.training.per_device_train_batch_size == 16


def test_yaml_sections_and_flat_names(tmp_path):
    path = write(tmp_path, "objective:\n  gamma: 0.3\ntraining:\n  learning_rate: 2e-6\nseed: 7\n")
    config = load_config(path)
    assert config.objective.gamma == 0.3
    assert config.training.learning_rate == 2e-6
    assert config.training.seed == 7


def test_flags_override_yaml(tmp_path):
    path = write(tmp_path, "objective:\n  gamma: 0.3\n")
    config = load_config(path, {"gamma": "0.4", "bf16": "true", "lora_target_modules": "q_proj,v_proj"})
    assert config.objective.gamma == 0.4
    assert config.training.bf16 is True
    assert config.model.lora_target_modules == ["q_proj", "v_proj"]


def test_yaml_round_trip(tmp_path):
    config = load_config(None, {"gamma": 0.25, "max_length": 300})
    again = load_config(write(tmp_path, config.to_yaml()))
    assert again == config


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("gama: 0.4\n", {}, "run.yaml: unknown option 'gama'. Did you mean gamma?"),
        ("model:\n  gamma: 0.4\n", {}, "run.yaml: option gamma belongs in section objective, not model."),
        ("- 1\n- 2\n", {}, "run.yaml: the config file must be a mapping of options, got list."),
        ("training: {learning_rate: [1, 2]}\n", {}, "run.yaml: option learning_rate must be a number, got [1, 2]."),
        ("", {"per_device_train_batch_size": "1.5"}, "command line: option per_device_train_batch_size must be an integer, got '1.5'."),
        ("", {"bf16": "maybe"}, "command line: option bf16 must be true or false, got 'maybe'."),
        ("key: [unclosed\n", {}, "run.yaml, line 2: invalid YAML"),
    ],
)
def test_load_errors_name_the_option(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text), overrides)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learning_rate": -1.0}, "learning_rate is -1.0; it must be at least 0.0."),
        ({"learning_rate": "nan"}, "learning_rate is nan; it must be a finite number."),
        ({"lr_scheduler_type": "exp"}, "lr_scheduler_type is 'exp'; accepted values: cosine, linear, constant."),
        ({"max_prompt_length": 512, "max_length": 512}, "max_prompt_length (512) must be less than max_length (512)"),
        ({"bf16": True, "fp16": True}, "bf16 and fp16 are both set; choose one mixed-precision mode."),
        ({"eval_split": 1.0}, "eval_split is 1.0; it must be less than 1.0."),
        ({"num_train_epochs": 0}, "num_train_epochs is 0 and max_steps is unset; set one of them to train."),
        ({"resume": True, "overwrite_output_dir": True}, "resume and overwrite_output_dir are both set"),
        ({"loss_type": "kto"}, "loss_type is 'kto'; accepted values: repo,"),
    ],
)
def test_validation_errors(overrides, message):
    config = load_config(None, overrides)
    with pytest.raises(ConfigError) as error:
        config.validate()
    assert message in str(error.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"missing.yaml: config file not found\."):
        load_config(tmp_path / "missing.yaml")


def test_every_option_has_help():
    from relupo.config import field_index

    for name, (_, field) in field_index().items():
        assert field.metadata.get("help", "").strip(), name


def test_config_tree_has_four_sections():
    assert list(TrainConfig().to_dict()) == ["model", "data", "objective", "training"]


def test_options_doc_is_current(tests_dir):
    from relupo.config import options_markdown

    document = (tests_dir.parent / "docs" / "options.md").read_text(encoding="utf-8")
    assert document == options_markdown(), "docs/options.md is stale; regenerate it with the command in its header."
