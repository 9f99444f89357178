"""`relupo compare`: train several methods, gammas and seeds with the same budget and compare them."""

from __future__ import annotations

import argparse
from pathlib import Path

from relupo.commands.train import add_config_options, config_from_arguments
from relupo.errors import ConfigError

DESCRIPTION = """Train every combination of --loss-types, --gammas (for loss types that have a gamma)
and --seeds on the same model, data and budget, each run in its own process, and write
compare.json and report.html: held-out accuracy (mean and spread across seeds), final margin,
wall time, peak memory and the number of hyperparameters of each method. Every train option
below applies to all runs; hyperparameters a loss type does not use are dropped for it."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("compare", help="Compare methods, gammas and seeds on the same budget.", description=DESCRIPTION)
    parser.add_argument("--loss-types", default="repo,simpo,dpo", help="Comma-separated loss types to train. Default: repo,simpo,dpo.")
    parser.add_argument(
        "--gammas", default=None, help="Comma-separated gamma values for the loss types that have a gamma. Default: each loss type's default gamma."
    )
    parser.add_argument(
        "--seeds", default="3", help="Number of seeds (3 runs seeds seed, seed+1, seed+2) or a comma-separated list of seeds. Default: 3."
    )
    parser.add_argument("--compare-dir", default="runs/compare", help="Directory for the runs, compare.json and report.html. Default: runs/compare.")
    add_config_options(parser)


def parse_seeds(text: str, base_seed: int) -> list[int]:
    """'3' -> [base, base+1, base+2]; '1,7,9' -> [1, 7, 9]."""
    try:
        if "," in text:
            return [int(item) for item in text.split(",") if item.strip()]
        count = int(text)
    except ValueError:
        raise ConfigError(f"--seeds is {text!r}; give a count such as 3 or a list such as 1,2,3.") from None
    if count < 1:
        raise ConfigError(f"--seeds is {count}; give at least 1.")
    return [base_seed + offset for offset in range(count)]


def parse_floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ConfigError(f"{option} is {text!r}; give comma-separated numbers such as 0.3,0.5,0.7.") from None


def run(arguments: argparse.Namespace) -> int:
    from relupo.compare import compare

    if "output_dir" in vars(arguments):
        raise ConfigError("compare sets each run's output_dir itself; use --compare-dir instead of --output-dir.")
    base = config_from_arguments(arguments)
    loss_types = [item.strip() for item in arguments.loss_types.split(",") if item.strip()]
    seeds = parse_seeds(arguments.seeds, base.training.seed)
    comparison = compare(base, loss_types, parse_floats(arguments.gammas, "--gammas"), seeds, Path(arguments.compare_dir))

    from relupo.report.tables import format_comparison_table

    print(format_comparison_table(comparison["groups"]))
    return 0
