"""`relupo judge A.jsonl B.jsonl --judge JUDGE`: judged win rate of one model's generations over another's."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DESCRIPTION = """Score the responses of two `relupo generate` files on their shared prompts with a
judge and report the win rate of A over B: wins / (wins + losses) with a 95% Wilson score
interval, ties (score difference within --tie-tolerance) reported separately, and the win rate
with ties counted as half."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("judge", help="Judged win rate between the generations of two models.", description=DESCRIPTION)
    parser.add_argument("generations_a", metavar="A", help="Generations of the model under test (relupo generate output).")
    parser.add_argument("generations_b", metavar="B", help="Generations of the baseline, on the same prompts.")
    parser.add_argument(
        "--judge", default="vader",
        help="vader (offline sentiment scorer, a pipeline check rather than a quality judge), module:function "
        "(a callable scoring prompt and response), or a sequence-classification reward model directory or hub id. Default: vader.",
    )
    parser.add_argument("--tie-tolerance", type=float, default=0.0, help="Score differences at most this large count as ties. Default: 0.")
    parser.add_argument("--output", default=None, metavar="FILE", help="Also write the result, with per-prompt scores, as JSON.")


def run(arguments: argparse.Namespace) -> int:
    from relupo.judge import format_result, judge_generations

    result = judge_generations(arguments.generations_a, arguments.generations_b, arguments.judge, arguments.tie_tolerance)
    print(format_result(result))
    if arguments.output:
        Path(arguments.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0
