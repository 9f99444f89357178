"""Train relupo and TRL side by side at identical settings and report throughput and peak memory.

    python bench/bench_trl.py --output bench/results.json

Each configuration trains in its own subprocess, so peak resident memory is its own, and the
configurations of a model run interleaved, round after round, so that a change in machine load
touches them all alike. Every run uses the same model, pairs, batch size, max length, learning
rate and number of optimizer steps. The first `--warmup-steps` steps are not timed.

Configurations:
    relupo repo, relupo simpo         relupo's trainer, with its defaults unless named otherwise
    trl simpo                         trl.experimental.cpo.CPOTrainer, loss_type="simpo", cpo_alpha=0
    trl dpo                           trl.DPOTrainer with its reference model
plus, for relupo repo, single techniques turned off (skipping, shared prompt, length grouping)
and a gamma sweep that changes the share of active pairs.

Models: the bundled stories260K, and a randomly initialized Llama of about 50M parameters built
from a config, with the stories260K tokenizer. The random model gives every pair a margin near 0,
so every pair is active at any gamma > 0; its output layer is scaled by `--logit-scale` so that
margins spread as they do in a trained model and the gamma sweep has pairs to skip.

pairs/s counts preference pairs per second of timed steps. tokens/s counts the tokens of those
same pairs, prompt + chosen + prompt + rejected without padding: relupo's own count, and for TRL
the attention-mask sum of the policy's forward passes. Trainers draw their batches in different
orders, so the timed pairs differ in length between runs. tokens/s corrects for that, so its
ratios are the ones to compare. Model FLOP/s is 6 * parameters * tokens/s, the nominal cost of a
forward and backward pass over every token. It ignores the reference forward of DPO and the work
that shared prompts and skipping save, so it compares trainers on the same nominal work. Every
run also counts the token positions its model computed per pair, with and without autograd,
padding included.

Precision is the same for every trainer of a row: float32 by default, and bf16 mixed precision
(autocast) for the rows `--bf16` adds. TRL's configs turn bf16 on by default, so the TRL runs set
it explicitly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

REPOSITORY = Path(__file__).resolve().parent.parent
STORIES = REPOSITORY / "src" / "relupo" / "bundled" / "stories260K"
HH_DATA = REPOSITORY / "src" / "relupo" / "bundled" / "hh-rlhf-harmless-base" / "test.jsonl.gz"


# ------------------------------------------------------------------------------------ preparation


def write_pairs(path: Path, count: int, max_length: int, max_prompt_length: int) -> None:
    """Write the first `count` HH-RLHF pairs that fit the length limits untruncated, as text rows (prompt, chosen, rejected).

    relupo truncates a long prompt from the left, TRL's DPOTrainer cuts prompt + response from the
    right and its CPOTrainer never cuts the prompt, so on pairs that need truncation the trainers
    would compute different sequences. Pairs whose prompt fits max_prompt_length and whose prompt
    plus either response (and EOS, with 2 tokens to spare) fits max_length are the same sequences
    in every trainer. Rows are rendered as relupo renders them; lengths use the stories260K
    tokenizer, which both benchmark models share.
    """
    from transformers import AutoTokenizer

    from relupo.config import load_config
    from relupo.data import load_pairs
    from relupo.data.formats import render_plain

    tokenizer = AutoTokenizer.from_pretrained(STORIES)
    config = load_config(None, {"train_data": str(HH_DATA), "eval_split": 0.0})
    written = 0
    with open(path, "w", encoding="utf-8") as handle:
        for pair in load_pairs(config.data, seed=0).train:
            prompt, chosen, rejected = render_plain(pair)
            prompt_tokens = len(tokenizer(prompt).input_ids)
            response_tokens = max(len(tokenizer(text, add_special_tokens=False).input_ids) for text in (chosen, rejected))
            if prompt_tokens > max_prompt_length or prompt_tokens + response_tokens + 3 > max_length:
                continue
            handle.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n")
            written += 1
            if written == count:
                return
    raise SystemExit(f"only {written} HH-RLHF pairs fit max_length {max_length} and max_prompt_length {max_prompt_length}; ask for fewer --pairs")


def build_random_llama(directory: Path, logit_scale: float) -> int:
    """Save a randomly initialized Llama (hidden 640, 10 layers) with the stories260K tokenizer; return its parameter count."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512, hidden_size=640, intermediate_size=1728, num_hidden_layers=10, num_attention_heads=10,
        num_key_value_heads=10, max_position_embeddings=1024, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(logit_scale)
    model.save_pretrained(directory, safe_serialization=True)
    AutoTokenizer.from_pretrained(STORIES).save_pretrained(directory)
    return sum(p.numel() for p in model.parameters())


