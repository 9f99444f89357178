"""The `relupo` command line.

    relupo train                                   # the bundled default: stories260K on HH-RLHF pairs
    relupo train --config run.yaml --gamma 0.4     # a YAML config, with single options overridden
    relupo train --print-config > run.yaml         # write the resolved configuration as a template

Errors caused by input (config, data, paths) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from relupo.errors import RelupoError

logger = logging.getLogger("relupo")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    from relupo.config import field_index

    parser.add_argument("--config", metavar="FILE", help="YAML file with options; flags below override single options.")
    for section in ("model", "data", "objective", "training"):
        group = parser.add_argument_group(f"{section} options")
        for name, (field_section, field) in field_index().items():
            if field_section != section:
                continue
            is_bool = field.type in (bool, "bool")
            group.add_argument(
                f"--{name.replace('_', '-')}",
                f"--{name}",
                dest=name,
                metavar="BOOL" if is_bool else "VALUE",
                nargs="?" if is_bool else None,
                const="true" if is_bool else None,
                default=argparse.SUPPRESS,
                help=field.metadata["help"],
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relupo", description="Preference optimization of language models with RePO and its baselines.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="Train a model on preference pairs.", description="Train a model on preference pairs.")
    train.add_argument("--print-config", action="store_true", help="Print the resolved configuration as YAML and exit.")
    _add_config_options(train)
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


def _run_train(arguments: argparse.Namespace) -> int:
    from relupo.config import load_config
    from relupo.train import train

    overrides = {name: value for name, value in vars(arguments).items() if name not in ("command", "config", "print_config")}
    config = load_config(arguments.config, overrides)
    config.validate()
    if arguments.print_config:
        print(config.to_yaml(), end="")
        return 0
    train(config)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    _configure_logging()
    handlers = {"train": _run_train}
    try:
        return handlers[arguments.command](arguments)
    except RelupoError as error:
        print(f"relupo: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("relupo: interrupted; resume from the last checkpoint with --resume true.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
