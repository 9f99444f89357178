"""The configuration of a training run: one dataclass tree, read from YAML and CLI flags.

The YAML file has one mapping per section (`model`, `data`, `objective`, `training`); CLI flags
name single fields (`--gamma 0.4`, `--learning-rate 1e-6`) and override the file. Field names are
unique across sections, so a flag never needs its section. Every field carries its help text in
`metadata["help"]`, which the CLI shows and `docs/options.md` is generated from.

`validate()` runs before any model or data is loaded, so a typo fails in milliseconds.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from relupo.errors import ConfigError

BUNDLED_DIR = Path(__file__).parent / "bundled"
BUNDLED_MODEL = str(BUNDLED_DIR / "stories260K")
BUNDLED_DATA = str(BUNDLED_DIR / "hh-rlhf-harmless-base" / "test.jsonl.gz")


def _option(default: Any, help: str, **kwargs: Any) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class ModelConfig:
    model_name_or_path: str = _option(
        BUNDLED_MODEL,
        "Causal language model to train: a local directory in Hugging Face format or a hub id. "
        "Default: the bundled stories260K model.",
    )
    dtype: str = _option(
        "float32",
        "Dtype the weights are loaded in: float32, bfloat16 or float16. Mixed precision for the "
        "forward pass is set separately by bf16/fp16.",
        choices=("float32", "bfloat16", "float16"),
    )
    trust_remote_code: bool = _option(
        False,
        "Allow the model repository to run its own Python code. Only enable it for models whose "
        "code you have read.",
    )
    gradient_checkpointing: bool = _option(
        False, "Recompute activations in the backward pass: less memory, about 30% more compute."
    )
    use_lora: bool = _option(False, "Train LoRA adapters (peft) instead of all weights.")
    lora_r: int = _option(16, "LoRA rank.", minimum=1)
    lora_alpha: float = _option(32.0, "LoRA scaling numerator: the update is scaled by lora_alpha / lora_r.")
    lora_target_modules: list[str] = _option(
        ["all-linear"],
        "Module names LoRA adapts, for example q_proj,v_proj. 'all-linear' adapts every linear "
        "layer except the output head.",
    )
    merge_lora: bool = _option(
        False,
        "Merge the trained adapter into the base weights when saving the final model, so it loads "
        "without peft. The adapter alone is saved too.",
    )


@dataclass
class DataConfig:
    train_data: str = _option(
        BUNDLED_DATA,
        "Training pairs: a JSONL (plain or .gz), JSON, Parquet or CSV file, a directory saved by "
        "datasets.save_to_disk, or a hub dataset id. Default: the bundled HH-RLHF harmless-base pairs.",
    )
    train_split: str = _option("train", "Split to read when train_data is a hub dataset id or a DatasetDict.")
    eval_data: str | None = _option(
        None, "Held-out pairs in any train_data format. When unset, eval_split carves them out of train_data."
    )
    eval_data_split: str = _option("test", "Split to read when eval_data is a hub dataset id or a DatasetDict.")
    eval_split: float = _option(
        0.15,
        "Fraction of train_data held out for evaluation when eval_data is unset, chosen with the seed. "
        "0 disables held-out evaluation.",
        minimum=0.0,
        below=1.0,
    )
    data_format: str = _option(
        "auto",
        "Row format: text (prompt, chosen, rejected strings), conversational (message lists), "
        "hh (HH-RLHF transcripts), or auto to detect it from the first row.",
        choices=("auto", "text", "conversational", "hh"),
    )
    prompt_column: str = _option("prompt", "Column that holds the prompt.")
    chosen_column: str = _option("chosen", "Column that holds the preferred response.")
    rejected_column: str = _option("rejected", "Column that holds the dispreferred response.")
    group_column: str | None = _option(
        None, "Optional column whose value groups pairs in evaluation breakdowns (for example a subset name)."
    )
    max_length: int = _option(
        512,
        "Maximum tokens of prompt plus response. Longer responses are cut at the end (a cut response "
        "has no EOS); a row whose prompt leaves no room for a response is dropped and counted.",
        minimum=2,
    )
    max_prompt_length: int = _option(
        256, "Maximum prompt tokens. Longer prompts keep their last tokens (after BOS).", minimum=1
    )
    skip_bad_rows: bool = _option(
        False,
        "Skip invalid rows (each skip is counted and reported) instead of stopping at the first one.",
    )
    drop_duplicates: bool = _option(
        False,
        "Drop a pair whose prompt, chosen and rejected repeat an earlier row of the same input. "
        "Duplicates are always counted and reported; by default they are kept.",
    )
    cache_dir: str | None = _option(
        None,
        "Directory for tokenized data, keyed by data, tokenizer and settings. Default: "
        "$RELUPO_CACHE or ~/.cache/relupo.",
    )


@dataclass
class ObjectiveConfig:
    # Hyperparameters default to None, meaning "the objective's default", so that setting one the
    # chosen loss_type does not use is an error instead of a silent no-op.
    loss_type: str = _option(
        "repo",
        "Preference objective: repo, repo++, simpo, dpo, ipo, slic, cpo, orpo, rdpo, dpo+repo or "
        "dpo+repo++. See docs/objectives.md for formulas and defaults.",
    )
    beta: float | None = _option(
        None,
        "Scale of the margin inside the sigmoid, > 0, for repo++, simpo, dpo, cpo, rdpo and "
        "dpo+repo++. Default 2.0 for repo++ and simpo (per nat per token), 0.1 for the others (per nat).",
    )
    gamma: float | None = _option(
        None,
        "Margin threshold, >= 0, for repo, repo++, simpo, dpo+repo and dpo+repo++: pairs whose margin "
        "reaches it give zero gradient (repo, repo++, dpo+repo, dpo+repo++) or a smaller one (simpo). "
        "In nats per token of the length-normalized margin M for repo, repo++ and simpo (for simpo it is "
        "SimPO's gamma_beta_ratio); in nats of the DPO margin for dpo+repo; on the scale of beta times "
        "the DPO margin for dpo+repo++. Default 0.5. Cannot be combined with a gamma_schedule.",
    )
    label_smoothing: float | None = _option(
        None,
        "dpo only: assumed probability that a pair's preference label is flipped (conservative DPO), "
        "in [0, 0.5). Default 0.",
    )
    tau: float | None = _option(
        None,
        "ipo only: regularization strength, > 0; the loss pulls the DPO margin towards 1 / (2 tau) nats. "
        "Default 0.1.",
    )
    delta: float | None = _option(
        None,
        "slic only: hinge margin on logp(chosen) - logp(rejected), summed over tokens, in nats, >= 0. "
        "Default 1.0.",
    )
    nll_weight: float | None = _option(
        None,
        "slic and cpo: weight of the NLL term on the chosen response, >= 0 (the papers' lambda). slic "
        "uses the NLL summed over tokens (default 0.1), cpo the mean NLL per token (default 1.0).",
    )
    odds_ratio_weight: float | None = _option(
        None,
        "orpo only: weight of the odds-ratio term against the chosen response's NLL, >= 0 (the ORPO "
        "paper's lambda). Default 0.1.",
    )
    alpha: float | None = _option(
        None,
        "rdpo only: length penalty, >= 0, in nats per token that the chosen response is longer than "
        "the rejected one. Default 0.05.",
    )
    sft_weight: float = _option(
        0.0,
        "Weight of an SFT term added to any objective: the mean NLL per token of the chosen response, "
        "logged separately as sft_loss. 0 disables it.",
        minimum=0.0,
    )
    gamma_schedule: str = _option(
        "constant",
        "How gamma changes over training: constant keeps gamma; linear, cosine and step move it from "
        "gamma_start at the first optimizer step to gamma_end at the last one. A schedule needs a "
        "loss_type with gamma, gamma_start and gamma_end, and gamma left unset.",
        choices=("constant", "linear", "cosine", "step"),
    )
    gamma_start: float | None = _option(
        None, "gamma at the first optimizer step of a linear, cosine or step gamma_schedule. For example 1.0."
    )
    gamma_end: float | None = _option(
        None, "gamma at the last optimizer step of a linear, cosine or step gamma_schedule. For example 0.2."
    )
    gamma_stages: int | None = _option(
        None,
        "step gamma_schedule only: number of equal-length stages, at least 2; gamma moves from gamma_start "
        "to gamma_end in equal jumps between them. Default 5 (1.0, 0.8, 0.6, 0.4, 0.2 from 1.0 to 0.2).",
        minimum=2,
    )


@dataclass
class TrainingConfig:
    output_dir: str = _option("runs/relupo", "Run directory: config, metrics, checkpoints, final model, summary.")
    overwrite_output_dir: bool = _option(
        False, "Allow training into an output_dir that already holds a run (without --resume)."
    )
    resume: bool = _option(
        False, "Continue from the newest complete checkpoint in output_dir, with the same data order and state."
    )
    seed: int = _option(42, "Seed for the data split, data order and initialization of new weights.")
    learning_rate: float = _option(1e-3, "Peak learning rate of AdamW.", minimum=0.0)
    weight_decay: float = _option(0.0, "AdamW weight decay.", minimum=0.0)
    adam_beta1: float = _option(0.9, "AdamW beta1.", minimum=0.0, below=1.0)
    adam_beta2: float = _option(0.999, "AdamW beta2.", minimum=0.0, below=1.0)
    adam_epsilon: float = _option(1e-8, "AdamW epsilon.", minimum=0.0)
    lr_scheduler_type: str = _option(
        "cosine", "Learning-rate schedule after warmup.", choices=("cosine", "linear", "constant")
    )
    warmup_ratio: float = _option(0.1, "Fraction of optimizer steps spent warming up linearly from 0.", minimum=0.0, below=1.0)
    num_train_epochs: float = _option(1.0, "Passes over the training pairs; fractions stop mid-epoch.", minimum=0.0)
    max_steps: int = _option(-1, "Optimizer steps to run; overrides num_train_epochs when positive.")
    per_device_train_batch_size: int = _option(16, "Pairs per micro-batch on each process.", minimum=1)
    per_device_eval_batch_size: int = _option(32, "Pairs per evaluation batch on each process.", minimum=1)
    gradient_accumulation_steps: int = _option(1, "Micro-batches per optimizer step.", minimum=1)
    max_grad_norm: float = _option(1.0, "Clip the global gradient norm to this value; 0 disables clipping.", minimum=0.0)
    bf16: bool = _option(False, "bfloat16 mixed precision (GPUs with bf16 support, or CPU).")
    fp16: bool = _option(False, "float16 mixed precision with loss scaling (GPU only).")
    logging_steps: int = _option(1, "Write metrics every this many optimizer steps.", minimum=1)
    eval_steps: int = _option(50, "Evaluate on the held-out pairs every this many optimizer steps; 0 only at the end.", minimum=0)
    save_steps: int = _option(50, "Write a checkpoint every this many optimizer steps; 0 disables checkpoints.", minimum=0)
    save_total_limit: int = _option(2, "Checkpoints to keep; older ones are deleted.", minimum=1)
    max_nonfinite_steps: int = _option(
        3,
        "Stop training with an error after this many optimizer steps in a row were skipped because the "
        "loss or the gradient norm was NaN or infinite. The checkpoints written before stay.",
        minimum=1,
    )
    snapshot_steps: int = _option(
        50,
        "Every this many optimizer steps (and before the first and after the last), record the margin "
        "and gradient weight of each held-out pair and of a fixed sample of up to 256 training pairs "
        "in snapshots/step-N.safetensors, for margin histograms. 0 disables snapshots.",
        minimum=0,
    )
    dataloader_num_workers: int = _option(0, "Worker processes for batch collation.", minimum=0)
    skip_inactive_pairs: str = _option(
        "auto",
        "Spend no backward computation on pairs whose gradient is exactly zero (repo, repo++, dpo+repo, "
        "dpo+repo++, and slic with nll_weight 0, all without sft_weight). On a CPU each pair runs "
        "forward on its own and only active pairs run backward; on other devices a forward pass "
        "without autograd finds the active pairs, then only those run forward and backward. The "
        "update is unchanged: the batch mean still counts every pair. on: always; off: never; auto: "
        "always on a CPU, otherwise while the recent active share is below 0.67.",
        choices=("auto", "on", "off"),
    )
    share_prompt: bool = _option(
        True,
        "Compute the prompt once per pair: pack prompt, chosen and rejected into one sequence with a 4D "
        "attention mask that keeps the two responses apart, and place short pairs side by side in one "
        "row instead of padding. Checked against separate sequences on the first batch and turned "
        "off, with a warning, where the model does not honor the mask.",
    )


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def validate(self) -> None:
        """Check every option and every combination; raise ConfigError naming the option."""
        for section in _sections(self):
            for f in dataclasses.fields(section):
                _check_field(f, getattr(section, f.name))
        data, training = self.data, self.training
        if data.max_prompt_length >= data.max_length:
            raise ConfigError(
                f"max_prompt_length ({data.max_prompt_length}) must be less than max_length "
                f"({data.max_length}) so every prompt leaves room for a response."
            )
        if training.bf16 and training.fp16:
            raise ConfigError("bf16 and fp16 are both set; choose one mixed-precision mode.")
        if training.max_steps <= 0 and training.num_train_epochs <= 0:
            raise ConfigError("num_train_epochs is 0 and max_steps is unset; set one of them to train.")
        if training.resume and training.overwrite_output_dir:
            raise ConfigError("resume and overwrite_output_dir are both set; resume keeps the run, overwrite replaces it.")
        from relupo.objectives import validate_objective_config

        validate_objective_config(self.objective)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _sections(config: TrainConfig) -> list[Any]:
    return [getattr(config, f.name) for f in dataclasses.fields(config)]


def field_index() -> dict[str, tuple[str, dataclasses.Field]]:
    """Map every option name to (section name, dataclass field)."""
    index: dict[str, tuple[str, dataclasses.Field]] = {}
    for section in dataclasses.fields(TrainConfig):
        for f in dataclasses.fields(section.default_factory):
            index[f.name] = (section.name, f)
    return index


def _check_field(f: dataclasses.Field, value: Any) -> None:
    meta = f.metadata
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{f.name} is {value!r}; accepted values: {', '.join(meta['choices'])}.")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{f.name} is {value}; it must be a finite number.")
    if "minimum" in meta and value < meta["minimum"]:
        raise ConfigError(f"{f.name} is {value}; it must be at least {meta['minimum']}.")
    if "below" in meta and value >= meta["below"]:
        raise ConfigError(f"{f.name} is {value}; it must be less than {meta['below']}.")


def coerce(name: str, annotation: Any, value: Any, source: str) -> Any:
    """Convert a YAML or CLI value to a resolved field type, or raise ConfigError naming the option."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        annotation = next(a for a in args if a is not type(None))
        return coerce(name, annotation, value, source)
    if origin is list:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ConfigError(f"{source}: option {name} must be a list, got {value!r}.")
        return [coerce(name, args[0], item, source) for item in items]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"{source}: option {name} must be true or false, got {value!r}.")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        raise ConfigError(f"{source}: option {name} must be an integer, got {value!r}.")
    if annotation is float:
        # PyYAML reads 1e-6 (no dot) as a string, so numeric strings are accepted here.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: option {name} must be a number, got {value!r}.")
    if annotation is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{source}: option {name} must be a string, got {value!r}.")
        return str(value)
    raise ConfigError(f"{source}: option {name} has an unsupported type {annotation!r}.")