def matmul_peak_flops(dtype: str = "float32", size: int = 1536, seconds: float = 3.0) -> float:
    """Measure matrix-multiply FLOP/s in `dtype` with torch on this process's threads."""
    import torch

    a, b = torch.randn(size, size, dtype=getattr(torch, dtype)), torch.randn(size, size, dtype=getattr(torch, dtype))
    torch.mm(a, b)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b)
        done += 1
    return 2 * size**3 * done / (time.perf_counter() - started)


# --------------------------------------------------------------------------------------- one run


def resident_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class PositionCounter:
    """Count the token positions a model computes (rows x width of every forward pass), with and without autograd.

    The hook sits on the input embeddings, so it counts every forward pass of the model, padding
    included: the work a trainer actually does, whatever its layout.
    """

    def __init__(self) -> None:
        self.events: list[tuple[float, bool, int]] = []  # (time, autograd, positions) of every forward pass
        self.token_events: list[tuple[float, int]] = []  # (time, attention-mask tokens) of autograd forward passes
        self.step_ends: list[float] = []  # time at the end of every optimizer step

    def attach(self, model) -> None:
        model.get_input_embeddings().register_forward_pre_hook(self.hook)

    def attach_tokens(self, model) -> None:
        """Count the unpadded tokens (attention mask sum) of the model's autograd forward passes: TRL's policy."""
        model.register_forward_pre_hook(self.token_hook, with_kwargs=True)

    def hook(self, module, args) -> None:
        import torch

        self.events.append((time.perf_counter(), torch.is_grad_enabled(), args[0].numel()))

    def token_hook(self, module, args, kwargs) -> None:
        import torch

        if torch.is_grad_enabled():
            self.token_events.append((time.perf_counter(), int(kwargs["attention_mask"].sum())))

    def tokens_after(self, step: int) -> int:
        return sum(n for t, n in self.token_events if t > self.step_ends[step - 1])

    def positions_after(self, step: int) -> dict[str, int]:
        """Positions computed after the end of optimizer step `step` (1-based), by autograd mode."""
        since = self.step_ends[step - 1]
        return {mode: sum(n for t, grad, n in self.events if t > since and grad == (mode == "autograd")) for mode in ("autograd", "no_grad")}


