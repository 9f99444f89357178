"""Read preference rows from files, saved datasets or the hub, and normalize them to pairs.

Supported inputs: JSON Lines (`.jsonl`, plain or `.jsonl.gz`), JSON (`.json`: a top-level list of
rows, or JSON Lines), Parquet (`.parquet`), CSV (`.csv`, every cell read as a string), a directory
written by `datasets.save_to_disk`, and a hub dataset id. JSON Lines is streamed line by line, so
each row keeps its line number; other inputs number their rows from 1.

By default the first invalid row raises `DataError`, before any training starts. With
`skip_bad_rows`, invalid rows are skipped, counted and listed in the `DataReport`.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relupo.config import DataConfig
from relupo.data.formats import Columns, PreferencePair, RowError, detect_format, is_empty_response, normalize_row
from relupo.data.sniff import check_file_kind
from relupo.errors import DataError

logger = logging.getLogger(__name__)

SUPPORTED_INPUTS = ".jsonl, .jsonl.gz, .json, .parquet, .csv, a directory saved by datasets.save_to_disk, or a hub dataset id"
_FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet", ".csv")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Rows per chunk when reading Parquet files and `datasets` tables.
_CHUNK_ROWS = 1024
# eval_data that is a DatasetDict or a hub id is read from this split.

REASON_IDENTICAL = "identical chosen and rejected"
REASON_EMPTY_HH = "empty final response in HH transcript"
REASON_INVALID = "invalid row (skip_bad_rows)"
REASON_DUPLICATE = "duplicate pair"


@dataclass(frozen=True)
class RowIssue:
    """A row that is invalid, dropped or a repeat of an earlier row, and what training does with it."""

    location: str  # e.g. "data/train.jsonl, line 7"
    message: str  # the problem and the fix, without the location
    reason: str  # one of the REASON_* values, the key of the drop counts
    kept: bool = False  # True for a duplicate that training keeps

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


@dataclass
class SourceReport:
    """Row counts, drop reasons and skipped rows of one input."""

    source: str
    data_format: str | None = None  # format of the rows, or None until a row parses
    rows_read: int = 0
    pairs_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows
    skipped_rows: list[str] = field(default_factory=list)  # one error message per skipped row
    issues: list[RowIssue] = field(default_factory=list)  # every invalid, dropped or duplicate row, in input order
    duplicates_kept: int = 0
    detected_at: str | None = None  # row the format was detected from, e.g. "line 1"; None when forced

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def record(self, issue: RowIssue) -> None:
        self.issues.append(issue)
        if issue.kept:
            self.duplicates_kept += 1
        else:
            self.drop(issue.reason)


@dataclass
class DataReport:
    """Row counts of every input that `load_pairs` read."""

    sources: list[SourceReport] = field(default_factory=list)

    def summary(self) -> str:
        """Return one line, e.g. "2308 of 2312 rows kept; dropped: 4 identical chosen and rejected"."""
        read = sum(s.rows_read for s in self.sources)
        kept = sum(s.pairs_kept for s in self.sources)
        dropped: dict[str, int] = {}
        for source in self.sources:
            for reason, count in source.dropped.items():
                dropped[reason] = dropped.get(reason, 0) + count
        line = f"{kept} of {read} rows kept"
        if dropped:
            line += "; dropped: " + ", ".join(f"{count} {reason}" for reason, count in dropped.items())
        return line


@dataclass
class LoadedData:
    """Normalized train and eval pairs and the report of how they were read."""

    train: list[PreferencePair]
    eval: list[PreferencePair]
    report: DataReport


@dataclass
class _RawRow:
    number: int  # 1-based line (JSON Lines) or row (every other input)
    value: Any = None
    error: str | None = None  # set when the row itself could not be parsed


@dataclass
class _Input:
    label: str  # how errors name the input, e.g. "data/train.jsonl"
    id_prefix: str  # pair ids are f"{id_prefix}:{number}"
    unit: str  # "line" or "row"
    rows: Iterator[_RawRow]


def load_pairs(config: DataConfig, seed: int) -> LoadedData:
    """Read `train_data` (and `eval_data`) into normalized pairs; raise DataError on bad input.

    Without `eval_data`, a fraction `eval_split` of the train pairs, drawn with `seed`, becomes the
    eval set. Both lists keep the input order.
    """
    columns = Columns(config.prompt_column, config.chosen_column, config.rejected_column, config.group_column)
    report = DataReport()

    train = _load_input(config.train_data, config.train_split, config, columns, report)
    if config.eval_data is not None:
        eval_pairs = _load_input(config.eval_data, config.eval_data_split, config, columns, report)
    elif config.eval_split > 0:
        train, eval_pairs = split_eval(train, config.eval_split, seed, config.train_data)
        logger.info(
            "Held out %d of %d pairs for evaluation (eval_split %g, seed %d)",
            len(eval_pairs), len(train) + len(eval_pairs), config.eval_split, seed,
        )
    else:
        eval_pairs = []
    return LoadedData(train=train, eval=eval_pairs, report=report)


def split_eval(
    pairs: list[PreferencePair], fraction: float, seed: int, label: str
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Split pairs into (train, eval) with `round(fraction * n)` eval pairs (at least one each)."""
    if len(pairs) < 2:
        raise DataError(
            f"{label}: {len(pairs)} pair left after loading, too few to hold out eval_split "
            f"{fraction:g}; set eval_split to 0 or give eval_data."
        )
    count = min(max(round(fraction * len(pairs)), 1), len(pairs) - 1)
    held_out = set(random.Random(seed).sample(range(len(pairs)), count))
    train = [pair for index, pair in enumerate(pairs) if index not in held_out]
    eval_pairs = [pair for index, pair in enumerate(pairs) if index in held_out]
    return train, eval_pairs