def _unknown_option(name: str, source: str) -> ConfigError:
    close = difflib.get_close_matches(name, list(field_index()), n=1)
    hint = f" Did you mean {close[0]}?" if close else " Run `relupo train --help` for the list."
    return ConfigError(f"{source}: unknown option {name!r}.{hint}")


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Build a TrainConfig from an optional YAML file and flat {option: value} overrides.

    The YAML is read with `yaml.safe_load`, which never constructs Python objects. It may nest
    options in sections or list them flat; unknown options are an error with a suggestion.
    """
    config = TrainConfig()
    index = field_index()
    values: dict[str, tuple[Any, str]] = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found.") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: cannot read the config file ({error}).") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark is not None else ""
            if isinstance(error, yaml.constructor.ConstructorError):
                raise ConfigError(
                    f"{path}{where}: invalid YAML ({error.problem}). Config files are read with "
                    f"yaml.safe_load, which builds only mappings, lists, strings, numbers and booleans; "
                    f"remove the tag."
                ) from None
            raise ConfigError(f"{path}{where}: invalid YAML ({getattr(error, 'problem', error)}).") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the config file must be a mapping of options, got {type(raw).__name__}.")
        for key, value in raw.items():
            if key in ("model", "data", "objective", "training") and isinstance(value, dict):
                for name, item in value.items():
                    if name not in index:
                        raise _unknown_option(str(name), str(path))
                    if index[name][0] != key:
                        raise ConfigError(f"{path}: option {name} belongs in section {index[name][0]}, not {key}.")
                    values[name] = (item, str(path))
            elif key in index:
                values[key] = (value, str(path))
            else:
                raise _unknown_option(str(key), str(path))
    for name, value in (overrides or {}).items():
        if name not in index:
            raise _unknown_option(name, "command line")
        values[name] = (value, "command line")
    hints = {section.name: typing.get_type_hints(section.default_factory) for section in dataclasses.fields(TrainConfig)}
    for name, (value, source) in values.items():
        section_name, f = index[name]
        setattr(getattr(config, section_name), name, coerce(name, hints[section_name][name], value, source))
    return config


def _format_default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ", ".join(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def options_markdown() -> str:
    """Render every option with its section, default and help text as the body of docs/options.md."""
    lines = [
        "# relupo train options",
        "",
        "Generated from the help texts in `src/relupo/config.py`; regenerate with",
        "`python -c 'from relupo.config import options_markdown; print(options_markdown(), end=\"\")' > docs/options.md`.",
        "In YAML, put each option under its section or list it flat; on the command line, write",
        "`--option-name VALUE` (or `--option_name VALUE`).",
        "",
    ]
    defaults = TrainConfig().to_dict()
    for section in dataclasses.fields(TrainConfig):
        lines += [f"## {section.name}", "", "| option | default | description |", "|---|---|---|"]
        for f in dataclasses.fields(section.default_factory):
            default = defaults[section.name][f.name]
            if isinstance(default, str) and default.startswith(str(BUNDLED_DIR)):
                default = "bundled: " + default[len(str(BUNDLED_DIR)) + 1 :]
            shown = _format_default(default)
            lines.append(f"| `{f.name}` | `{shown}` | {f.metadata['help']} |")
        lines.append("")
    return "\n".join(lines)
