"""`relupo train`: train a model on preference pairs."""

from __future__ import annotations

import argparse

from relupo.config import field_index


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """Add --config FILE and one flag per configuration option, grouped by section."""
    parser.add_argument("--config", metavar="FILE", help="YAML file with options; flags below override single options.")
    for section in ("model", "data", "objective", "training"):
        group = parser.add_argument_group(f"{section} options")
        for name, (field_section, field) in field_index().items():
            if field_section == section:
                add_option(group, name, field)


def add_option(group, name: str, field) -> None:
    """Add the flag --name-with-dashes (and --name_with_underscores) for one configuration option."""
    is_bool = field.type in (bool, "bool")
    group.add_argument(
        f"--{name.replace('_', '-')}",
        f"--{name}",
        dest=name,
        metavar="BOOL" if is_bool else "VALUE",
        nargs="?" if is_bool else None,
        const="true" if is_bool else None,
        default=argparse.SUPPRESS,
        # argparse formats help with %, so a literal percent sign must be doubled.
        help=field.metadata["help"].replace("%", "%%"),
    )


def config_from_arguments(arguments: argparse.Namespace, ignored: tuple[str, ...] = ()):
    """Build and validate the TrainConfig from --config and the option flags present."""
    from relupo.config import load_config

    overrides = {name: value for name, value in vars(arguments).items() if name in field_index() and name not in ignored}
    config = load_config(arguments.config, overrides)
    config.validate()
    return config


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="Train a model on preference pairs.", description="Train a model on preference pairs.")
    parser.add_argument("--print-config", action="store_true", help="Print the resolved configuration as YAML and exit.")
    add_config_options(parser)


def run(arguments: argparse.Namespace) -> int:
    from relupo.train import train

    config = config_from_arguments(arguments)
    if arguments.print_config:
        print(config.to_yaml(), end="")
        return 0
    train(config)
    return 0
