"""Show how resident memory grows with distinct sequence lengths under bf16 autocast on a CPU.

Trains the benchmark's randomly initialized 50M Llama one sequence pair at a time, as relupo's
per-pair skipping does, with plain PyTorch (no relupo code), and prints the resident memory
after each optimizer step of 8 pairs:

    python bench/cpu_bf16_memory.py --precision float32
    python bench/cpu_bf16_memory.py --precision bf16
    python bench/cpu_bf16_memory.py --precision bf16 --round-to 32

Each pair is a batch of 2 random sequences whose length is drawn from 150 to 255 tokens, or that
length rounded up to a multiple of --round-to.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_trl import build_random_llama  # noqa: E402


def resident_mib() -> int:
    with open("/proc/self/status", encoding="utf-8") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", choices=("float32", "bf16"), default="bf16")
    parser.add_argument("--steps", type=int, default=14, help="optimizer steps of 8 pairs")
    parser.add_argument("--round-to", type=int, default=1, help="round each length up to a multiple of this")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    directory = Path(tempfile.mkdtemp(prefix="relupo-bf16-memory-")) / "llama50m"
    build_random_llama(directory, logit_scale=10.0)
    model = AutoModelForCausalLM.from_pretrained(directory)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    print(f"{args.precision}, lengths rounded to a multiple of {args.round_to}; loaded: {resident_mib()} MiB", flush=True)

    for step in range(args.steps):
        for _ in range(8):
            length = int(torch.randint(150, 256, (1,), generator=generator))
            length = -(-length // args.round_to) * args.round_to
            input_ids = torch.randint(0, model.config.vocab_size, (2, length), generator=generator)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                logits = model(input_ids=input_ids).logits
            torch.log_softmax(logits.float(), dim=-1).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        # ru_maxrss is in KiB on Linux.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print(f"step {step + 1}: resident {resident_mib()} MiB, peak {peak} MiB", flush=True)


if __name__ == "__main__":
    main()
