"""The README's main job: `relupo train` on the bundled default must improve held-out accuracy."""

import json

from relupo.cli import main


def test_bundled_default_improves_heldout_accuracy(tmp_path):
    output_dir = tmp_path / "default"
    assert main(["train", "--output-dir", str(output_dir)]) == 0

    summary = json.loads((output_dir / "summary.json").read_text())
    before, after = summary["eval_before"]["accuracy"], summary["eval_after"]["accuracy"]
    assert summary["train_pairs"] == 1962
    assert summary["eval_pairs"] == 346
    assert after - before >= 0.05, f"held-out accuracy {before:.4f} -> {after:.4f}"
    assert summary["eval_after"]["margin"] > summary["eval_before"]["margin"]
