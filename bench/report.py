"""Print the Markdown tables of docs/benchmarks.md from a results file of bench/bench_trl.py.

    python bench/report.py bench/results.json

A configuration that ran in several rounds shows the median of its rounds' pairs/s and tokens/s,
with the lowest and highest in brackets. Ratios are between medians.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

KEYS = ("model", "trainer", "loss_type", "gamma", "skip", "share_prompt", "length_grouping", "bf16", "per_pair")


def label(run: dict) -> str:
    parts = [run["trainer"]]
    if run["trainer"].startswith("relupo"):
        mechanism = {True: " per pair", False: " two pass"}.get(run.get("per_pair"), "")
        parts.append(f"skip {run['skip']}{mechanism}")
        parts.append("shared prompt" if run["share_prompt"] else "separate")
        parts.append("grouped" if run["length_grouping"] else "ungrouped")
    parts.append("bf16" if run.get("bf16") else "float32")
    return ", ".join(parts)


def spread(run: dict, rate: str, digits: int) -> str:
    low, high = run[rate + "_range"]
    return f"{run[rate]:.{digits}f} ({low:.{digits}f} to {high:.{digits}f})"


def configurations(runs: list[dict]) -> list[dict]:
    """Merge the rounds of each configuration, in the order of first appearance."""
    merged: dict[tuple, dict] = {}
    for run in runs:
        key = tuple(run.get(name) for name in KEYS)
        if key not in merged:
            merged[key] = {**run, "rounds": []}
        merged[key]["rounds"].append(run)
    for configuration in merged.values():
        rounds = configuration["rounds"]
        for rate in ("pairs_per_second", "tokens_per_second"):
            configuration[rate] = statistics.median(r[rate] for r in rounds)
            configuration[rate + "_range"] = (min(r[rate] for r in rounds), max(r[rate] for r in rounds))
        configuration["peak_resident_mib"] = statistics.median(r["peak_resident_mib"] for r in rounds)
        if "active_fraction" in configuration:
            configuration["active_fraction"] = statistics.mean(r["active_fraction"] for r in rounds)
    return list(merged.values())


def main() -> None:
    report = json.loads(Path(sys.argv[1]).read_text())
    peaks = {False: report["matmul_peak_flops"], True: report.get("matmul_peak_flops_bf16")}
    print(f"Machine: {report['machine']['cpu_model']}, {report['machine']['logical_cpus']} logical CPUs, {report['threads']} torch threads.")
    print(f"Matmul peak measured in the run: {peaks[False] / 1e9:.1f} GFLOP/s float32" +
          (f", {peaks[True] / 1e9:.1f} GFLOP/s bf16." if peaks[True] else "."))
    during = report.get("load_average_one_minute_during", [])
    print(f"Load average before: {report['load_average_before'][0]:.2f}; one-minute load after each run: "
          f"{min(during, default=0):.1f} to {max(during, default=0):.1f}.\n")
    for model, info in report["models"].items():
        runs = configurations([r for r in report["runs"] if r["model"] == model])
        rounds = max(len(r["rounds"]) for r in runs)
        print(f"### {model} ({info['parameters'] / 1e6:.2f}M parameters, {info['mean_pair_tokens']:.0f} tokens per pair on average, {rounds} round(s))\n")
        print("| configuration | gamma | active share | pairs/s (range) | tokens/s (range) | positions per pair, autograd + no grad | model FLOP/s (share of matmul peak) | peak RSS MiB |")
        print("|---|---|---|---|---|---|---|---|")
        for run in runs:
            active = f"{run['active_fraction']:.2f}" if "active_fraction" in run else "-"
            positions = run["positions_per_pair"]
            flops = 6 * info["parameters"] * run["tokens_per_second"]
            peak = peaks[bool(run.get("bf16"))]
            share = f"{flops / peak:.0%}" if peak else "peak not measured"
            print(f"| {label(run)} | {run['gamma']} | {active} | {spread(run, 'pairs_per_second', 2)} | {spread(run, 'tokens_per_second', 0)} | "
                  f"{positions['autograd']:.0f} + {positions['no_grad']:.0f} | {flops / 1e9:.1f} G ({share}) | {run['peak_resident_mib']:.0f} |")
        for bf16 in (False, True):
            default = [r for r in runs if r["gamma"] == 0.5 and r.get("skip") == "auto" and r["share_prompt"] and r["length_grouping"] and bool(r.get("bf16")) == bf16]
            relupo = {r["trainer"]: r for r in default if r["trainer"].startswith("relupo")}
            trl = {r["trainer"]: r for r in default if r["trainer"].startswith("trl")}
            if relupo and trl:
                precision = "bf16" if bf16 else "float32"
                print(f"\n| {precision}: ratio of tokens/s (of pairs/s) | " + " | ".join(trl) + " |")
                print("|---|" + "---|" * len(trl))
                for name, run in relupo.items():
                    cells = [f"{run['tokens_per_second'] / other['tokens_per_second']:.2f}x ({run['pairs_per_second'] / other['pairs_per_second']:.2f}x)" for other in trl.values()]
                    print(f"| {name} | " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main()