def run_relupo(spec: dict, counter: PositionCounter) -> list[float]:
    """Train relupo for spec["steps"] steps; return the seconds of every optimizer step."""
    import relupo.train
    from relupo.config import load_config
    from relupo.data.batching import LengthGroupedBatchSampler

    if not spec["length_grouping"]:
        # One batch per length group: each batch is a random draw, as in a plain random sampler.
        class Ungrouped(LengthGroupedBatchSampler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **{**kwargs, "group_batches": 1})
                self.lengths = self.lengths * 0

        relupo.train.LengthGroupedBatchSampler = Ungrouped
    options = {
        "model_name_or_path": spec["model_dir"], "train_data": spec["data"], "data_format": "text", "eval_split": 0.0,
        "output_dir": spec["output_dir"], "overwrite_output_dir": True, "loss_type": spec["loss_type"], "gamma": spec["gamma"],
        "max_length": spec["max_length"], "max_prompt_length": spec["max_prompt_length"],
        "per_device_train_batch_size": spec["batch_size"], "learning_rate": spec["learning_rate"], "max_steps": spec["steps"],
        "lr_scheduler_type": "constant", "warmup_ratio": 0.0, "save_steps": 0, "eval_steps": 0, "snapshot_steps": 0,
        "skip_inactive_pairs": spec["skip"], "share_prompt": spec["share_prompt"], "seed": 0, "bf16": spec["bf16"],
    }
    trainer = relupo.train.Trainer(load_config(None, options))
    trainer.setup()
    if "per_pair" in spec:
        trainer.pair_step.per_pair = spec["per_pair"]
    from relupo.logps import unwrap_model

    counter.attach(unwrap_model(trainer.model))
    write_metrics = trainer._write_metrics

    def timestamped(record: dict) -> None:
        if "pairs_per_second" in record:
            counter.step_ends.append(time.perf_counter())
        write_metrics(record)

    trainer._write_metrics = timestamped
    spec["resident_before_training_kib"] = resident_kib()
    trainer.train()
    records = [json.loads(line) for line in (Path(spec["output_dir"]) / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "pairs_per_second" in r]
    timed = steps[spec["warmup_steps"]:]
    spec["active_fraction"] = sum(r["active_fraction"] for r in timed) / len(timed)
    # relupo counts prompt + chosen + prompt + rejected tokens of each batch, without padding.
    spec["timed_tokens"] = sum(r["tokens_per_second"] * spec["batch_size"] / r["pairs_per_second"] for r in timed)
    return [spec["batch_size"] / r["pairs_per_second"] for r in steps]


def run_trl(spec: dict, counter: PositionCounter) -> list[float]:
    """Train TRL's CPOTrainer (SimPO) or DPOTrainer; return the seconds of every optimizer step."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self, counter: PositionCounter) -> None:
            self.ends = [time.perf_counter()]
            self.counter = counter

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())
            self.counter.step_ends.append(self.ends[-1])

    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    dataset = load_dataset("json", data_files=spec["data"], split="train")
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"])
    common = dict(
        output_dir=spec["output_dir"], per_device_train_batch_size=spec["batch_size"], gradient_accumulation_steps=1,
        learning_rate=spec["learning_rate"], max_steps=spec["steps"], lr_scheduler_type="constant", warmup_steps=0,
        logging_steps=10_000, save_strategy="no", report_to=[], use_cpu=True, seed=0, max_length=spec["max_length"],
        disable_tqdm=True, dataloader_num_workers=0, bf16=spec["bf16"],
    )
    timer = StepTimer(counter)
    if spec["trainer"] == "trl simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        args = CPOConfig(**common, loss_type="simpo", cpo_alpha=0.0, beta=2.0, simpo_gamma=spec["gamma"] * 2.0)
        trainer = CPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[timer])
    else:
        from trl import DPOConfig, DPOTrainer

        reference = AutoModelForCausalLM.from_pretrained(spec["model_dir"])
        args = DPOConfig(**common, beta=0.1)
        trainer = DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[timer])
    counter.attach(model)
    counter.attach_tokens(model)
    if spec["trainer"] == "trl dpo":
        counter.attach(reference)
    spec["resident_before_training_kib"] = resident_kib()
    timer.ends = [time.perf_counter()]
    trainer.train()
    spec["timed_tokens"] = counter.tokens_after(spec["warmup_steps"])
    return [b - a for a, b in zip(timer.ends, timer.ends[1:])]


def run_one(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    counter = PositionCounter()
    seconds = (run_relupo if spec["trainer"].startswith("relupo") else run_trl)(spec, counter)
    timed = seconds[spec["warmup_steps"]:]
    timed_pairs = spec["batch_size"] * len(timed)
    pairs_per_second = spec["batch_size"] * len(timed) / sum(timed)
    return {
        **spec,
        "step_seconds": seconds,
        "pairs_per_second": pairs_per_second,
        "tokens_per_second": spec["timed_tokens"] / sum(timed),
        "peak_resident_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "resident_before_training_mib": spec["resident_before_training_kib"] / 1024,
        "positions_per_pair": {mode: count / timed_pairs for mode, count in counter.positions_after(spec["warmup_steps"]).items()},
    }


# ------------------------------------------------------------------------------------------ main


def mean_pair_tokens(data: Path, model_dir: Path, max_length: int, max_prompt_length: int) -> float:
    from relupo.config import load_config
    from relupo.data import load_or_tokenize, load_pairs
    from relupo.modeling import load_tokenizer

    config = load_config(None, {"model_name_or_path": str(model_dir), "train_data": str(data), "data_format": "text", "eval_split": 0.0,
                                "max_length": max_length, "max_prompt_length": max_prompt_length})
    rows = load_or_tokenize(load_pairs(config.data, seed=0).train, load_tokenizer(config.model), config.data).dataset
    total = sum(2 * len(p) + len(c) + len(r) for p, c, r in zip(rows["prompt_ids"], rows["chosen_ids"], rows["rejected_ids"]))
    return total / len(rows)


def plan(args: argparse.Namespace, model: str) -> list[dict]:
    """The configurations of one model, as dicts that name everything a run needs."""
    base = {"model": model, "loss_type": "repo", "gamma": 0.5, "skip": "auto", "share_prompt": True, "length_grouping": True, "bf16": False}
    comparison = [
        {**base, "trainer": "relupo repo"},
        {**base, "trainer": "relupo simpo", "loss_type": "simpo"},
        {**base, "trainer": "trl simpo"},
        {**base, "trainer": "trl dpo"},
    ]
    if args.bf16:
        comparison += [{**spec, "bf16": True} for spec in comparison] + [{**base, "trainer": "relupo repo", "skip": "off", "bf16": True}]
    techniques = [
        {**base, "trainer": "relupo repo", "skip": "on"},
        {**base, "trainer": "relupo repo", "skip": "off"},
        {**base, "trainer": "relupo repo", "share_prompt": False},
        {**base, "trainer": "relupo repo", "length_grouping": False},
    ]
    sweep = [{**base, "trainer": "relupo repo", "gamma": gamma, "skip": skip} for gamma in (0.2, 1.0, 2.0) for skip in ("off", "on")]
    if args.mechanisms:
        # Both skipping forms, and no skipping, across active shares.
        return [{**base, "trainer": "relupo repo", "gamma": gamma, "skip": skip, "bf16": bf16, **extra}
                for bf16 in (False, True) for gamma in (0.2, 0.5, 2.0)
                for skip, extra in (("off", {}), ("on", {"per_pair": True}), ("on", {"per_pair": False}))]
    return comparison + (techniques + sweep if model in args.ablation_models else [])


def describe_machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    return {
        "cpu_model": fields.get("Model name", "").strip(),
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=REPOSITORY / "bench" / "results.json")
    parser.add_argument("--models", nargs="+", default=["stories260K", "llama50m"])
    parser.add_argument("--ablation-models", nargs="*", default=["llama50m"])
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run, warm-up included")
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per optimizer step")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--max-prompt-length", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--pairs", type=int, default=256, help="HH-RLHF pairs, all within the length limits, that the runs draw their batches from")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions of every configuration")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--logit-scale", type=float, default=10.0, help="factor on the random model's output layer")
    parser.add_argument("--bf16", action="store_true", help="also run the four comparison configurations in bf16 mixed precision")
    parser.add_argument("--mechanisms", action="store_true", help="run only relupo repo with per-pair, two-pass and no skipping, float32 and bf16")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        print("RESULT " + json.dumps(run_one(json.loads(args.one))), flush=True)
        return

    work = Path(tempfile.mkdtemp(prefix="relupo-bench-"))
    data = work / "pairs.jsonl"
    write_pairs(data, args.pairs, args.max_length, args.max_prompt_length)
    model_dirs = {"stories260K": STORIES, "llama50m": work / "llama50m"}
    parameters = {"stories260K": None, "llama50m": None}
    if "llama50m" in args.models:
        parameters["llama50m"] = build_random_llama(model_dirs["llama50m"], args.logit_scale)

    import torch

    torch.set_num_threads(args.threads)
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": describe_machine(),
        "threads": args.threads,
        "load_average_before": os.getloadavg(),
        "matmul_peak_flops": matmul_peak_flops(),
        "matmul_peak_flops_bf16": matmul_peak_flops("bfloat16") if args.bf16 else None,
        "settings": {name: getattr(args, name) for name in ("steps", "warmup_steps", "batch_size", "max_length", "max_prompt_length", "learning_rate", "pairs", "rounds", "logit_scale")},
        "models": {},
        "runs": [],
    }
    for model in args.models:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_dirs[model])
        parameters[model] = parameters[model] or sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_config(config).parameters())
        report["models"][model] = {
            "parameters": parameters[model],
            "mean_pair_tokens": mean_pair_tokens(data, model_dirs[model], args.max_length, args.max_prompt_length),
        }

    load_samples = []
    for model in args.models:
        for round_index in range(args.rounds):
            for index, spec in enumerate(plan(args, model)):
                spec.update(
                    model_dir=str(model_dirs[model]), data=str(data), output_dir=str(work / f"run-{model}-{round_index}-{index}"),
                    steps=args.steps, warmup_steps=args.warmup_steps, batch_size=args.batch_size, max_length=args.max_length,
                    max_prompt_length=args.max_prompt_length, learning_rate=args.learning_rate, threads=args.threads, round=round_index,
                )
                process = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
                load_samples.append(os.getloadavg()[0])
                lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
                if process.returncode != 0 or not lines:
                    print(process.stdout[-3000:], process.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"run failed: {spec['trainer']} on {model}")
                result = json.loads(lines[-1][len("RESULT "):])
                result["model_flops_per_second"] = 6 * report["models"][model]["parameters"] * result["tokens_per_second"]
                report["runs"].append(result)
                print(f"{model:12s} {result['trainer']:13s} bf16 {spec['bf16']!s:5s} gamma {spec['gamma']} skip {spec['skip']:4s} share {spec['share_prompt']!s:5s} "
                      f"grouping {spec['length_grouping']!s:5s}: {result['pairs_per_second']:.2f} pairs/s, {result['tokens_per_second']:.0f} tokens/s, "
                      f"peak {result['peak_resident_mib']:.0f} MiB", flush=True)
                args.output.write_text(json.dumps(report, indent=2) + "\n")

    report["load_average_after"] = os.getloadavg()
    report["load_average_one_minute_during"] = load_samples
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {args.output}")


if __name__ == "__main__":
    main()
