"""Print the Markdown tables of docs/benchmarks.md from a results file of bench/bench_trl.py.

    python bench/report.py bench/results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def label(run: dict) -> str:
    parts = [run["trainer"]]
    if run["trainer"].startswith("relupo"):
        parts.append(f"skip {run['skip']}")
        parts.append("shared prompt" if run["share_prompt"] else "separate")
        parts.append("grouped" if run["length_grouping"] else "ungrouped")
    return ", ".join(parts)


def main() -> None:
    report = json.loads(Path(sys.argv[1]).read_text())
    peak = report["matmul_peak_flops"]
    print(f"Machine: {report['machine']['cpu_model']}, {report['machine']['logical_cpus']} logical CPUs, {report['threads']} torch threads.")
    print(f"float32 matmul peak measured in the run: {peak / 1e9:.1f} GFLOP/s.")
    during = report.get("load_average_one_minute_during", [])
    print(f"Load average before: {report['load_average_before'][0]:.2f}; one-minute load after each run: "
          f"{', '.join(f'{x:.1f}' for x in during)}.\n")
    for model, info in report["models"].items():
        runs = [r for r in report["runs"] if r["model"] == model]
        print(f"### {model} ({info['parameters'] / 1e6:.2f}M parameters, {info['mean_pair_tokens']:.0f} tokens per pair)\n")
        print("| configuration | gamma | active share | pairs/s | tokens/s | model FLOP/s (share of matmul peak) | peak RSS MiB |")
        print("|---|---|---|---|---|---|---|")
        for run in runs:
            active = f"{run['active_fraction']:.2f}" if "active_fraction" in run else "-"
            print(f"| {label(run)} | {run['gamma']} | {active} | {run['pairs_per_second']:.2f} | {run['tokens_per_second']:.0f} | "
                  f"{run['model_flops_per_second'] / 1e9:.1f} G ({run['model_flops_per_second'] / peak:.0%}) | {run['peak_resident_mib']:.0f} |")
        default = [r for r in runs if r["gamma"] == 0.5 and r.get("skip") == "auto" and r["share_prompt"] and r["length_grouping"]]
        relupo = {r["trainer"]: r for r in default if r["trainer"].startswith("relupo")}
        trl = {r["trainer"]: r for r in default if r["trainer"].startswith("trl")}
        if relupo and trl:
            print("\n| ratio of pairs/s | " + " | ".join(trl) + " |")
            print("|---|" + "---|" * len(trl))
            for name, run in relupo.items():
                print(f"| {name} | " + " | ".join(f"{run['pairs_per_second'] / other['pairs_per_second']:.2f}x" for other in trl.values()) + " |")
        print()


if __name__ == "__main__":
    main()
