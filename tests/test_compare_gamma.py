"""relupo compare (grid, per-run configs, spread across seeds, one real two-run comparison) and gamma calibration."""

import gzip
import json

import pytest
import torch

from relupo.calibrate import active_shares, recommend
from relupo.commands.compare import parse_seeds
from relupo.compare import compare, plan_runs, run_config, summarize_groups
from relupo.config import load_config
from relupo.errors import ConfigError


def test_plan_runs_grid():
    runs = plan_runs(["repo", "dpo"], [0.3, 0.7], [1, 2])
    assert [r.name for r in runs] == [
        "repo-gamma0.3-seed1", "repo-gamma0.3-seed2", "repo-gamma0.7-seed1", "repo-gamma0.7-seed2", "dpo-seed1", "dpo-seed2",
    ]
    assert {r.group for r in runs} == {"repo gamma=0.3", "repo gamma=0.7", "dpo"}


def test_plan_runs_rejects_unknown_loss():
    with pytest.raises(ConfigError, match="nope"):
        plan_runs(["nope"], None, [1])


def test_parse_seeds():
    assert parse_seeds("3", 42) == [42, 43, 44]
    assert parse_seeds("1,7", 42) == [1, 7]


def test_run_config_drops_unused_hyperparameters(tmp_path):
    base = load_config(None, {"loss_type": "simpo", "beta": 2.5, "gamma": 0.4})
    dpo_run, repo_run = plan_runs(["dpo", "repo"], None, [5])
    dpo_config = run_config(base, dpo_run, tmp_path)
    assert (dpo_config.objective.loss_type, dpo_config.objective.gamma, dpo_config.objective.beta) == ("dpo", None, 2.5)
    repo_config = run_config(base, repo_run, tmp_path)
    assert (repo_config.objective.beta, repo_config.objective.gamma) == (None, 0.4)
    assert repo_config.training.seed == 5
    assert repo_config.training.output_dir == str(tmp_path / "runs" / "repo-seed5")
    assert base.objective.loss_type == "simpo"


def fake_result(loss_type, seed, accuracy, margin, seconds, rss):
    return {
        "run": {"name": f"{loss_type}-{seed}", "group": loss_type, "loss_type": loss_type, "seed": seed, "gamma": None},
        "summary": {"hyperparameters": {"gamma": 0.5}, "eval_before": {"accuracy": 0.5}, "eval_after": {"accuracy": accuracy, "margin": margin},
                    "train_runtime_seconds": seconds},
        "process_wall_seconds": seconds + 10, "peak_rss_mib": rss, "run_dir": f"runs/{loss_type}-{seed}",
    }


def test_summarize_groups_spread():
    results = [fake_result("repo", s, a, m, 100, r) for s, a, m, r in ((1, 0.60, 0.1, 500), (2, 0.64, 0.3, 520), (3, 0.62, 0.2, 510))]
    (group,) = summarize_groups(results)
    assert group["eval_accuracy"]["mean"] == pytest.approx(0.62)
    # Sample standard deviation of 0.60, 0.64, 0.62: sqrt((0.0004 + 0.0004 + 0) / 2) = 0.02.
    assert group["eval_accuracy"]["std"] == pytest.approx(0.02)
    assert (group["eval_accuracy"]["min"], group["eval_accuracy"]["max"]) == (0.60, 0.64)
    assert group["eval_margin"]["mean"] == pytest.approx(0.2)
    assert group["peak_rss_mib"] == 520
    assert group["wall_seconds"]["mean"] == 110
    assert (group["hyperparameter_count"], group["reference_model"]) == (1, False)


def test_active_shares_hand_computed():
    margins = torch.tensor([-1.0, 0.0, 0.2, 0.6, 1.5])
    shares = active_shares(margins, [0.0, 0.5, 1.0])
    assert [row["active_fraction"] for row in shares] == [0.2, 0.6, 0.8]
    # gamma 0.5: ReLU(0.5 - M) = 1.5, 0.5, 0.3, 0, 0 -> mean 0.46.
    assert shares[1]["loss"] == pytest.approx(0.46)


def test_recommend_breaks_ties_by_margin():
    rows = [{"gamma": 0.2, "eval_accuracy": 0.6, "eval_margin": 0.1}, {"gamma": 0.5, "eval_accuracy": 0.6, "eval_margin": 0.3},
            {"gamma": 1.0, "eval_accuracy": 0.55, "eval_margin": 0.9}]
    assert recommend(rows)["gamma"] == 0.5


def test_compare_two_methods_end_to_end(tmp_path, bundled_data_path):
    data = tmp_path / "pairs.jsonl"
    with gzip.open(bundled_data_path, "rt", encoding="utf-8") as source:
        data.write_text("".join(next(source) for _ in range(24)), encoding="utf-8")
    base = load_config(None, {"train_data": str(data), "max_length": 48, "max_prompt_length": 24, "per_device_train_batch_size": 6,
                              "eval_split": 0.25, "max_steps": 1, "save_steps": 0, "snapshot_steps": 0})
    comparison = compare(base, ["repo", "dpo"], None, [42], tmp_path / "compare")
    groups = {group["group"]: group for group in comparison["groups"]}
    assert set(groups) == {"repo", "dpo"}
    assert groups["dpo"]["reference_model"] is True
    # Both runs are scored on the same held-out pairs before training.
    assert groups["repo"]["eval_accuracy_before"] == groups["dpo"]["eval_accuracy_before"]
    for name in ("repo-seed42", "dpo-seed42"):
        result = json.loads((tmp_path / "compare" / "results" / f"{name}.json").read_text())
        assert result["summary"]["eval_pairs"] == 6
        assert result["peak_rss_mib"] > 100
    assert (tmp_path / "compare" / "report.html").read_text().count("<img") >= 3
