"""`relupo gamma --config run.yaml`: help choose RePO's gamma for a model and data."""

from __future__ import annotations

import argparse
from pathlib import Path

from relupo.commands.train import add_config_options, config_from_arguments

DESCRIPTION = """Compute the margin M of the starting model on the training pairs and show, for each
candidate gamma, the share of pairs it would leave active (M < gamma) at the first step. With
--probe, train --probe-steps optimizer steps with each candidate and recommend the gamma with the
best held-out accuracy. Writes gamma.json and report.html to --gamma-dir."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("gamma", help="Help choose gamma: active shares and probe trainings.", description=DESCRIPTION)
    parser.add_argument("--gammas", default="0.1,0.2,0.3,0.5,0.7,1.0", help="Comma-separated candidate gammas. Default: 0.1,0.2,0.3,0.5,0.7,1.0.")
    parser.add_argument("--max-pairs", type=int, default=1024, help="Training pairs scored for the margin distribution (a seeded sample). Default: 1024.")
    parser.add_argument("--probe", action="store_true", help="Also train briefly with each candidate gamma and recommend one.")
    parser.add_argument("--probe-steps", type=int, default=30, help="Optimizer steps of each probe training. Default: 30.")
    parser.add_argument("--gamma-dir", default="runs/gamma", help="Directory for probe runs, gamma.json and report.html. Default: runs/gamma.")
    add_config_options(parser)


def run(arguments: argparse.Namespace) -> int:
    from relupo import calibrate
    from relupo.commands.compare import parse_floats

    config = config_from_arguments(arguments)
    calibrate.check_config(config)
    gammas = parse_floats(arguments.gammas, "--gammas")
    output_dir = Path(arguments.gamma_dir)

    margins = calibrate.starting_margins(config, arguments.max_pairs)
    shares = calibrate.active_shares(margins, gammas)
    print(f"margin M of the starting model on {margins.numel()} training pairs: mean {margins.mean().item():.4f}")
    print(calibrate.format_active_table(shares))

    probe_rows, best = None, None
    if arguments.probe:
        probe_rows = calibrate.probe(config, gammas, arguments.probe_steps, output_dir)
        best = calibrate.recommend(probe_rows)
        print(calibrate.format_probe_table(probe_rows, best))
        print(f"recommended gamma: {best['gamma']:g} (held-out accuracy {best['eval_accuracy']:.4f} after {arguments.probe_steps} steps)")
    report = calibrate.write_gamma_report(margins, shares, probe_rows, best, config, output_dir, arguments.probe_steps if arguments.probe else None)
    print(f"evidence written to {output_dir / 'gamma.json'} and {report}")
    return 0
