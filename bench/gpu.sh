#!/usr/bin/env bash
# Train a randomly initialized Llama of about 0.5B parameters in bf16 with relupo on one GPU and
# print tokens per second and model FLOP utilization (MFU). It is sized to finish in under 5
# minutes on a recent data-center GPU, an estimate: it has not been run on a GPU yet.
#
#   bash bench/gpu.sh                          # repo, 40 steps, 16 pairs per step, max_length 512
#   STEPS=60 BATCH=32 PEAK_TFLOPS=989 bash bench/gpu.sh
#
# MFU = 6 * parameters * tokens/s / peak. The peak is PEAK_TFLOPS (the spec-sheet dense bf16 value)
# when set, otherwise a bf16 matrix multiply measured here. tokens/s counts prompt + chosen +
# prompt + rejected tokens of each pair, the same count for every relupo setting, so skipping
# and shared-prompt packing raise it above what the GPU computes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
export HF_HUB_OFFLINE=1 STEPS="${STEPS:-40}" BATCH="${BATCH:-16}" MAX_LENGTH="${MAX_LENGTH:-512}" PEAK_TFLOPS="${PEAK_TFLOPS:-}"
export WORK="${WORK:-$(mktemp -d)}"

"$PYTHON" - <<'PY'
import json, os, time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

import relupo.train
from relupo.config import BUNDLED_DATA, BUNDLED_MODEL, load_config

assert torch.cuda.is_available(), "bench/gpu.sh needs a CUDA GPU"
work, steps, batch = Path(os.environ["WORK"]), int(os.environ["STEPS"]), int(os.environ["BATCH"])

# About 0.5B parameters: 18 layers of hidden size 1536, vocabulary of the bundled tokenizer (512).
torch.manual_seed(0)
config = LlamaConfig(vocab_size=512, hidden_size=1536, intermediate_size=4096, num_hidden_layers=18, num_attention_heads=12,
                     num_key_value_heads=12, max_position_embeddings=2048, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
model = LlamaForCausalLM(config)
parameters = sum(p.numel() for p in model.parameters())
model.save_pretrained(work / "model", safe_serialization=True)
AutoTokenizer.from_pretrained(BUNDLED_MODEL).save_pretrained(work / "model")
del model

if os.environ["PEAK_TFLOPS"]:
    peak = float(os.environ["PEAK_TFLOPS"]) * 1e12
else:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    torch.mm(a, a); torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(50):
        torch.mm(a, a)
    torch.cuda.synchronize()
    peak = 2 * 8192**3 * 50 / (time.perf_counter() - started)

options = {"model_name_or_path": str(work / "model"), "train_data": BUNDLED_DATA, "eval_split": 0.0, "output_dir": str(work / "run"),
           "overwrite_output_dir": True, "bf16": True, "max_length": int(os.environ["MAX_LENGTH"]), "max_prompt_length": int(os.environ["MAX_LENGTH"]) // 2,
           "per_device_train_batch_size": batch, "max_steps": steps, "learning_rate": 1e-5, "save_steps": 0, "eval_steps": 0,
           "snapshot_steps": 0, "lr_scheduler_type": "constant", "warmup_ratio": 0.0}
trainer = relupo.train.Trainer(load_config(None, options))
trainer.setup()
trainer.train()

records = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
timed = [r for r in records if "tokens_per_second" in r][5:]  # the first 5 steps warm up kernels and the allocator
tokens_per_second = sum(r["tokens_per_second"] for r in timed) / len(timed)
pairs_per_second = sum(r["pairs_per_second"] for r in timed) / len(timed)
active = sum(r["active_fraction"] for r in timed) / len(timed)
print(f"gpu {torch.cuda.get_device_name()}, {parameters / 1e6:.0f}M parameters, bf16, {batch} pairs per step, {len(timed)} timed steps")
print(f"pairs/s {pairs_per_second:.1f}, tokens/s {tokens_per_second:.0f}, active_fraction {active:.2f}")
print(f"model FLOP/s {6 * parameters * tokens_per_second / 1e12:.1f} TFLOP/s, peak {peak / 1e12:.0f} TFLOP/s, MFU {6 * parameters * tokens_per_second / peak:.1%}")
print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
PY
