"""`relupo train` on bad input: one line naming file, row, field and fix; no traceback, no training."""

import json
import logging
import subprocess
import sys

import pytest

from relupo.cli import main


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows), encoding="utf-8")
    return path


GOOD = {"prompt": "\n\nHuman: Hi\n\nAssistant:", "chosen": " Hello there.", "rejected": " Go away."}


def run_train(capsys, tmp_path, *arguments):
    output_dir = tmp_path / "run"
    status = main(["train", "--output-dir", str(output_dir), "--max-steps", "1", *arguments])
    captured = capsys.readouterr()
    return status, captured.err, output_dir


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([GOOD, "{not json"], 'pairs.jsonl, line 2: invalid JSON'),
        ([GOOD, {"prompt": "p", "chosen": "a"}], 'pairs.jsonl, line 2: field "rejected" is missing; the row has columns "prompt", "chosen". Set rejected_column'),
        ([GOOD, {"prompt": "p", "chosen": "  ", "rejected": "b"}], 'pairs.jsonl, line 2: field "chosen" is empty'),
        ([GOOD, {"prompt": "p", "chosen": 3, "rejected": "b"}], 'pairs.jsonl, line 2: field "chosen"'),
        ([GOOD, {"prompt": None, "chosen": "a", "rejected": "b"}], 'pairs.jsonl, line 2: field "prompt"'),
    ],
)
def test_bad_row_stops_before_training(capsys, tmp_path, rows, expected):
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    status, err, output_dir = run_train(capsys, tmp_path, "--train-data", str(data))
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("relupo: error: ")
    assert expected in lines[0]
    assert "Traceback" not in err
    assert not (output_dir / "metrics.jsonl").exists()


def test_missing_file(capsys, tmp_path):
    status, err, _ = run_train(capsys, tmp_path, "--train-data", str(tmp_path / "nope.jsonl"))
    assert status == 2
    assert "nope.jsonl" in err
    assert "not found" in err
    assert len(err.strip().splitlines()) == 1


def test_unknown_format(capsys, tmp_path):
    path = tmp_path / "pairs.xml"
    path.write_text("<pairs/>", encoding="utf-8")
    status, err, _ = run_train(capsys, tmp_path, "--train-data", str(path))
    assert status == 2
    assert len(err.strip().splitlines()) == 1
    assert "pairs.xml" in err
    assert ".jsonl" in err


def test_skip_bad_rows_counts_and_reports(capsys, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    rows = [GOOD] * 20 + ["{not json", {"prompt": "p", "chosen": "", "rejected": "b"}]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    status, err, output_dir = run_train(capsys, tmp_path, "--train-data", str(data), "--skip-bad-rows", "--eval-split", "0.2", "--max-length", "64", "--max-prompt-length", "32")
    assert status == 0, err
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["train_pairs"] + summary["eval_pairs"] == 20
    log = caplog.text
    assert "20 of 22 rows kept; dropped: 2 invalid row (skip_bad_rows)" in log
    assert "skipped invalid row: " in log
    assert "pairs.jsonl, line 21: invalid JSON" in log
    assert 'pairs.jsonl, line 22: field "chosen" is empty' in log


def test_entry_point_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "relupo", "train", "--train-data", str(tmp_path / "missing.jsonl"), "--output-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("relupo: error: ")
