"""Shared fixtures. Tests load models and data from local paths only, never from a hub."""

import gzip
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from relupo.config import BUNDLED_DATA, BUNDLED_MODEL  # noqa: E402


@pytest.fixture(scope="session")
def bundled_model_dir() -> str:
    return BUNDLED_MODEL


@pytest.fixture(scope="session")
def bundled_data_path() -> str:
    return BUNDLED_DATA


@pytest.fixture(scope="session")
def bundled_rows_file(tmp_path_factory, bundled_data_path):
    """Return a function that writes the first `count` bundled HH-RLHF rows to a new JSONL file."""

    def write(count: int) -> Path:
        path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
        with gzip.open(bundled_data_path, "rt", encoding="utf-8") as source:
            path.write_text("".join(next(source) for _ in range(count)), encoding="utf-8")
        return path

    return write


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Give every test session its own tokenized-data cache, never the user's."""
    monkeypatch.setenv("RELUPO_CACHE", str(tmp_path_factory.getbasetemp() / "relupo-cache"))


@pytest.fixture
def tests_dir() -> Path:
    return Path(__file__).parent
