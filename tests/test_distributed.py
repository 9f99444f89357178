"""Two CPU processes (torch.distributed, gloo) give the same run as one process with the same global batch.

The two runs must agree on the trained weights, the held-out margins, the margin snapshots and
the metrics records. The 9 held-out pairs leave the last evaluation batch uneven across
processes, so the test also checks that gathering drops the padding duplicates.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from relupo.snapshots import read_snapshot

from relupo.config import load_config
from relupo.train import Trainer

OPTIONS = {
    "eval_split": 0.0,
    "max_length": 96,
    "max_prompt_length": 48,
    "max_steps": 3,
    "save_steps": 0,
    "eval_steps": 0,
    "snapshot_steps": 2,
    "per_device_eval_batch_size": 4,
    "gamma": 0.3,
    "skip_inactive_pairs": "on",
    "learning_rate": 1e-3,
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


TRAIN_PAIRS = 32
EVAL_PAIRS = 9


@pytest.fixture(scope="module")
def pairs_files(bundled_rows_file) -> tuple[Path, Path]:
    """Write the first 32 bundled rows as training pairs and the next 9 as held-out pairs."""
    rows_file = bundled_rows_file(TRAIN_PAIRS + EVAL_PAIRS)
    lines = rows_file.read_text(encoding="utf-8").splitlines(keepends=True)
    train_file = rows_file.with_name("train.jsonl")
    eval_file = rows_file.with_name("eval.jsonl")
    train_file.write_text("".join(lines[:TRAIN_PAIRS]), encoding="utf-8")
    eval_file.write_text("".join(lines[TRAIN_PAIRS:]), encoding="utf-8")
    return train_file, eval_file


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def read_eval_margins(run_dir: Path) -> dict[str, tuple[float, float]]:
    records = [json.loads(line) for line in (run_dir / "eval_margins.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == EVAL_PAIRS, f"{run_dir}: {len(records)} held-out margins for {EVAL_PAIRS} pairs"
    return {record["pair_id"]: (record["margin_before"], record["margin_after"]) for record in records}


def test_two_processes_match_one_process(tmp_path, pairs_files):
    # Two processes with 4 pairs each take batches 0 and 1 of the sampler for one optimizer step;
    # one process with 4 pairs and 2 accumulation steps takes the same two batches.
    train_file, eval_file = pairs_files
    data = {"train_data": str(train_file), "eval_data": str(eval_file)}
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in {**OPTIONS, **data, "per_device_train_batch_size": 4}.items()]
    environment = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "relupo", "train",
               f"--output-dir={tmp_path / 'two'}", *flags]
    launched = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "2 process(es)" in launched.stderr

    options = {**OPTIONS, **data, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}
    trainer = Trainer(load_config(None, {**options, "output_dir": str(tmp_path / "one")}))
    trainer.setup()
    trainer.train()

    two = load_file(tmp_path / "two" / "model" / "model.safetensors")
    one = load_file(tmp_path / "one" / "model" / "model.safetensors")
    assert two.keys() == one.keys()
    initial = load_file(Path(trainer.config.model.model_name_or_path) / "model.safetensors")
    for name, value in one.items():
        assert torch.allclose(two[name], value, atol=1e-6, rtol=1e-5), name
    assert any(not torch.equal(value, initial[name]) for name, value in one.items())

    margins_two = read_eval_margins(tmp_path / "two")
    margins_one = read_eval_margins(tmp_path / "one")
    assert margins_two.keys() == margins_one.keys()
    for pair_id, (before, after) in margins_one.items():
        assert margins_two[pair_id] == pytest.approx((before, after), abs=1e-5), pair_id

    for step in (0, 2, 3):
        snapshot_two = read_snapshot(tmp_path / "two" / "snapshots" / f"step-{step}.safetensors")
        snapshot_one = read_snapshot(tmp_path / "one" / "snapshots" / f"step-{step}.safetensors")
        assert snapshot_two.pair_ids == snapshot_one.pair_ids
        assert len(snapshot_one.pair_ids["train"]) == TRAIN_PAIRS
        for split in ("train", "eval"):
            for name in ("margins", "grad_weights"):
                assert torch.allclose(snapshot_two.splits[split][name], snapshot_one.splits[split][name], atol=1e-5), (step, split, name)

    records_two = read_metrics(tmp_path / "two")
    records_one = read_metrics(tmp_path / "one")
    assert [record.keys() for record in records_two] == [record.keys() for record in records_one], "metrics records differ (a second writer?)"
    for record_two, record_one in zip(records_two, records_one):
        for key, value in record_one.items():
            if key not in ("pairs_per_second", "tokens_per_second"):
                assert record_two[key] == pytest.approx(value, abs=1e-5), (record_one["step"], key)