def read_pairs(
    data: str,
    split: str,
    columns: Columns,
    data_format: str = "auto",
    skip_bad_rows: bool = False,
    drop_duplicates: bool = False,
) -> tuple[list[PreferencePair], SourceReport]:
    """Read and normalize the rows of one input; raise DataError on the first invalid row.

    With `skip_bad_rows`, invalid rows are counted and listed in the returned report instead.
    """
    source = open_input(data, split)
    report = SourceReport(source=source.label, data_format=None if data_format == "auto" else data_format)
    logger.info("Reading %s", source.label)
    pairs = collect_pairs(source, report, columns, skip_bad_rows, drop_duplicates)
    _check_not_empty(source.label, report)
    if report.duplicates_kept:
        logger.warning(
            "%s: %d pairs repeat an earlier row and are kept; set drop_duplicates to true to drop them",
            source.label, report.duplicates_kept,
        )
    logger.info("Read %s as %s rows: %s", source.label, report.data_format, DataReport([report]).summary())
    return pairs, report


def collect_pairs(
    source: _Input, report: SourceReport, columns: Columns, skip_bad_rows: bool = False, drop_duplicates: bool = False
) -> list[PreferencePair]:
    """Normalize every row of `source` into pairs and record each invalid, dropped or repeated row.

    Raises DataError at the first invalid row unless `skip_bad_rows` is set, and when the input
    stops being readable; `report` keeps the counts up to that point.
    """
    pairs: list[PreferencePair] = []
    first_seen: dict[bytes, str] = {}  # digest of (prompt, chosen, rejected) -> "line N" of its first row

    for raw in source.rows:
        report.rows_read += 1
        where = f"{source.unit} {raw.number}"
        location = f"{source.label}, {where}"
        try:
            pair = _parse_row(raw, report, columns, f"{source.id_prefix}:{raw.number}", location, where)
        except RowError as error:
            issue = RowIssue(location, str(error), REASON_INVALID)
            if not skip_bad_rows:
                raise DataError(str(issue)) from None
            report.skipped_rows.append(str(issue))
            report.record(issue)
            continue
        if is_empty_response(pair):
            report.record(RowIssue(location, "the final HH response is empty, so the pair is dropped.", REASON_EMPTY_HH))
            continue
        if pair.chosen == pair.rejected:
            message = "chosen and rejected are identical, so the pair states no preference and is dropped."
            report.record(RowIssue(location, message, REASON_IDENTICAL))
            continue
        first = first_seen.setdefault(_pair_digest(pair), where)
        if first != where:
            if drop_duplicates:
                report.record(RowIssue(location, f"repeats the pair of {first}; dropped (drop_duplicates is on).", REASON_DUPLICATE))
                continue
            message = f"repeats the pair of {first} (same prompt, chosen and rejected); kept, set drop_duplicates to true to drop repeats."
            report.record(RowIssue(location, message, REASON_DUPLICATE, kept=True))
        pairs.append(pair)

    report.pairs_kept = len(pairs)
    return pairs


