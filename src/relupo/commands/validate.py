"""`relupo validate`: check preference data files without training.

    relupo validate data/train.jsonl
    relupo validate data/train.parquet --prompt-column question --chosen-column good --rejected-column bad
    relupo validate data/train.jsonl --model-name-or-path Qwen/Qwen2.5-0.5B-Instruct --max-length 1024

Rows are read and normalized by the same code as `relupo train` (`relupo.data.loading`), so every
problem reported here is one training would stop at, skip or drop. Unlike training, validation
reads on past invalid rows and lists all of them, one line each: location, problem and fix.
Identical messages on many rows are listed once with their row numbers.

Exit status: 0 when the file is usable, so training would run on it (maybe after dropping rows).
1 when it has invalid rows or no usable pair, and with --strict also when any row would be dropped
or repeats an earlier row. 2 when it cannot be read at all.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field

from relupo.commands.train import add_option
from relupo.config import BUNDLED_MODEL, DataConfig, field_index
from relupo.data.formats import Columns, PreferencePair
from relupo.data.loading import REASON_INVALID, RowIssue, SourceReport, collect_pairs, open_input
from relupo.data.tokenize import (
    REASON_EMPTY_RESPONSE,
    REASON_IDENTICAL_TOKENS,
    REASON_NO_PROMPT_TOKENS,
    REASON_NO_ROOM,
    TokenizeReport,
    tokenize_pairs,
)
from relupo.errors import DataError

EXIT_USABLE, EXIT_PROBLEMS, EXIT_UNREADABLE = 0, 1, 2

# Configuration options that change how a data file is read, normalized or tokenized.
DATA_OPTIONS = (
    "data_format",
    "prompt_column",
    "chosen_column",
    "rejected_column",
    "group_column",
    "train_split",
    "drop_duplicates",
    "max_length",
    "max_prompt_length",
    "model_name_or_path",
    "trust_remote_code",
)

# Row numbers listed for a message shared by many rows, before "and N more".
MAX_LISTED_ROWS = 10

TOKENIZATION_FIXES = {
    REASON_IDENTICAL_TOKENS: (
        "after truncation to max_length the chosen and rejected tokens are identical, so the pair is "
        "dropped; raise max_length or lower max_prompt_length so the responses keep the part where they differ."
    ),
    REASON_NO_ROOM: "the prompt leaves no room for a response within max_length, so the pair is dropped; raise max_length.",
    REASON_NO_PROMPT_TOKENS: "the prompt renders to no tokens, so the first response token cannot be scored; give a non-empty prompt.",
    REASON_EMPTY_RESPONSE: "a response renders to no tokens, so the pair is dropped; check the responses and the tokenizer.",
}

DESCRIPTION = """Check preference data files without training. Every problem is listed with its file,
line or row, field and fix, followed by the counts: rows read, usable pairs, rows dropped by reason.
With --model-name-or-path, the pairs are also tokenized to find rows that truncation would drop.
Exit status: 0 usable, 1 invalid rows or no usable pair (with --strict, also dropped or duplicate
rows), 2 unreadable input."""


@dataclass
class FileResult:
    """Problems and counts that validation found in one input."""

    label: str
    report: SourceReport
    issues: list[RowIssue] = field(default_factory=list)  # loading issues, then tokenization issues
    tokenize_report: TokenizeReport | None = None
    unreadable: str | None = None  # the error that stopped reading, when one did

    @property
    def invalid_rows(self) -> int:
        return sum(1 for issue in self.issues if issue.reason == REASON_INVALID)

    @property
    def usable_pairs(self) -> int:
        if self.tokenize_report is not None:
            return self.tokenize_report.pairs_kept
        return self.report.pairs_kept

    def exit_status(self, strict: bool) -> int:
        if self.unreadable is not None:
            return EXIT_UNREADABLE
        if self.invalid_rows or self.usable_pairs == 0:
            return EXIT_PROBLEMS
        if strict and self.issues:
            return EXIT_PROBLEMS
        return EXIT_USABLE


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("validate", help="Check data files without training.", description=DESCRIPTION)
    parser.add_argument("files", nargs="+", metavar="FILE", help="Data file(s) or saved dataset directories to check.")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="Also exit with status 1 when rows would be dropped (identical or empty responses, truncation) or repeat earlier rows.",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML run configuration; only its data and model options are used.")
    index = field_index()
    group = parser.add_argument_group("data options (as for relupo train)")
    for name in DATA_OPTIONS:
        add_option(group, name, index[name][1])


def run(arguments: argparse.Namespace) -> int:
    from relupo.config import load_config

    overrides = {name: getattr(arguments, name) for name in DATA_OPTIONS if hasattr(arguments, name)}
    config = load_config(arguments.config, overrides)
    config.validate()
    # The model default is the bundled one; tokenize only for a model the user named.
    tokenizer = None
    if "model_name_or_path" in overrides or config.model.model_name_or_path != BUNDLED_MODEL:
        from relupo.modeling import load_tokenizer

        tokenizer = load_tokenizer(config.model)

    status = EXIT_USABLE
    for path in arguments.files:
        result = validate_file(path, config.data, tokenizer)
        print_result(result, config.model.model_name_or_path if tokenizer is not None else None)
        status = max(status, result.exit_status(arguments.strict))
    return status


def validate_file(data: str, config: DataConfig, tokenizer=None) -> FileResult:
    """Read every row of `data` as training would, collecting all problems instead of stopping."""
    columns = Columns(config.prompt_column, config.chosen_column, config.rejected_column, config.group_column)
    try:
        source = open_input(data, config.train_split)
    except DataError as error:
        return FileResult(label=data, report=SourceReport(source=data), unreadable=str(error))

    report = SourceReport(source=source.label, data_format=None if config.data_format == "auto" else config.data_format)
    result = FileResult(label=source.label, report=report)
    try:
        pairs = collect_pairs(source, report, columns, skip_bad_rows=True, drop_duplicates=config.drop_duplicates)
    except DataError as error:
        result.issues = list(report.issues)
        result.unreadable = str(error)
        return result
    result.issues = list(report.issues)

    if tokenizer is not None and pairs:
        result.tokenize_report, tokenize_issues = check_tokenization(pairs, tokenizer, config)
        result.issues.extend(tokenize_issues)
    return result


def check_tokenization(
    pairs: Sequence[PreferencePair], tokenizer, config: DataConfig
) -> tuple[TokenizeReport, list[RowIssue]]:
    """Tokenize and truncate `pairs` as training would; return the counts and one issue per dropped pair."""
    try:
        dataset, report = tokenize_pairs(pairs, tokenizer, config.max_length, config.max_prompt_length)
        kept = set(dataset["pair_id"])
    except DataError:
        # A chat template failed on some pair: tokenize one pair at a time to find every such pair.
        report, kept = TokenizeReport(pairs_in=len(pairs)), set()
        for pair in pairs:
            try:
                single, single_report = tokenize_pairs([pair], tokenizer, config.max_length, config.max_prompt_length)
            except DataError:
                continue
            kept.update(single["pair_id"])
            report.truncated_prompts += single_report.truncated_prompts
            report.truncated_responses += single_report.truncated_responses
            for reason, count in single_report.dropped.items():
                report.dropped[reason] = report.dropped.get(reason, 0) + count
        report.pairs_kept = len(kept)

    issues = []
    for pair in pairs:
        if pair.pair_id in kept:
            continue
        try:
            _, single_report = tokenize_pairs([pair], tokenizer, config.max_length, config.max_prompt_length)
        except DataError as error:
            # The message already starts with the pair's location.
            message = str(error)[len(pair.source) + 2 :]
            issues.append(RowIssue(pair.source, message, "chat template error"))
            report.drop("chat template error")
            continue
        reason = next(iter(single_report.dropped))
        issues.append(RowIssue(pair.source, TOKENIZATION_FIXES.get(reason, reason), reason))
    return report, issues


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def print_result(result: FileResult, model: str | None) -> None:
    for line in format_result(result, model):
        print(line)


def format_result(result: FileResult, model: str | None) -> list[str]:
    """Return the report lines of one input: its problems, its counts and a verdict."""
    lines = format_issues(result.label, result.issues)
    if result.unreadable is not None:
        lines.append(result.unreadable)
        lines.append(f"{result.label}: unreadable; {result.report.rows_read} rows read before the error.")
        return lines
    lines.append(format_counts(result))
    if result.tokenize_report is not None:
        lines.append(f"{result.label}: tokenized with {model}: {result.tokenize_report.summary()}")
    lines.append(format_verdict(result))
    return lines


def format_issues(label: str, issues: Sequence[RowIssue]) -> list[str]:
    """Format one line per distinct message, in input order, listing together the rows that share it."""
    rows_by_message: dict[str, list[str]] = {}
    for issue in issues:
        prefix = f"{label}, "
        where = issue.location[len(prefix) :] if issue.location.startswith(prefix) else issue.location
        rows_by_message.setdefault(issue.message, []).append(where)
    lines = []
    for message, places in rows_by_message.items():
        if len(places) == 1:
            lines.append(f"{label}, {places[0]}: {message}")
            continue
        unit = places[0].split(" ")[0]
        numbers = [place.split(" ", 1)[1] if place.startswith(unit + " ") else place for place in places]
        listed = ", ".join(numbers[:MAX_LISTED_ROWS])
        more = f" and {len(numbers) - MAX_LISTED_ROWS} more" if len(numbers) > MAX_LISTED_ROWS else ""
        lines.append(f"{label}, {unit}s {listed}{more} ({len(places)} rows): {message}")
    return lines


def format_counts(result: FileResult) -> str:
    report = result.report
    line = f"{result.label}: {report.rows_read} rows read, {report.pairs_kept} usable"
    if report.data_format is not None:
        line += f" ({report.data_format} format)"
    if report.dropped:
        reasons = ", ".join(f"{count} {'invalid' if reason == REASON_INVALID else reason}" for reason, count in report.dropped.items())
        line += f"; dropped: {reasons}"
    if report.duplicates_kept:
        line += f"; duplicates kept: {report.duplicates_kept}"
    return line


def format_verdict(result: FileResult) -> str:
    if result.report.rows_read == 0:
        return f"{result.label}: has problems: the input contains no rows; give a file with at least one preference pair."
    if result.invalid_rows:
        return (
            f"{result.label}: has problems: {_count(result.invalid_rows, 'invalid row')}; training stops at "
            f"the first one unless skip_bad_rows is true."
        )
    if result.usable_pairs == 0:
        return f"{result.label}: has problems: no usable pair remains; check the rows and the *_column options."
    return f"{result.label}: usable, {_count(result.usable_pairs, 'pair')}."


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"

