"""Kill `relupo train` with SIGKILL at several points, resume each time, and get the uninterrupted result.

Each run is a real `relupo train` process. A small driver can pause the process inside a
checkpoint write or inside the final model save, so that the kill lands exactly there. The other
kills land wherever training is when a metrics record appears.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import relupo.checkpoint
import relupo.run_files
from relupo.cli import main
from relupo.errors import RelupoError

TIMING_KEYS = ("pairs_per_second", "tokens_per_second")
STARTUP_TIMEOUT = 240  # seconds a run may take to reach a kill point on a busy 2-core machine

# Runs `relupo train` with optional pauses: RELUPO_TEST_PAUSE_IN_CHECKPOINT=N sleeps after the
# weights of checkpoint N are written into .tmp-step-N; RELUPO_TEST_PAUSE_IN_FINAL_SAVE=1 sleeps
# after the final weights are written, before summary.json.
DRIVER = r"""
import os, sys, time
import relupo.checkpoint, relupo.train

pause_step = os.environ.get("RELUPO_TEST_PAUSE_IN_CHECKPOINT")
if pause_step:
    real_save_file = relupo.checkpoint.save_file
    def save_file_then_pause(tensors, path, *args, **kwargs):
        real_save_file(tensors, path, *args, **kwargs)
        if path.name == "trainable.safetensors" and path.parent.name == f".tmp-step-{pause_step}":
            time.sleep(600)
    relupo.checkpoint.save_file = save_file_then_pause

if os.environ.get("RELUPO_TEST_PAUSE_IN_FINAL_SAVE"):
    real_save_final_model = relupo.train.save_final_model
    def save_final_model_then_pause(*args, **kwargs):
        real_save_final_model(*args, **kwargs)
        time.sleep(600)
    relupo.train.save_final_model = save_final_model_then_pause

from relupo.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def data_file(bundled_rows_file) -> Path:
    """The first 96 bundled HH-RLHF rows: 72 train pairs (9 batches of 8) and 24 held out."""
    return bundled_rows_file(96)


def train_arguments(output_dir: Path, data: Path) -> list[str]:
    return [
        "train", "--train-data", str(data), "--output-dir", str(output_dir),
        "--max-length", "96", "--max-prompt-length", "48", "--per-device-train-batch-size", "8",
        "--eval-split", "0.25", "--num-train-epochs", "1", "--save-steps", "2", "--eval-steps", "0",
        "--snapshot-steps", "0", "--learning-rate", "1e-3",
    ]


def start(arguments: list[str], log: Path, **pauses: str) -> subprocess.Popen:
    """Start a run whose output goes to `log` (a file, so that a full pipe never blocks the run)."""
    # One thread per run: on a shared 2-core machine, more threads mostly wait on each other.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", **pauses}
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-c", DRIVER, *arguments], env=env, stdout=output, stderr=subprocess.STDOUT)
    process.log = log
    return process


def kill_when(process: subprocess.Popen, ready) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"run ended (status {process.returncode}) before the kill point:\n{process.log.read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("run did not reach the kill point in time")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def finish(process: subprocess.Popen) -> str:
    process.wait(timeout=STARTUP_TIMEOUT)
    output = process.log.read_text()
    assert process.returncode == 0, output
    return output


def metrics_reached(output_dir: Path, step: int):
    def ready() -> bool:
        path = output_dir / "metrics.jsonl"
        if not path.exists():
            return False
        lines = [line for line in path.read_text().splitlines() if line.endswith("}")]
        return any(json.loads(line)["step"] >= step for line in lines)

    return ready


def last_step_record(output_dir: Path) -> dict:
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    train_records = [record for record in records if "loss" in record]
    return {key: value for key, value in train_records[-1].items() if key not in TIMING_KEYS}


def train_in_process(arguments: list[str]) -> None:
    """Run the uninterrupted reference here, on one thread like the killed runs, to save a process start."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(arguments) == 0
    finally:
        torch.set_num_threads(threads)


def test_kills_and_resumes_match_uninterrupted_run(tmp_path, data_file):
    reference = tmp_path / "reference"
    train_in_process(train_arguments(reference, data_file))

    run = tmp_path / "run"
    arguments = train_arguments(run, data_file)
    resume = [*arguments, "--resume", "true"]
    checkpoints = run / "checkpoints"

    # 1. Before the first checkpoint: --resume starts again from step 0.
    kill_when(start(arguments, tmp_path / "1.log"), metrics_reached(run, 1))

    # 2. Inside the write of checkpoint 4: its weights are on disk, the rest is not.
    kill_when(start(resume, tmp_path / "2.log", RELUPO_TEST_PAUSE_IN_CHECKPOINT="4"), lambda: (checkpoints / ".tmp-step-4" / "trainable.safetensors").exists())
    assert (checkpoints / ".tmp-step-4").is_dir()
    assert sorted(p.name for p in checkpoints.iterdir() if not p.name.startswith(".")) == ["step-2"]

    # 3. Between checkpoints 6 and 8; the resume first removes the partial .tmp-step-4.
    process = start(resume, tmp_path / "3.log")
    kill_when(process, metrics_reached(run, 7))
    assert not (checkpoints / ".tmp-step-4").exists()
    assert f"removed {checkpoints / '.tmp-step-4'}, an incomplete checkpoint left by a killed run" in process.log.read_text()

    # 4. After the final weights are written, before summary.json.
    kill_when(start(resume, tmp_path / "4.log", RELUPO_TEST_PAUSE_IN_FINAL_SAVE="1"), lambda: (run / "model" / "model.safetensors").exists())
    assert not (run / "summary.json").exists()

    finish(start(resume, tmp_path / "5.log"))

    expected = load_file(reference / "model" / "model.safetensors")
    resumed = load_file(run / "model" / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        assert torch.equal(resumed[name], tensor), name
    assert last_step_record(run) == last_step_record(reference)
    assert last_step_record(run)["step"] == 9
    summary, expected_summary = (json.loads((d / "summary.json").read_text()) for d in (run, reference))
    assert summary["eval_after"] == expected_summary["eval_after"]
    assert [p.name for p in checkpoints.iterdir()] and not [p for p in checkpoints.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------------------------------------
# Unwritable output directories and full disks
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_trainer(output_dir: Path, data: Path, **overrides):
    from relupo.config import load_config
    from relupo.train import Trainer

    options = {
        "train_data": str(data), "output_dir": str(output_dir), "max_length": 96, "max_prompt_length": 48,
        "per_device_train_batch_size": 8, "eval_split": 0.0, "max_steps": 4, "save_steps": 2, "snapshot_steps": 0,
        **overrides,
    }
    trainer = Trainer(load_config(None, options))
    trainer.setup()
    return trainer


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_unwritable_output_dir_fails_at_start(tmp_path, data_file):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RelupoError) as error:
        small_trainer(blocker / "run", data_file)
    assert str(error.value) == f"{blocker / 'run'}: output_dir is not writable (Not a directory); choose another --output-dir."


def test_full_disk_at_start(tmp_path, data_file, monkeypatch):
    monkeypatch.setattr(relupo.run_files.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**30, 2**30, 0))
    with pytest.raises(RelupoError, match=r"^\S+/run: 0 MiB free, but about [1-9]\d* MiB is needed for the checkpoints and the final model; free disk space or choose another --output-dir\.$"):
        small_trainer(tmp_path / "run", data_file)


def test_full_disk_during_checkpoint(tmp_path, data_file, monkeypatch, one_thread):
    trainer = small_trainer(tmp_path / "run", data_file)
    real_save_file = relupo.checkpoint.save_file

    def fail_at_step_4(tensors, path, *args, **kwargs):
        if path.parent.name == ".tmp-step-4":
            no_space()
        real_save_file(tensors, path, *args, **kwargs)

    monkeypatch.setattr(relupo.checkpoint, "save_file", fail_at_step_4)
    with pytest.raises(RelupoError) as error:
        trainer.train()
    checkpoints = tmp_path / "run" / "checkpoints"
    assert str(error.value) == (
        f"{checkpoints / 'step-4'}: failed to write the checkpoint (No space left on device); the partial copy was "
        f"removed and {checkpoints / 'step-2'} is the newest complete checkpoint. Free disk space or fix the "
        "permissions of output_dir, then continue with --resume true."
    )
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-2"]


def test_full_disk_during_metrics_write(tmp_path, data_file, monkeypatch, one_thread):
    trainer = small_trainer(tmp_path / "run", data_file)
    monkeypatch.setattr(relupo.run_files, "open", no_space, raising=False)
    with pytest.raises(RelupoError) as error:
        trainer.train()
    assert str(error.value) == (
        f"{tmp_path / 'run' / 'metrics.jsonl'}: failed to write (No space left on device); free disk space or fix "
        "the permissions of output_dir, then continue with --resume true."
    )


def test_full_disk_during_final_model_save(tmp_path, data_file, monkeypatch, one_thread):
    trainer = small_trainer(tmp_path / "run", data_file, save_steps=4)
    monkeypatch.setattr("transformers.PreTrainedModel.save_pretrained", no_space)
    with pytest.raises(RelupoError) as error:
        trainer.train()
    assert str(error.value) == (
        f"{tmp_path / 'run' / 'model'}: failed to write (No space left on device); free disk space or fix "
        "the permissions of output_dir, then continue with --resume true."
    )
    assert not (tmp_path / "run" / "summary.json").exists()
    # The last checkpoint contains every step, so the resumed run only saves the model.
    monkeypatch.undo()
    resumed = small_trainer(tmp_path / "run", data_file, save_steps=4, resume=True)
    assert resumed.state.global_step == 4
    summary = resumed.train()
    assert summary["steps"] == 4
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()


def test_cli_reports_full_disk_in_one_line(tmp_path, data_file, monkeypatch, capsys):
    monkeypatch.setattr(relupo.run_files.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**30, 2**30, 0))
    assert main(train_arguments(tmp_path / "run", data_file)) == 2
    stderr = capsys.readouterr().err.splitlines()
    assert [line for line in stderr if line.startswith("relupo: error:")] == [stderr[-1]]
    assert "0 MiB free" in stderr[-1]
