"""`relupo generate MODEL --prompts FILE`: completions for a file of prompts, as JSON Lines."""

from __future__ import annotations

import argparse



def parse_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")

DESCRIPTION = """Generate one completion per prompt and write JSON Lines (id, prompt, response,
finish_reason, new_tokens, model, settings). --prompts takes a JSONL file whose rows have a
prompt (text or a message list), or any preference data file (its pairs' prompts are used);
--heldout-of RUN_DIR takes the held-out prompts of a training run instead."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="Generate completions for a file of prompts.", description=DESCRIPTION)
    parser.add_argument("model", metavar="MODEL", help="Model directory in Hugging Face format (e.g. RUN_DIR/model) or a hub id.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompts", metavar="FILE", help="JSONL file of prompts, or a preference data file.")
    source.add_argument("--heldout-of", metavar="RUN_DIR", help="Use the held-out pairs' prompts of this training run (same split and seed).")
    parser.add_argument("--output", required=True, metavar="FILE", help="JSONL file to write.")
    parser.add_argument("--prompt-column", default="prompt", help="Column that contains the prompt. Default: prompt.")
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N prompts.")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="Maximum tokens generated per prompt. Default: 64.")
    parser.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature. Default: 1.0.")
    parser.add_argument("--top-p", type=float, default=1.0, help="Nucleus sampling probability mass. Default: 1.0 (off).")
    parser.add_argument("--do-sample", type=parse_bool, default=True, metavar="BOOL", help="Sample (true) or decode greedily (false). Default: true.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the sampler. Default: 0.")
    parser.add_argument("--batch-size", type=int, default=8, help="Prompts per generate call. Default: 8.")
    parser.add_argument("--max-prompt-length", type=int, default=256, help="Prompt tokens kept (the last ones, after BOS). Default: 256.")
    parser.add_argument(
        "--stop", action="append", default=None,
        help="Cut each response before this string; repeat for several. Default: '\\n\\nHuman:' for a tokenizer without a chat template, none otherwise.",
    )
    parser.add_argument("--trust-remote-code", action="store_true", help="Allow the model repository to run its own code.")


def run(arguments: argparse.Namespace) -> int:
    import torch

    from relupo.config import ModelConfig
    from relupo.generate import Prompt, SamplingSettings, generate, read_prompts, write_generations
    from relupo.modeling import load_model, load_tokenizer

    settings = SamplingSettings(
        max_new_tokens=arguments.max_new_tokens, temperature=arguments.temperature, top_p=arguments.top_p,
        do_sample=arguments.do_sample, seed=arguments.seed, batch_size=arguments.batch_size,
        max_prompt_length=arguments.max_prompt_length, stop=arguments.stop,
    )
    if arguments.prompts:
        prompts = read_prompts(arguments.prompts, arguments.prompt_column, arguments.limit)
    else:
        from pathlib import Path

        from relupo.config import load_config
        from relupo.data import load_pairs

        config = load_config(Path(arguments.heldout_of) / "config.yaml")
        held_out = load_pairs(config.data, seed=config.training.seed).eval
        prompts = [Prompt(pair.pair_id, pair.prompt) for pair in held_out][: arguments.limit]

    model_config = ModelConfig(model_name_or_path=arguments.model, trust_remote_code=arguments.trust_remote_code)
    tokenizer = load_tokenizer(model_config)
    model = load_model(model_config).eval()
    if torch.cuda.is_available():
        model = model.to("cuda")
    rows = generate(model, tokenizer, prompts, settings)
    write_generations(rows, arguments.output, arguments.model, settings)
    print(f"{len(rows)} completions written to {arguments.output}")
    return 0
