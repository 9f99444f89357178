"""Loading the tokenizer and model for training, and saving the final model."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from relupo.config import ModelConfig
from relupo.errors import RelupoError

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _loading_error(name: str, error: Exception) -> RelupoError:
    text = str(error)
    if "trust_remote_code" in text:
        return RelupoError(
            f"{name}: this model needs its own Python code to load. Read that code, then set "
            f"trust_remote_code: true in the model section (or pass --trust-remote-code true)."
        )
    first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return RelupoError(
        f"{name}: cannot load the model or tokenizer ({first_line}). Check that model_name_or_path "
        f"is a local directory in Hugging Face format or a hub id that is reachable."
    )


def load_tokenizer(config: ModelConfig) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(config.model_name_or_path, trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError) as error:
        raise _loading_error(config.model_name_or_path, error) from None


def load_model(config: ModelConfig) -> torch.nn.Module:
    """Load the causal LM with every dropout set to 0, optionally wrapped with LoRA adapters.

    Dropout is off because the objective compares log-probs of chosen and rejected responses:
    random masks would add noise to the margin that has nothing to do with the preference.
    """
    name = config.model_name_or_path
    try:
        model_config = AutoConfig.from_pretrained(name, trust_remote_code=config.trust_remote_code)
        for key, value in model_config.to_dict().items():
            if "dropout" in key and isinstance(value, float):
                setattr(model_config, key, 0.0)
        model = AutoModelForCausalLM.from_pretrained(
            name, config=model_config, dtype=DTYPES[config.dtype], trust_remote_code=config.trust_remote_code
        )
    except (OSError, ValueError) as error:
        raise _loading_error(name, error) from None
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0

    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if config.use_lora:
        model = _add_lora(model, config)
    return model


def _add_lora(model: torch.nn.Module, config: ModelConfig) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = config.lora_target_modules
    lora_config = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=targets[0] if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(model, lora_config)
    except ValueError as error:
        raise RelupoError(f"lora_target_modules {targets}: {error}") from None
    if config.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def save_final_model(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, directory: Path, merge_lora: bool
) -> Path:
    """Save weights (safetensors) and tokenizer; with LoRA, the adapter, plus merged weights if asked.

    Returns the directory that loads with AutoModelForCausalLM.from_pretrained: `directory` for
    full training or merged LoRA, otherwise the adapter directory (which loads with peft).
    """
    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        adapter_dir = directory / "adapter"
        model.save_pretrained(adapter_dir, safe_serialization=True)
        tokenizer.save_pretrained(adapter_dir)
        if not merge_lora:
            return adapter_dir
        model = model.merge_and_unload()
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory
