"""Non-finite guards: a NaN loss skips its optimizer step, names the pairs, and stops the run when it repeats."""

import dataclasses
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from relupo import objectives
from relupo.config import load_config
from relupo.errors import ConfigError, RelupoError
from relupo.numerics import NonFiniteGuard
from relupo.train import Trainer


@pytest.fixture(scope="module")
def pairs_file(bundled_rows_file) -> Path:
    """The first 48 bundled HH-RLHF rows: 6 batches of 8 pairs."""
    return bundled_rows_file(48)


@pytest.fixture(autouse=True)
def one_thread():
    """Run on one thread: on a shared 2-core machine, more threads mostly wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_trainer(output_dir: Path, data: Path, **overrides) -> Trainer:
    options = {
        "train_data": str(data),
        "output_dir": str(output_dir),
        "max_length": 96,
        "max_prompt_length": 48,
        "per_device_train_batch_size": 8,
        "eval_split": 0.0,
        "lr_scheduler_type": "constant",
        "warmup_ratio": 0.0,
        "save_steps": 0,
        "snapshot_steps": 0,
        **overrides,
    }
    trainer = Trainer(load_config(None, options))
    trainer.setup()
    return trainer


def inject_nan(monkeypatch, trainer: Trainer, steps: set[int]) -> None:
    """Make the repo loss of the first pair of each listed optimizer step NaN.

    The first objective call of a step scores that step's first pair, whether the micro-batch is
    scored at once or one pair at a time.
    """
    real = objectives.OBJECTIVES["repo"]
    poisoned_steps = set()

    def function(logps, **hyperparameters):
        output = real.function(logps, **hyperparameters)
        step = trainer.state.global_step + 1
        if step not in steps or step in poisoned_steps:
            return output
        poisoned_steps.add(step)
        poison = torch.zeros_like(output.losses)
        poison[0] = float("nan")
        return dataclasses.replace(output, losses=output.losses + poison)

    monkeypatch.setitem(objectives.OBJECTIVES, "repo", dataclasses.replace(real, function=function))


def first_pair_of_step(trainer: Trainer, step: int) -> str:
    trainer.batch_sampler.set_epoch(0)
    batch = list(trainer.batch_sampler)[step - 1]
    return trainer.train_rows[batch[0]]["pair_id"]


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


def test_nan_step_skipped_weights_unchanged(tmp_path, pairs_file, monkeypatch, caplog):
    clean = make_trainer(tmp_path / "clean", pairs_file, max_steps=2)
    clean.train()

    faulty = make_trainer(tmp_path / "faulty", pairs_file, max_steps=3)
    inject_nan(monkeypatch, faulty, {3})
    bad_pair = first_pair_of_step(faulty, 3)
    with caplog.at_level(logging.WARNING, logger="relupo.numerics"):
        faulty.train()

    expected = weights(clean)
    for name, parameter in weights(faulty).items():
        assert torch.equal(parameter, expected[name]), name
    assert faulty.state.global_step == 3
    assert faulty.state.batches_in_epoch == 3
    assert faulty.scheduler.last_epoch == 2
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [
        "step 3: the loss or log-probs are not finite (NaN or inf); skipped the optimizer step "
        f"(1 of at most 3 in a row); pairs: {bad_pair}"
    ]


def test_metrics_leave_out_skipped_step(tmp_path, pairs_file, monkeypatch):
    trainer = make_trainer(tmp_path / "run", pairs_file, max_steps=4)
    inject_nan(monkeypatch, trainer, {2})
    trainer.train()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in lines]
    assert steps == [1, 3, 4]
    assert "NaN" not in "".join(lines)


def test_repeated_nan_stops_run_and_keeps_checkpoint(tmp_path, pairs_file, monkeypatch):
    trainer = make_trainer(tmp_path / "run", pairs_file, max_steps=6, save_steps=2, max_nonfinite_steps=3)
    inject_nan(monkeypatch, trainer, {3, 4, 5})
    with pytest.raises(RelupoError) as error:
        trainer.train()
    assert str(error.value) == (
        "step 5: the loss or log-probs are not finite for 3 optimizer steps in a row (max_nonfinite_steps 3), "
        "so training stopped; the checkpoints written so far are kept. Lower learning_rate, check the pairs "
        "named in the warnings, or train in float32 without bf16/fp16, then continue with --resume true."
    )
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-2", "step-4"]
    good = load_file(tmp_path / "run" / "checkpoints" / "step-2" / "trainable.safetensors")
    newest = load_file(tmp_path / "run" / "checkpoints" / "step-4" / "trainable.safetensors")
    for name, tensor in newest.items():
        assert torch.isfinite(tensor).all(), name
        assert torch.equal(tensor, good[name]), name
    assert not (tmp_path / "run" / "model").exists()


def test_guard_counts_gradient_faults_in_a_row():
    guard = NonFiniteGuard(Accelerator(cpu=True), max_nonfinite_steps=2)
    assert guard.allow_step(1, 0.5)
    assert not guard.allow_step(2, math.inf)
    assert guard.allow_step(3, 0.5)
    assert guard.consecutive_skips == 0
    assert not guard.allow_step(4, math.nan)
    with pytest.raises(RelupoError, match=r"^step 5: the gradient norm is not finite for 2 optimizer steps in a row"):
        guard.allow_step(5, math.nan)
    assert guard.skipped_steps == 3


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one process-wide state whose mixed precision cannot change once set."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_fp16_on_cpu_rejected(tmp_path, pairs_file, fresh_accelerator_state):
    with pytest.raises(ConfigError) as error:
        make_trainer(tmp_path / "run", pairs_file, max_steps=1, fp16=True)
    assert str(error.value) == (
        "fp16 needs loss scaling, which accelerate provides only on a GPU or other accelerator; this run is on "
        "cpu. Use bf16 (which needs no loss scaling) or float32 instead."
    )


def test_skip_leaves_loss_scaler_ready_for_next_step():
    """fp16: a skipped step must clear the scaler's unscale record, or the next unscale_ raises."""
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    accelerator = SimpleNamespace(device=torch.device("cpu"), num_processes=1, scaler=scaler)
    guard = NonFiniteGuard(accelerator, max_nonfinite_steps=3)
    before = model.weight.detach().clone()

    loss = model(torch.ones(1, 2)).sum() * math.nan
    logps = objectives.PairLogps(loss.detach().reshape(1), torch.tensor([-1.0]), torch.ones(1), torch.ones(1))
    output = objectives.ObjectiveOutput(loss.reshape(1), torch.zeros(1), torch.ones(1))
    assert not guard.check_micro_batch(logps, output, loss, lambda positions: [f"pairs.jsonl:{p + 1}" for p in positions])
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    assert not guard.allow_step(1, math.nan)
    optimizer.zero_grad()
    assert scaler.get_scale() == 2.0

    scaler.scale(model(torch.ones(1, 2)).sum()).backward()
    scaler.unscale_(optimizer)
    assert guard.allow_step(2, 1.0)
    scaler.step(optimizer)
    scaler.update()
    assert not torch.equal(model.weight, before)


def test_fp16_overflow_left_to_loss_scaler(caplog):
    """A gradient overflow with a finite loss is the scaler's to handle, not a non-finite step."""
    accelerator = SimpleNamespace(device=torch.device("cpu"), num_processes=1, scaler=torch.amp.GradScaler("cpu"))
    guard = NonFiniteGuard(accelerator, max_nonfinite_steps=1)
    with caplog.at_level(logging.WARNING, logger="relupo.numerics"):
        assert guard.allow_step(1, math.inf)
        assert guard.allow_step(2, math.inf)
    assert guard.skipped_steps == 0
    assert caplog.records == []
