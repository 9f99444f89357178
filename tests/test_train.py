"""Training runs on the bundled model and real HH-RLHF pairs: resume, LoRA, saved model, outputs."""

import gzip
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import relupo.checkpoint
from relupo.config import load_config
from relupo.train import Trainer


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, bundled_data_path) -> Path:
    """The first 96 bundled HH-RLHF rows, as a plain JSONL file."""
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    with gzip.open(bundled_data_path, "rt", encoding="utf-8") as source:
        lines = [next(source) for _ in range(96)]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def small_config(output_dir: Path, data: Path, **overrides):
    options = {
        "train_data": str(data),
        "output_dir": str(output_dir),
        "max_length": 128,
        "max_prompt_length": 64,
        "per_device_train_batch_size": 8,
        "eval_split": 0.25,
        "num_train_epochs": 2,
        "save_steps": 3,
        "eval_steps": 4,
        "learning_rate": 1e-3,
        **overrides,
    }
    return load_config(None, options)


def run(config):
    trainer = Trainer(config)
    trainer.setup()
    return trainer, trainer.train()


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


TIMING_KEYS = ("pairs_per_second", "tokens_per_second")


def without_timing(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in TIMING_KEYS}


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("stop_step", [6, 9, 12])
def test_resume_matches_uninterrupted_run(tmp_path, small_data, monkeypatch, stop_step):
    """9 batches per epoch: stop mid-epoch 0, exactly at its end, and mid-epoch 1."""
    straight, _ = run(small_config(tmp_path / "straight", small_data))
    expected = {name: p.detach().clone() for name, p in straight.model.named_parameters()}

    real_save = relupo.checkpoint.save_checkpoint

    def save_then_stop(*args, **kwargs):
        path = real_save(*args, **kwargs)
        if args[4].global_step == stop_step:
            raise Interrupted
        return path

    monkeypatch.setattr(relupo.checkpoint, "save_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        run(small_config(tmp_path / "resumed", small_data))
    monkeypatch.setattr(relupo.checkpoint, "save_checkpoint", real_save)

    resumed, summary = run(small_config(tmp_path / "resumed", small_data, resume=True))
    assert resumed.state.global_step == straight.state.global_step == 18
    for name, parameter in resumed.model.named_parameters():
        assert torch.equal(parameter, expected[name]), name

    straight_metrics = read_metrics(tmp_path / "straight")
    resumed_metrics = read_metrics(tmp_path / "resumed")
    assert [r["step"] for r in resumed_metrics] == [r["step"] for r in straight_metrics]
    assert without_timing(resumed_metrics[-1]) == without_timing(straight_metrics[-1])
    assert summary["eval_before"] == json.loads((tmp_path / "straight" / "summary.json").read_text())["eval_before"]


def test_checkpoints_keep_only_newest(tmp_path, small_data):
    run(small_config(tmp_path / "run", small_data, save_total_limit=2))
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step-15", "step-18"]


def test_lora_changes_only_adapter_weights(tmp_path, small_data):
    config = small_config(tmp_path / "lora", small_data, use_lora=True, lora_r=4, max_steps=3, save_steps=0)
    trainer = Trainer(config)
    trainer.setup()
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()

    lora_names = [name for name in before if "lora_" in name]
    assert lora_names
    for name, parameter in trainer.model.named_parameters():
        if "lora_" in name:
            continue
        assert torch.equal(parameter, before[name]), f"base weight {name} changed"
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters() if "lora_B" in n)
    adapter = tmp_path / "lora" / "model" / "adapter"
    assert (adapter / "adapter_model.safetensors").exists()
    assert all("lora_" in key for key in load_file(adapter / "adapter_model.safetensors"))


def test_saved_model_reproduces_final_margins(tmp_path, small_data):
    trainer, summary = run(small_config(tmp_path / "run", small_data, max_steps=4, save_steps=0))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    trainer.model = trainer.accelerator.prepare(reloaded)
    result = trainer._evaluate("reloaded")

    saved = [json.loads(line) for line in (tmp_path / "run" / "eval_margins.jsonl").read_text().splitlines()]
    assert len(saved) == result.margins.shape[0] == summary["eval_pairs"]
    for row, margin in zip(saved, result.margins.tolist()):
        assert margin == pytest.approx(row["margin_after"], abs=1e-5)
    assert result.accuracy == pytest.approx(summary["eval_after"]["accuracy"])


def test_metrics_have_every_documented_name(tmp_path, small_data):
    run(small_config(tmp_path / "run", small_data, max_steps=2, save_steps=0))
    records = read_metrics(tmp_path / "run")
    step = records[0]
    for name in ("loss", "margin", "active_fraction", "accuracy", "logps/chosen", "logps/rejected", "gamma",
                 "learning_rate", "grad_norm", "pairs_per_second", "tokens_per_second"):
        assert name in step, name
    assert step["gamma"] == 0.5
    assert 0.0 <= step["active_fraction"] <= 1.0
    assert records[-1]["step"] == 2
    assert "eval/accuracy" in records[-1]


def test_existing_run_is_not_overwritten(tmp_path, small_data):
    from relupo.errors import ConfigError

    run(small_config(tmp_path / "run", small_data, max_steps=1, save_steps=0))
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(small_config(tmp_path / "run", small_data, max_steps=1)).setup()


def test_resume_rejects_changed_config(tmp_path, small_data):
    from relupo.errors import ConfigError

    run(small_config(tmp_path / "run", small_data, max_steps=3, save_steps=3))
    with pytest.raises(ConfigError, match=r"learning_rate \(0.001 -> 0.002\)"):
        Trainer(small_config(tmp_path / "run", small_data, max_steps=3, save_steps=3, resume=True, learning_rate=2e-3)).setup()
