"""The `relupo` command line.

    relupo train                                   # the bundled default: stories260K on HH-RLHF pairs
    relupo train --config run.yaml --gamma 0.4     # a YAML config, with single options overridden
    relupo train --print-config > run.yaml         # write the resolved configuration as a template

Errors caused by input (config, data, paths) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from relupo.errors import RelupoError

logger = logging.getLogger("relupo")


# Each command module provides add_parser(subparsers) and run(arguments) -> exit status.
COMMAND_MODULES = ("train", "validate", "eval", "generate", "judge", "plot", "report", "compare", "gamma")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relupo", description="Preference optimization of language models with RePO and its baselines.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"relupo.commands.{name}").add_parser(commands)
    return parser


def _configure_logging() -> None:
    # Only the main process logs when several run under accelerate launch.
    is_main = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(
        level=logging.INFO if is_main else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # relupo prints its own progress; the libraries' per-file progress bars only add noise.
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    _configure_logging()
    try:
        return importlib.import_module(f"relupo.commands.{arguments.command}").run(arguments)
    except RelupoError as error:
        print(f"relupo: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("relupo: interrupted; resume from the last checkpoint with --resume true.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
