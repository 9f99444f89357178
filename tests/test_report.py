"""Per-step metrics, snapshots, plots and the HTML report of a short real run, checked in Chromium."""

import gzip
import json
import os
import re
import shutil
import subprocess

import pytest
import torch

from relupo.cli import main
from relupo.config import load_config
from relupo.report.figures import gradient_weight_curves
from relupo.snapshots import list_snapshots, read_snapshot
from relupo.train import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, bundled_data_path):
    """A 4-step RePO run on 48 bundled HH-RLHF rows, with snapshots every 2 steps."""
    root = tmp_path_factory.mktemp("report")
    data = root / "pairs.jsonl"
    with gzip.open(bundled_data_path, "rt", encoding="utf-8") as source:
        data.write_text("".join(next(source) for _ in range(48)), encoding="utf-8")
    options = {
        "train_data": str(data), "output_dir": str(root / "run"), "max_length": 64, "max_prompt_length": 32,
        "per_device_train_batch_size": 8, "eval_split": 0.25, "max_steps": 4, "eval_steps": 2,
        "snapshot_steps": 2, "save_steps": 0, "gamma": 0.3,
    }
    train(load_config(None, options))
    return root / "run"


def read_records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_step_metrics_quantiles_and_grad_weight(run_dir):
    records = [r for r in read_records(run_dir) if "loss" in r]
    assert len(records) == 4
    for record in records:
        assert record["margin/p10"] <= record["margin/p50"] <= record["margin/p90"]
        # RePO's dL/dM is -1 on active pairs and 0 elsewhere.
        assert record["grad_weight"] == pytest.approx(-record["active_fraction"])


def test_snapshots_steps_and_contents(run_dir):
    steps = [read_snapshot(path).step for path in list_snapshots(run_dir)]
    assert steps == [0, 2, 4]
    snapshot = read_snapshot(list_snapshots(run_dir)[-1])
    assert snapshot.loss_type == "repo"
    assert snapshot.gamma == 0.3
    train_split = snapshot.splits["train"]
    assert len(snapshot.pair_ids["train"]) == train_split["margins"].numel() == 36
    assert torch.equal(train_split["active"], train_split["margins"] < 0.3)
    assert torch.equal(train_split["grad_weights"], -(train_split["margins"] < 0.3).float())


def test_final_snapshot_matches_eval_margins(run_dir):
    snapshot = read_snapshot(list_snapshots(run_dir)[-1])
    rows = [json.loads(line) for line in (run_dir / "eval_margins.jsonl").read_text().splitlines()]
    assert snapshot.pair_ids["eval"] == [row["pair_id"] for row in rows]
    expected = torch.tensor([row["margin_after"] for row in rows])
    assert torch.allclose(snapshot.splits["eval"]["margins"], expected, atol=1e-6)


def test_gradient_weight_curves_values():
    curves = gradient_weight_curves(gamma=0.5, simpo_beta=2.0, simpo_gamma=0.5, dpo_beta=0.1, low=-1.0, high=1.0, points=201)
    repo_margins, repo_weights = curves["RePO (gamma=0.5)"]
    assert repo_weights[repo_margins.index(min(repo_margins, key=lambda m: abs(m - 0.0)))] == 1.0
    assert repo_weights[repo_margins.index(min(repo_margins, key=lambda m: abs(m - 0.8)))] == 0.0
    simpo_margins, simpo_weights = curves["SimPO (beta=2, gamma=0.5)"]
    # At M = gamma, SimPO's weight is beta * sigmoid(0) = beta / 2.
    assert simpo_weights[simpo_margins.index(min(simpo_margins, key=lambda m: abs(m - 0.5)))] == pytest.approx(1.0)
    dpo_margins, dpo_weights = curves["DPO (beta=0.1), margin h"]
    assert dpo_weights[dpo_margins.index(min(dpo_margins, key=lambda m: abs(m)))] == pytest.approx(0.05)


def test_plot_writes_pngs(run_dir, tmp_path):
    assert main(["plot", str(run_dir), "--output-dir", str(tmp_path)]) == 0
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["active_fraction.png", "curves.png", "grad_weight.png", "margin_distribution.png", "schedules.png"]
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 10_000


def chromium_images(html_path, tmp_path):
    """Load the page in headless Chromium; return (loaded, total) images written by its inline script."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package before the tests")
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    completed = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=5000", "--dump-dom", html_path.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    match = re.search(r'data-images-loaded="(\d+)" data-images-total="(\d+)"', completed.stdout)
    assert match, completed.stdout[:2000]
    return int(match.group(1)), int(match.group(2))


def test_report_single_run_renders(run_dir, tmp_path):
    output = tmp_path / "report.html"
    assert main(["report", str(run_dir), "--output", str(output)]) == 0
    text = output.read_text()
    assert "http://" not in text
    assert "https://" not in text
    assert text.count('src="data:image/png;base64,') == 5
    assert "eval/accuracy before -&gt; after" in text
    assert chromium_images(output, tmp_path) == (5, 5)


def test_report_several_runs_has_comparison(run_dir, tmp_path):
    second = tmp_path / "second"
    shutil.copytree(run_dir, second)
    output = tmp_path / "both.html"
    assert main(["report", str(run_dir), str(second), "--output", str(output)]) == 0
    text = output.read_text()
    assert "<h2>Comparison</h2>" in text
    # Overlaid curves plus five figures per run.
    assert text.count('src="data:image/png;base64,') == 11
