"""`relupo report RUN_DIR [RUN_DIR ...]`: write one self-contained HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="Write a self-contained HTML report of one or several runs.",
        description="Write one HTML file with each run's configuration, summary and figures (embedded as PNG, so "
        "the file opens without network access); for several runs also a comparison table and overlaid curves.",
    )
    parser.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="output_dir of one or more relupo train runs.")
    parser.add_argument("--output", default=None, help="HTML file to write. Default: RUN_DIR/report.html for one run, report.html for several.")
    parser.add_argument("--title", default=None, help="Page title. Default: the run name.")


def run(arguments: argparse.Namespace) -> int:
    from relupo.report import write_run_report

    default = Path(arguments.run_dirs[0]) / "report.html" if len(arguments.run_dirs) == 1 else Path("report.html")
    print(write_run_report(arguments.run_dirs, arguments.output or default, arguments.title))
    return 0
