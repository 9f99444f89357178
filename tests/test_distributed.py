"""Two CPU processes (torch.distributed, gloo) train to the same weights as one process with the same global batch."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from relupo.config import load_config
from relupo.train import Trainer

OPTIONS = {
    "eval_split": 0.0,
    "max_length": 96,
    "max_prompt_length": 48,
    "max_steps": 3,
    "save_steps": 0,
    "eval_steps": 0,
    "snapshot_steps": 0,
    "gamma": 0.3,
    "skip_inactive_pairs": "on",
    "learning_rate": 1e-3,
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def pairs_file(bundled_rows_file) -> Path:
    return bundled_rows_file(32)


def test_two_processes_match_one_process(tmp_path, pairs_file):
    # Two processes with 4 pairs each take batches 0 and 1 of the sampler for one optimizer step;
    # one process with 4 pairs and 2 accumulation steps takes the same two batches.
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in {**OPTIONS, "per_device_train_batch_size": 4}.items()]
    environment = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "relupo", "train",
               f"--train-data={pairs_file}", f"--output-dir={tmp_path / 'two'}", *flags]
    launched = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "2 process(es)" in launched.stderr

    options = {**OPTIONS, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}
    trainer = Trainer(load_config(None, {**options, "train_data": str(pairs_file), "output_dir": str(tmp_path / "one")}))
    trainer.setup()
    trainer.train()

    two = load_file(tmp_path / "two" / "model" / "model.safetensors")
    one = load_file(tmp_path / "one" / "model" / "model.safetensors")
    assert two.keys() == one.keys()
    initial = load_file(Path(trainer.config.model.model_name_or_path) / "model.safetensors")
    for name, value in one.items():
        assert torch.allclose(two[name], value, atol=1e-6, rtol=1e-5), name
    assert any(not torch.equal(value, initial[name]) for name, value in one.items())