def _pair_digest(pair: PreferencePair) -> bytes:
    content = json.dumps([pair.prompt, pair.chosen, pair.rejected], ensure_ascii=False)
    return hashlib.sha256(content.encode("utf-8")).digest()


def _load_input(
    data: str, split: str, config: DataConfig, columns: Columns, report: DataReport
) -> list[PreferencePair]:
    pairs, source_report = read_pairs(data, split, columns, config.data_format, config.skip_bad_rows, config.drop_duplicates)
    report.sources.append(source_report)
    return pairs


def _parse_row(
    raw: _RawRow, report: SourceReport, columns: Columns, pair_id: str, location: str, where: str
) -> PreferencePair:
    if raw.error is not None:
        raise RowError(raw.error)
    data_format = report.data_format or detect_format(raw.value, columns)
    try:
        pair = normalize_row(raw.value, data_format, columns, pair_id, location)
    except RowError:
        if report.detected_at is not None:
            _check_same_format(raw.value, columns, report)
        raise
    if report.data_format is None:
        # The first valid row fixes the format of the whole input.
        report.data_format = data_format
        report.detected_at = where
        logger.info("Detected %s rows in %s from %s", data_format, report.source, location)
    return pair


def _check_same_format(row: Any, columns: Columns, report: SourceReport) -> None:
    """Raise RowError when an invalid row is valid in another format than the detected one."""
    try:
        row_format = detect_format(row, columns)
        normalize_row(row, row_format, columns, "", "")
    except RowError:
        return
    if row_format != report.data_format:
        raise RowError(
            f"the row is in {row_format} format, but the input's rows are in {report.data_format} format "
            f"(detected from {report.detected_at}); one input must use one format, so convert the row or "
            f"move it to a separate file."
        )


def _check_not_empty(label: str, report: SourceReport) -> None:
    if report.rows_read == 0:
        raise DataError(f"{label}: the input contains no rows; give a file with at least one preference pair.")
    if report.pairs_kept == 0:
        raise DataError(
            f"{label}: none of the {report.rows_read} rows is a usable pair "
            f"({DataReport([report]).summary()}); check the rows and the *_column options."
        )


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def open_input(data: str, split: str) -> _Input:
    """Pick the reader for `data` from what the path is; raise DataError when none fits."""
    path = Path(data).expanduser()
    if path.is_dir():
        return _saved_dataset(path, data, split)
    if path.is_file():
        check_file_kind(path, data)
        name = path.name.lower()
        if name.endswith((".jsonl", ".jsonl.gz")):
            return _Input(data, path.name, "line", _guard(data, _read_jsonl(path)))
        if name.endswith(".json"):
            return _read_json(path, data)
        if name.endswith(".parquet"):
            return _Input(data, path.name, "row", _guard(data, _read_parquet(path)))
        if name.endswith(".csv"):
            return _read_csv(path, data)
        raise DataError(f"{data}: unsupported file type; supported inputs: {SUPPORTED_INPUTS}.")
    if _HUB_ID.match(data) and not data.lower().endswith(_FILE_SUFFIXES):
        return _hub_dataset(data, split)
    raise DataError(f"{data}: file not found; check the path (supported inputs: {SUPPORTED_INPUTS}).")


def _guard(label: str, rows: Iterator[_RawRow]) -> Iterator[_RawRow]:
    """Turn read failures in the middle of a file (corrupt gzip or Parquet) into DataError."""
    try:
        yield from rows
    except (OSError, EOFError, ValueError) as error:
        raise DataError(f"{label}: failed to read the file ({error}); check that it is complete and not corrupt.") from None


def _read_jsonl(path: Path) -> Iterator[_RawRow]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        yield from _parse_json_lines(handle)


