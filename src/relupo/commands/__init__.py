"""One module per `relupo` command: `add_parser(subparsers)` defines it, `run(arguments)` executes it."""
