"""`relupo plot RUN_DIR`: write a run's figures as PNG files."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="Write a run's figures as PNG files.",
        description="Write PNG figures of a training run: loss and accuracy, active_fraction and margin percentiles, "
        "margin histograms from the snapshots with gamma marked, the gradient weight against the margin beside "
        "SimPO and DPO, and the learning-rate and gamma schedules.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="output_dir of a relupo train run.")
    parser.add_argument("--output-dir", default=None, help="Directory for the PNG files. Default: RUN_DIR/plots.")


def run(arguments: argparse.Namespace) -> int:
    from relupo.report.figures import save_run_figures
    from relupo.report.runs import load_run

    run_data = load_run(arguments.run_dir)
    paths = save_run_figures(run_data, arguments.output_dir or Path(arguments.run_dir) / "plots")
    for path in paths:
        print(path)
    return 0
