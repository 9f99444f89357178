"""Writing run files so that a kill or a full disk never leaves a half-written file behind unnoticed.

`replace_atomically` writes into a temporary file in the same directory and renames it into place,
so a reader sees the old file or the new one. `append_line` adds one record to a JSON Lines file;
a kill during the write can leave a partial last line, which `read_json_lines` skips. Every
OSError (no space left, permission denied, read-only file system) becomes a one-line RelupoError
that names the file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relupo.errors import RelupoError

logger = logging.getLogger(__name__)


def write_failed(path: Path, error: OSError) -> RelupoError:
    return RelupoError(
        f"{path}: failed to write ({error.strerror or error}); free disk space or fix the permissions of "
        f"output_dir, then continue with --resume true."
    )


def append_line(path: Path, line: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    except OSError as error:
        raise write_failed(path, error) from None


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(temporary_path)`, then rename the temporary file to `path`."""
    temporary = path.with_name(f".tmp-{path.name}")
    try:
        write(temporary)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise write_failed(path, error) from None


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Read the records of a JSON Lines file, skipping a last line cut short by a kill."""
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines):
                raise RelupoError(f"{path}, line {number}: invalid JSON in a record the run wrote; the file is damaged.") from None
            logger.warning("%s: dropped the incomplete last line, written when the previous run was killed", path)
    return records


def check_free_space(directory: Path, needed_bytes: int, what: str) -> None:
    """Raise RelupoError when `directory` has less than `needed_bytes` free."""
    free = shutil.disk_usage(directory).free
    if free < needed_bytes:
        raise RelupoError(
            f"{directory}: {free / 2**20:.0f} MiB free, but about {needed_bytes / 2**20:.0f} MiB is needed for "
            f"{what}; free disk space or choose another --output-dir."
        )
