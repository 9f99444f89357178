"""`relupo eval MODEL --data FILE`: held-out preference accuracy of a saved model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DESCRIPTION = """Score a model on preference pairs: accuracy with length-normalized log-probs (share of
pairs with M > 0) and with summed log-probs, the mean and 10th/50th/90th percentiles of M, and the
same by group when --group-column names a column (or when several --data files are given: then each
file is a group). Data is read and tokenized as by relupo train."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="Held-out preference accuracy of a model on a data file.", description=DESCRIPTION)
    parser.add_argument("model", metavar="MODEL", help="Model directory in Hugging Face format (e.g. RUN_DIR/model) or a hub id.")
    parser.add_argument("--data", action="append", required=True, metavar="FILE", help="Preference pairs in any relupo train format; repeat for several files.")
    parser.add_argument("--group-column", default=None, help="Column whose value groups the pairs in the breakdown (e.g. a subset name).")
    parser.add_argument("--output", default=None, metavar="FILE", help="Also write the results as JSON to this file.")
    parser.add_argument("--batch-size", type=int, default=32, help="Pairs per forward pass. Default: 32.")
    for name, default, text in (
        ("max-length", 512, "Maximum tokens of prompt plus response, as in relupo train. Default: 512."),
        ("max-prompt-length", 256, "Maximum prompt tokens, as in relupo train. Default: 256."),
    ):
        parser.add_argument(f"--{name}", type=int, default=default, help=text)
    parser.add_argument("--data-format", default="auto", choices=("auto", "text", "conversational", "hh"), help="Row format. Default: auto.")
    parser.add_argument("--prompt-column", default="prompt", help="Column that contains the prompt.")
    parser.add_argument("--chosen-column", default="chosen", help="Column that contains the preferred response.")
    parser.add_argument("--rejected-column", default="rejected", help="Column that contains the dispreferred response.")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="Dtype the weights are loaded in.")
    parser.add_argument("--trust-remote-code", action="store_true", help="Allow the model repository to run its own code.")


def run(arguments: argparse.Namespace) -> int:
    from relupo.config import load_config
    from relupo.heldout import evaluate_data, format_eval_table

    options = {
        "model_name_or_path": arguments.model,
        "dtype": arguments.dtype,
        "trust_remote_code": arguments.trust_remote_code,
        "train_data": arguments.data[0],
        "eval_split": 0.0,
        "group_column": arguments.group_column,
        "data_format": arguments.data_format,
        "prompt_column": arguments.prompt_column,
        "chosen_column": arguments.chosen_column,
        "rejected_column": arguments.rejected_column,
        "max_length": arguments.max_length,
        "max_prompt_length": arguments.max_prompt_length,
    }
    config = load_config(None, options)
    config.validate()
    report = evaluate_data(config.model, config.data, arguments.data, arguments.batch_size)
    print(format_eval_table(report))
    if arguments.output:
        Path(arguments.output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"results written to {arguments.output}")
    return 0