def _parse_json_lines(lines: Iterator[bytes]) -> Iterator[_RawRow]:
    for number, raw in enumerate(lines, start=1):
        try:
            # utf-8-sig drops a byte order mark that some editors write at the start of the file.
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            yield _RawRow(number, error=f"invalid UTF-8 (byte {raw[error.start]:#04x} at column {error.start + 1}); save the file as UTF-8.")
            continue
        if not text.strip():
            continue  # a blank line contains no row
        if "\x00" in text:
            yield _RawRow(
                number,
                error=f"the line contains a NUL byte (column {text.index(chr(0)) + 1}); the file is binary, "
                f"UTF-16 encoded or damaged. Remove the NUL bytes or write the file again as UTF-8 JSON Lines.",
            )
            continue
        try:
            # Without the line break, a truncated line reports its error on this line, not the next.
            yield _RawRow(number, value=json.loads(text.rstrip("\r\n")))
        except json.JSONDecodeError as error:
            yield _RawRow(number, error=f"invalid JSON ({error.msg} at column {error.colno}); each line must be one JSON object.")


def _read_json(path: Path, label: str) -> _Input:
    """Read a JSON file that contains a list of rows, or JSON Lines saved with a .json name."""
    data = _read_bytes(path, label)
    text = _decode(data, label)
    if text.lstrip().startswith("{"):
        return _Input(label, path.name, "line", _parse_json_lines(iter(data.splitlines())))
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{label}, line {error.lineno}: invalid JSON ({error.msg} at column {error.colno}).") from None
    if not isinstance(rows, list):
        raise DataError(f"{label}: the top-level JSON value is {type(rows).__name__}, not a list; a .json file must contain a list of rows.")
    return _Input(label, path.name, "row", (_RawRow(number, value=row) for number, row in enumerate(rows, start=1)))


def _read_csv(path: Path, label: str) -> _Input:
    text = _decode(_read_bytes(path, label), label)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    return _Input(label, path.name, "row", _guard(label, _csv_rows(reader)))


def _csv_rows(reader: csv.DictReader) -> Iterator[_RawRow]:
    try:
        for number, row in enumerate(reader, start=1):
            if None in row:
                # DictReader stores values beyond the header under the key None.
                extra = len(row.pop(None))
                yield _RawRow(number, error=f"the row has {extra} more values than the header has columns; quote values that contain commas.")
            else:
                yield _RawRow(number, value=row)
    except csv.Error as error:
        raise ValueError(f"line {reader.line_num}: {error}") from None


def _read_parquet(path: Path) -> Iterator[_RawRow]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_CHUNK_ROWS):
        for row in batch.to_pylist():
            number += 1
            yield _RawRow(number, value=row)


def _read_bytes(path: Path, label: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise DataError(f"{label}: failed to read the file ({error.strerror}).") from None


def _decode(data: bytes, label: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(f"{label}, line {line}: invalid UTF-8 (byte {data[error.start]:#04x}); save the file as UTF-8.") from None


def _saved_dataset(path: Path, label: str, split: str) -> _Input:
    import datasets

    if not ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        raise DataError(
            f"{label}: the directory is not a dataset saved by datasets.save_to_disk (no state.json or "
            f"dataset_dict.json); give a data file or a saved dataset directory."
        )
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(f"{label}: the saved DatasetDict has no split {split!r}; it has {', '.join(loaded)}. Set train_split.")
        return _Input(f"{label} (split {split})", f"{path.name}[{split}]", "row", _dataset_rows(loaded[split]))
    return _Input(label, path.name, "row", _dataset_rows(loaded))


def _hub_dataset(name: str, split: str) -> _Input:
    import datasets

    try:
        loaded = datasets.load_dataset(name, split=split)
    except (OSError, ValueError) as error:
        # datasets raises FileNotFoundError subclasses for unknown ids, ConnectionError (an
        # OSError) offline, and ValueError for an unknown split.
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(
            f"{name}: not a local file or directory, and loading it as a hub dataset (split {split}) "
            f"failed ({message}); check the path or the dataset id."
        ) from None
    return _Input(f"hub dataset {name} (split {split})", f"{name}[{split}]", "row", _dataset_rows(loaded))


def _dataset_rows(dataset: Any) -> Iterator[_RawRow]:
    number = 0
    for batch in dataset.iter(batch_size=_CHUNK_ROWS):
        names = list(batch)
        for values in zip(*(batch[name] for name in names)):
            number += 1
            yield _RawRow(number, value=dict(zip(names, values)))
