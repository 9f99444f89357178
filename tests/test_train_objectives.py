"""Every objective trains end to end; reference log-probs are computed once and then reused."""

import gzip
import json
import logging

import pytest

from relupo.config import load_config
from relupo.objectives import OBJECTIVES
from relupo.train import Trainer


@pytest.fixture(scope="module")
def slice_data(tmp_path_factory, bundled_data_path):
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    with gzip.open(bundled_data_path, "rt", encoding="utf-8") as source:
        path.write_text("".join(next(source) for _ in range(48)), encoding="utf-8")
    return path


def config_for(loss_type, tmp_path, data, **overrides):
    options = {
        "loss_type": loss_type, "train_data": str(data), "output_dir": str(tmp_path / loss_type),
        "max_length": 96, "max_prompt_length": 48, "per_device_train_batch_size": 8,
        "eval_split": 0.25, "max_steps": 2, "save_steps": 0, "learning_rate": 1e-3, **overrides,
    }
    return load_config(None, options)


@pytest.mark.parametrize("loss_type", sorted(OBJECTIVES))
def test_objective_trains(loss_type, tmp_path, slice_data):
    trainer = Trainer(config_for(loss_type, tmp_path, slice_data))
    trainer.setup()
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    summary = trainer.train()

    assert summary["steps"] == 2
    assert summary["loss_type"] == loss_type
    changed = any(not p.detach().equal(before[n]) for n, p in trainer.model.named_parameters())
    assert changed, f"{loss_type}: no weight changed"
    records = [json.loads(line) for line in (tmp_path / loss_type / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] == r["loss"] for r in records if "loss" in r), "NaN loss"


def test_reference_logps_computed_once(tmp_path, slice_data, caplog):
    caplog.set_level(logging.INFO, logger="relupo")
    cache_dir = str(tmp_path / "cache")
    first = Trainer(config_for("dpo", tmp_path / "first", slice_data, cache_dir=cache_dir))
    first.setup()
    assert "computing train reference log-probs for 36 pairs" in caplog.text
    assert "reused" not in caplog.text
    caplog.clear()

    second = Trainer(config_for("dpo", tmp_path / "second", slice_data, cache_dir=cache_dir))
    second.setup()
    assert "train reference log-probs reused from" in caplog.text
    assert "eval reference log-probs reused from" in caplog.text
    assert "computing" not in caplog.text
    for name in ("reference_chosen_logps", "reference_rejected_logps"):
        assert first.train_pairs.reference[name].equal(second.train_pairs.reference[name])


def test_reference_logps_equal_initial_policy_logps(tmp_path, slice_data):
    """At step 0 the policy is the reference model, so the DPO margin h is exactly 0 for every pair."""
    import torch

    from relupo.logps import pair_logps

    trainer = Trainer(config_for("dpo", tmp_path, slice_data))
    trainer.setup()
    batch = next(iter(trainer.train_loader))
    with torch.no_grad():
        logps = pair_logps(trainer.model, batch)
    assert torch.allclose(logps.chosen_logps, batch["reference_chosen_logps"], atol=1e-4)
    assert torch.allclose(logps.rejected_logps, batch["reference_rejected_logps"], atol=1e-4)


def test_reference_free_objective_computes_no_reference(tmp_path, slice_data, caplog):
    caplog.set_level(logging.INFO, logger="relupo")
    trainer = Trainer(config_for("repo", tmp_path, slice_data))
    trainer.setup()
    assert "reference log-probs" not in caplog.text
    assert trainer.train_pairs.reference == {}


def test_gamma_schedule_is_logged_per_step(tmp_path, slice_data):
    config = config_for("repo", tmp_path, slice_data, max_steps=3, gamma_schedule="linear", gamma_start=1.0, gamma_end=0.2)
    trainer = Trainer(config)
    trainer.setup()
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "repo" / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert [r["gamma"] for r in records] == pytest.approx([1.0, 0.6, 0.2])


def test_sft_term_is_logged(tmp_path, slice_data):
    trainer = Trainer(config_for("repo", tmp_path, slice_data, sft_weight=0.5))
    trainer.setup()
    trainer.train()
    record = json.loads((tmp_path / "repo" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["sft_loss"] > 0
