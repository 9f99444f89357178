"""The training loop: set-up, then one visible step at a time, on accelerate.

One process on CPU or GPU:
    relupo train --config run.yaml
Several GPUs or processes (DDP, FSDP, DeepSpeed through an accelerate config file):
    accelerate launch --config_file configs/accelerate/ddp.yaml -m relupo train --config run.yaml

The trainer owns no math: log-probs come from `relupo.logps`, losses from `relupo.objectives`,
metric definitions from `relupo.metrics`, checkpoint files from `relupo.checkpoint`.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import get_scheduler

from relupo import checkpoint
from relupo.config import TrainConfig
from relupo.data import load_or_tokenize, load_pairs
from relupo.data.tokenize import default_cache_dir
from relupo.data.batching import LengthGroupedBatchSampler, PairCollator, pair_lengths
from relupo.errors import ConfigError, RelupoError
from relupo.evaluate import EvalResult, evaluate_pairs
from relupo.logps import pair_logps
from relupo.metrics import PairStats, summarize
from relupo.modeling import load_model, load_tokenizer, save_final_model
from relupo.numerics import NonFiniteGuard, check_mixed_precision
from relupo.run_files import append_line, check_free_space, read_json_lines, replace_atomically, write_failed
from relupo.gamma import gamma_for_step
from relupo.objectives import OBJECTIVES, ObjectiveOutput, PairLogps, compute_objective, resolve_hyperparameters, sft_loss
from relupo.reference import load_or_compute_reference_logps, reference_cache_path
from relupo.step import PairStep, row_width_multiple
from relupo.snapshots import SnapshotRecorder

logger = logging.getLogger(__name__)

# Files and directories a run writes; --overwrite-output-dir removes exactly these.
RUN_OUTPUTS = ("config.yaml", "metrics.jsonl", "summary.json", "eval_before.safetensors", "eval_margins.jsonl", "checkpoints", "model", "snapshots")
SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


class IndexedPairs(Dataset):
    """A tokenized `datasets.Dataset` whose items also carry their row index (the pair's key in logs)."""

    def __init__(self, rows: Any) -> None:
        self.rows = rows
        self.reference: dict[str, torch.Tensor] = {}  # name -> (len(rows),) reference log-prob sums

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {**self.rows[index], "index": index}
        for name, values in self.reference.items():
            item[name] = values[index]
        return item


class Trainer:
    """Train one configuration: `setup()` loads everything, `train()` runs the loop and saves."""

    def __init__(self, config: TrainConfig) -> None:
        config.validate()
        self.config = config
        self.output_dir = Path(config.training.output_dir)
        self.objective = OBJECTIVES[config.objective.loss_type]
        self.state = checkpoint.TrainerState()

    # ----------------------------------------------------------------------------------------- set-up

    def setup(self) -> None:
        config, training = self.config, self.config.training
        self.accelerator = Accelerator(
            gradient_accumulation_steps=training.gradient_accumulation_steps,
            mixed_precision=mixed_precision(training),
        )
        check_mixed_precision(self.accelerator, training)
        set_seed(training.seed)
        self._prepare_output_dir()

        self.tokenizer = load_tokenizer(config.model)
        self.data_fingerprints: dict[str, str] = {}
        loaded = load_pairs(config.data, seed=training.seed)
        self.train_rows, train_report = self._tokenize(loaded.train, "train")
        self.eval_rows, _ = self._tokenize(loaded.eval, "eval") if loaded.eval else (None, None)
        if len(self.train_rows) == 0:
            raise RelupoError(f"{config.data.train_data}: no usable training pairs remain ({train_report}).")

        self.model = load_model(config.model)
        if self.accelerator.is_main_process:
            self._check_free_space()
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=training.learning_rate,
            betas=(training.adam_beta1, training.adam_beta2),
            eps=training.adam_epsilon,
            weight_decay=training.weight_decay,
        )
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.collator = PairCollator(
            pad_token_id=pad_id if pad_id is not None else 0,
            pad_to_multiple_of=row_width_multiple(self.accelerator.device.type, self.accelerator.mixed_precision),
        )
        self.train_pairs = IndexedPairs(self.train_rows)
        self.eval_pairs = IndexedPairs(self.eval_rows) if self.eval_rows is not None else None
        if self.objective.needs_reference:
            self._add_reference_logps()
        self.batch_sampler = LengthGroupedBatchSampler(pair_lengths(self.train_rows), training.per_device_train_batch_size, seed=training.seed)
        train_loader = DataLoader(
            self.train_pairs,
            batch_sampler=self.batch_sampler,
            collate_fn=self.collator,
            num_workers=training.dataloader_num_workers,
        )
        self.model, self.optimizer, self.train_loader = self.accelerator.prepare(self.model, self.optimizer, train_loader)
        self.eval_loader = self._eval_loader(self.eval_pairs) if self.eval_pairs is not None else None
        self.pair_step = PairStep(self.accelerator, self.model, config, lambda: self.state)
        self.guard = NonFiniteGuard(self.accelerator, training.max_nonfinite_steps)
        self.snapshots = SnapshotRecorder(self) if training.snapshot_steps else None

        steps_per_epoch = math.ceil(len(self.train_loader) / training.gradient_accumulation_steps)
        self.total_steps = training.max_steps if training.max_steps > 0 else math.ceil(training.num_train_epochs * steps_per_epoch)
        # The scheduler is stepped once per optimizer step by this loop, not by accelerate, which
        # would step it once per process and shorten the schedule under multi-process training.
        self.scheduler = get_scheduler(
            SCHEDULERS[training.lr_scheduler_type],
            self.optimizer,
            num_warmup_steps=round(training.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        if training.resume:
            self._resume()
        self._log_start(loaded, train_report)

    def _tokenize(self, pairs: list, split: str) -> tuple[Any, Any]:
        tokenized = load_or_tokenize(pairs, self.tokenizer, self.config.data)
        logger.info("%s pairs tokenized%s: %s", split, " (from cache)" if tokenized.cache_hit else "", tokenized.report.summary())
        self.data_fingerprints[split] = tokenized.cache_path.name
        return tokenized.dataset, tokenized.report

    def _eval_loader(self, pairs: IndexedPairs) -> DataLoader:
        batches = LengthGroupedBatchSampler(pair_lengths(pairs.rows), self.config.training.per_device_eval_batch_size, shuffle=False)
        loader = DataLoader(pairs, batch_sampler=batches, collate_fn=self.collator)
        return self.accelerator.prepare(loader)

    def _add_reference_logps(self) -> None:
        """Attach reference log-probs of the untrained model to the train and eval pairs."""
        settings = {"dtype": self.config.model.dtype, "bf16": self.config.training.bf16, "fp16": self.config.training.fp16}
        cache_dir = Path(self.config.data.cache_dir or default_cache_dir())
        # NOTE: the model is not yet wrapped by accelerate here; under DeepSpeed ZeRO-3 this
        # forward pass would need the prepared engine.
        model = self.model.to(self.accelerator.device)
        for split, pairs in (("train", self.train_pairs), ("eval", self.eval_pairs)):
            if pairs is None:
                continue
            path = reference_cache_path(cache_dir, self.data_fingerprints[split], self.config.model.model_name_or_path, settings)
            pairs.reference = load_or_compute_reference_logps(path, model, self._eval_loader(pairs), self.accelerator, len(pairs), split)

    def _prepare_output_dir(self) -> None:
        training = self.config.training
        holds_run = (self.output_dir / "config.yaml").exists()
        if holds_run and not (training.resume or training.overwrite_output_dir):
            raise ConfigError(
                f"{self.output_dir}: output_dir already holds a run. Pass --resume true to continue it, "
                f"--overwrite-output-dir true to replace it, or choose another --output-dir."
            )
        if training.resume and holds_run:
            self._check_resume_config()

        # Every process must look at output_dir before the main process writes config.yaml into it,
        # or a slower process finds that file and stops with "already holds a run".
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return

        if training.overwrite_output_dir:
            for name in RUN_OUTPUTS:
                path = self.output_dir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            probe = self.output_dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as error:
            raise RelupoError(f"{self.output_dir}: output_dir is not writable ({error.strerror}); choose another --output-dir.") from None

        if training.resume:
            for path in checkpoint.remove_incomplete_checkpoints(self.output_dir):
                logger.warning("removed %s, an incomplete checkpoint left by a killed run", path)
        if not holds_run or not training.resume:
            replace_atomically(self.output_dir / "config.yaml", lambda path: path.write_text(self.config.to_yaml()))

    def _check_free_space(self) -> None:
        """Fail at start when output_dir cannot hold the checkpoints and the final model."""
        parameters = list(self.model.parameters())
        model_bytes = sum(p.numel() * p.element_size() for p in parameters)
        # A checkpoint contains the trainable weights and AdamW's two moments. While one is written,
        # save_total_limit older ones still exist.
        # NOTE: an estimate; it leaves out tokenizer files, metrics and file-format overhead.
        checkpoint_bytes = 3 * sum(p.numel() * p.element_size() for p in parameters if p.requires_grad)
        training = self.config.training
        checkpoints = training.save_total_limit + 1 if training.save_steps else 0
        check_free_space(self.output_dir, checkpoints * checkpoint_bytes + model_bytes, "the checkpoints and the final model")

    def _check_resume_config(self) -> None:
        from relupo.config import load_config

        saved = load_config(self.output_dir / "config.yaml").to_dict()
        current = self.config.to_dict()
        ignored = {"resume", "overwrite_output_dir"}
        changed = [
            f"{name} ({saved[section][name]!r} -> {value!r})"
            for section, values in current.items()
            for name, value in values.items()
            if name not in ignored and saved[section].get(name) != value
        ]
        if changed:
            raise ConfigError(
                f"{self.output_dir}: cannot resume with a different configuration: {', '.join(changed)}. "
                f"Resume with the saved {self.output_dir / 'config.yaml'} or start a new run."
            )

    def _resume(self) -> None:
        complete = checkpoint.list_checkpoints(self.output_dir)
        if not complete:
            # A run killed before its first checkpoint restarts from the beginning, so a job script can
            # always pass --resume true.
            logger.warning("%s has no complete checkpoint; --resume starts the run from step 0", self.output_dir)
            if self.accelerator.is_main_process:
                _truncate_metrics(self.output_dir / "metrics.jsonl", 0)
            return
        path = complete[-1]
        model = self.accelerator.unwrap_model(self.model)
        self.state = checkpoint.load_checkpoint(path, model, self.optimizer, self.scheduler)
        if self.accelerator.is_main_process:
            _truncate_metrics(self.output_dir / "metrics.jsonl", self.state.global_step)
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.state.global_step, self.state.epoch, self.state.batches_in_epoch)

    def _log_start(self, loaded: Any, train_report: Any) -> None:
        model = self.accelerator.unwrap_model(self.model)
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info(
            "start: model %s (%s parameters, %s trainable), loss_type %s %s",
            self.config.model.model_name_or_path, f"{total:,}", f"{trainable:,}", self.objective.name,
            resolve_hyperparameters(self.config.objective),
        )
        logger.info("data: %s; %d train pairs, %d eval pairs", loaded.report.summary(), len(self.train_rows), len(self.eval_rows or []))
        for source in loaded.report.sources:
            for message in source.skipped_rows:
                logger.warning("skipped invalid row: %s", message)
        logger.info(
            "device %s, %d process(es), mixed precision %s; %d optimizer steps of %d pairs",
            self.accelerator.device, self.accelerator.num_processes, self.accelerator.mixed_precision, self.total_steps,
            self.config.training.per_device_train_batch_size * self.config.training.gradient_accumulation_steps * self.accelerator.num_processes,
        )

    # ------------------------------------------------------------------------------------- training

    def train(self) -> dict[str, Any]:
        """Run the loop to total_steps, save the final model and return the summary."""
        training = self.config.training
        started = time.perf_counter()
        before = self._evaluation_before_training()
        if self.snapshots is not None and self.state.global_step == 0:
            self.snapshots.record(0, before)
        progress = tqdm(total=self.total_steps, initial=self.state.global_step, disable=not self.accelerator.is_main_process, desc="training", unit="step")
        window: list[PairStats] = []
        window_started = time.perf_counter()
        grad_norm = float("nan")

        while self.state.global_step < self.total_steps:
            loader = self.train_loader
            if self.state.batches_in_epoch:
                loader = self.accelerator.skip_first_batches(loader, self.state.batches_in_epoch)
            # accelerate's loaders pass their own epoch counter to the sampler when iterated, and a
            # loader made by skip_first_batches starts that counter at 0: set both explicitly.
            loader.set_epoch(self.state.epoch)
            self.batch_sampler.set_epoch(self.state.epoch)

            for batch in loader:
                with self.accelerator.accumulate(self.model):
                    hyperparameters = self._scheduled_hyperparameters()
                    micro_batch = self.pair_step.run(batch, hyperparameters)
                    logps, output, sft, loss = micro_batch.logps, micro_batch.output, micro_batch.sft_losses, micro_batch.loss
                    finite = self.guard.check_micro_batch(logps, output, loss, lambda positions: self._pair_ids(batch, positions))

                    # A step with a NaN or inf loss or gradient is skipped; see relupo.numerics.
                    step_allowed = True
                    if self.accelerator.sync_gradients:
                        self.pair_step.fill_missing_gradients()
                        grad_norm = self._clip_gradients()
                        step_allowed = self.guard.allow_step(self.state.global_step + 1, grad_norm)
                    if step_allowed:
                        self.optimizer.step()
                    self.optimizer.zero_grad()

                self.state.batches_in_epoch += 1
                self.state.pairs_seen += batch["pair_index"].shape[0] * self.accelerator.num_processes
                tokens = batch["attention_mask"].sum().reshape(1)
                if finite:
                    window.append(PairStats.from_batch(logps, output, tokens.expand(output.losses.shape[0]) / output.losses.shape[0], sft if self.config.objective.sft_weight else None))
                if not self.accelerator.sync_gradients:
                    continue

                if step_allowed and not self.optimizer.step_was_skipped:
                    self.scheduler.step()
                self.state.global_step += 1
                progress.update(1)

                if window and (self.state.global_step % training.logging_steps == 0 or self.state.global_step == self.total_steps):
                    record = self._step_record(window, grad_norm, time.perf_counter() - window_started, hyperparameters)
                    progress.set_postfix(loss=f"{record['loss']:.4f}", active=f"{record['active_fraction']:.2f}")
                    self._write_metrics(record)
                    window, window_started = [], time.perf_counter()

                evaluated = None
                if self.eval_loader is not None and training.eval_steps and self.state.global_step % training.eval_steps == 0 and self.state.global_step < self.total_steps:
                    evaluated = self._evaluate(f"step {self.state.global_step}")
                    self._write_metrics({"step": self.state.global_step, **evaluated.as_metrics()})

                if self.snapshots is not None and self.snapshots.is_due(self.state.global_step) and self.state.global_step < self.total_steps:
                    self.snapshots.record(self.state.global_step, evaluated)

                if training.save_steps and self.state.global_step % training.save_steps == 0:
                    self._save_checkpoint()

                if self.state.global_step >= self.total_steps:
                    break
            else:
                self.state.epoch += 1
                self.state.batches_in_epoch = 0

        progress.close()
        after = self._evaluate("after training")
        if self.snapshots is not None:
            self.snapshots.record(self.state.global_step, after)
        if after is not None:
            self._write_metrics({"step": self.state.global_step, **after.as_metrics()})
        return self._finish(before, after, time.perf_counter() - started)

    def _evaluation_before_training(self) -> EvalResult | None:
        """Evaluate the starting model once per run; a resumed run reloads that result from disk."""
        path = self.output_dir / "eval_before.safetensors"
        if self.state.global_step > 0 and path.exists():
            return EvalResult(**load_file(path))
        result = self._evaluate("before training")
        if result is not None and self.accelerator.is_main_process:
            tensors = {name: getattr(result, name).contiguous() for name in ("pair_index", "margins", "summed_margins")}
            replace_atomically(path, lambda temporary: save_file(tensors, temporary))
        return result

    def _current_objective(self, logps: PairLogps) -> ObjectiveOutput:
        """Run the objective with the hyperparameters in force now, for per-pair gradient weights."""
        return compute_objective(self.config.objective, logps, **self._scheduled_hyperparameters())

    def _scheduled_hyperparameters(self) -> dict[str, float]:
        """gamma in force at the step being taken, when a gamma_schedule is set; otherwise nothing."""
        gamma = gamma_for_step(self.config.objective, self.state.global_step, self.total_steps)
        return {} if gamma is None else {"gamma": gamma}

    def _pair_ids(self, batch: dict[str, Any], positions: list[int]) -> list[str]:
        return [self.train_rows[int(batch["pair_index"][position])]["pair_id"] for position in positions]

    def _clip_gradients(self) -> float:
        max_norm = self.config.training.max_grad_norm or float("inf")
        return float(self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm))

    def _step_record(self, window: list[PairStats], grad_norm: float, seconds: float, scheduled: dict[str, float]) -> dict[str, Any]:
        stats = PairStats.concat([self._gather(s) for s in window])
        record: dict[str, Any] = {"step": self.state.global_step, "epoch": self.state.epoch, **summarize(stats)}
        if "gamma" in self.objective.defaults:
            record["gamma"] = scheduled.get("gamma", resolve_hyperparameters(self.config.objective)["gamma"])
        record["learning_rate"] = self.scheduler.get_last_lr()[0]
        record["grad_norm"] = grad_norm
        record["pairs_per_second"] = stats.margins.shape[0] / seconds
        record["tokens_per_second"] = stats.tokens.sum().item() / seconds
        return record

    def _gather(self, stats: PairStats) -> PairStats:
        if self.accelerator.num_processes == 1:
            return stats
        present = {name: value for name, value in vars(stats).items() if value is not None}
        return PairStats(**self.accelerator.gather_for_metrics(present))

    def _evaluate(self, when: str) -> EvalResult | None:
        if self.eval_loader is None:
            return None
        result = evaluate_pairs(self.model, self.eval_loader, self.accelerator, self._current_objective)
        logger.info("held-out %s: accuracy %.4f, margin %.4f (%d pairs)", when, result.accuracy, result.mean_margin, result.margins.shape[0])
        return result

    def _write_metrics(self, record: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            append_line(self.output_dir / "metrics.jsonl", json.dumps(record))

    def _save_checkpoint(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            model = self.accelerator.unwrap_model(self.model)
            path = checkpoint.save_checkpoint(self.output_dir, model, self.optimizer, self.scheduler, self.state, self.config.training.save_total_limit)
            logger.info("checkpoint saved: %s", path)
        self.accelerator.wait_for_everyone()

    # ---------------------------------------------------------------------------------------- outputs

    def _finish(self, before: EvalResult | None, after: EvalResult | None, seconds: float) -> dict[str, Any]:
        self.accelerator.wait_for_everyone()
        summary: dict[str, Any] = {
            "model": self.config.model.model_name_or_path,
            "train_data": self.config.data.train_data,
            "loss_type": self.objective.name,
            "hyperparameters": resolve_hyperparameters(self.config.objective),
            "train_pairs": len(self.train_rows),
            "eval_pairs": len(self.eval_rows or []),
            "steps": self.state.global_step,
            "train_runtime_seconds": round(seconds, 2),
            "eval_before": before.as_metrics("") if before is not None else None,
            "eval_after": after.as_metrics("") if after is not None else None,
        }
        if not self.accelerator.is_main_process:
            return summary

        model = self.accelerator.unwrap_model(self.model)
        if after is not None:
            replace_atomically(self.output_dir / "eval_margins.jsonl", lambda path: self._write_eval_margins(path, before, after))
        try:
            final_dir = save_final_model(model, self.tokenizer, self.output_dir / "model", self.config.model.merge_lora)
        except OSError as error:
            raise write_failed(self.output_dir / "model", error) from None
        summary["final_model_dir"] = str(final_dir)
        replace_atomically(self.output_dir / "summary.json", lambda path: path.write_text(json.dumps(summary, indent=2) + "\n"))
        if before is not None and after is not None:
            logger.info(
                "finished %d steps in %.1f s: held-out accuracy %.4f -> %.4f, margin %.4f -> %.4f; model saved to %s",
                self.state.global_step, seconds, before.accuracy, after.accuracy, before.mean_margin, after.mean_margin, final_dir,
            )
        else:
            logger.info("finished %d steps in %.1f s; model saved to %s", self.state.global_step, seconds, final_dir)
        return summary

    def _write_eval_margins(self, path: Path, before: EvalResult | None, after: EvalResult) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            for position, index in enumerate(after.pair_index.tolist()):
                row = {"pair_id": self.eval_rows[index]["pair_id"], "margin_after": after.margins[position].item()}
                if before is not None:
                    row["margin_before"] = before.margins[position].item()
                handle.write(json.dumps(row) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric records after `step`, written by the interrupted run past its last checkpoint."""
    if not path.exists():
        return
    kept = [record for record in read_json_lines(path) if record["step"] <= step]
    text = "".join(json.dumps(record) + "\n" for record in kept)
    replace_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def mixed_precision(training: Any) -> str:
    """Return accelerate's mixed_precision value for the bf16 and fp16 options."""
    if training.bf16:
        return "bf16"
    if training.fp16:
        return "fp16"
    return "no"


def train(config: TrainConfig) -> dict[str, Any]:
    """Train a model on preference pairs as configured; return the run summary (also in summary.json)."""
    trainer = Trainer(config)
    trainer.setup()
    summary = trainer.train()
    # Gloo's worker threads need the GIL to free the tensors of finished collectives. A worker still
    # running when the interpreter shuts down aborts the process ("terminate called without an
    # active exception"). So all processes wait for the main one to finish writing, then destroy
    # the process group. The DDP wrapper holds the group in reference cycles, so only dropping the
    # trainer and running gc.collect() frees it and joins the threads.
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    del trainer
    gc.collect()
    return summary
