"""`relupo validate` on the bad-data fixture corpus: the exact lines and exit status of every case.

The fixtures are written by tests/fixtures/bad_data/generate.py. Every case also goes through the
loader that training uses, which must stop with the same one-line DataError or read the same pairs.
"""

from pathlib import Path

import pytest

from relupo.cli import main
from relupo.config import BUNDLED_MODEL, DataConfig
from relupo.data.loading import load_pairs
from relupo.errors import DataError

FIXTURES = Path(__file__).parent / "fixtures" / "bad_data"

# (command-line arguments after `relupo validate`, exit status, every line printed on stdout)
CASES = [
    (
        ['blank_lines.jsonl'],
        1,
        [
            'blank_lines.jsonl: 0 rows read, 0 usable',
            'blank_lines.jsonl: has problems: the input contains no rows; give a file with at least one preference pair.',
        ],
    ),
    (
        ['bom_crlf.jsonl'],
        0,
        [
            'bom_crlf.jsonl: 2 rows read, 2 usable (text format)',
            'bom_crlf.jsonl: usable, 2 pairs.',
        ],
    ),
    (
        ['crlf.csv'],
        0,
        [
            'crlf.csv: 2 rows read, 2 usable (text format)',
            'crlf.csv: usable, 2 pairs.',
        ],
    ),
    (
        ['duplicates.jsonl'],
        0,
        [
            'duplicates.jsonl, lines 3, 4 (2 rows): repeats the pair of line 1 (same prompt, chosen and rejected); kept, set drop_duplicates to true to drop repeats.',
            'duplicates.jsonl: 4 rows read, 4 usable (text format); duplicates kept: 2',
            'duplicates.jsonl: usable, 4 pairs.',
        ],
    ),
    (
        ['empty.jsonl'],
        1,
        [
            'empty.jsonl: 0 rows read, 0 usable',
            'empty.jsonl: has problems: the input contains no rows; give a file with at least one preference pair.',
        ],
    ),
    (
        ['empty_response.jsonl'],
        1,
        [
            'empty_response.jsonl, line 2: field "chosen" is empty; every pair needs a non-empty chosen and rejected response.',
            'empty_response.jsonl, line 3: field "rejected" is empty; every pair needs a non-empty chosen and rejected response.',
            'empty_response.jsonl: 3 rows read, 1 usable (text format); dropped: 2 invalid',
            'empty_response.jsonl: has problems: 2 invalid rows; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ['good.jsonl'],
        0,
        [
            'good.jsonl: 2 rows read, 2 usable (text format)',
            'good.jsonl: usable, 2 pairs.',
        ],
    ),
    (
        ['gzip_named_plain.jsonl'],
        2,
        [
            'gzip_named_plain.jsonl: the file is gzip-compressed but its name does not end in .gz; add .gz to the name.',
            'gzip_named_plain.jsonl: unreadable; 0 rows read before the error.',
        ],
    ),
    (
        ['hh_problems.jsonl'],
        1,
        [
            'hh_problems.jsonl, line 2: field "chosen" has no "\\n\\nAssistant:" turn; an HH transcript must end with an assistant response.',
            'hh_problems.jsonl, line 3: fields "chosen" and "rejected" differ before their first "\\n\\nAssistant:" turn; an HH pair must share the dialogue and differ only in the final response.',
            'hh_problems.jsonl, line 4: the final HH response is empty, so the pair is dropped.',
            'hh_problems.jsonl: 4 rows read, 1 usable (hh format); dropped: 2 invalid, 1 empty final response in HH transcript',
            'hh_problems.jsonl: has problems: 2 invalid rows; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ['identical.jsonl'],
        0,
        [
            'identical.jsonl, line 2: chosen and rejected are identical, so the pair states no preference and is dropped.',
            'identical.jsonl: 2 rows read, 1 usable (text format); dropped: 1 identical chosen and rejected',
            'identical.jsonl: usable, 1 pair.',
        ],
    ),
    (
        ['invalid_json.jsonl'],
        1,
        [
            'invalid_json.jsonl, line 3: invalid JSON (Expecting property name enclosed in double quotes at column 33); each line must be one JSON object.',
            'invalid_json.jsonl: 3 rows read, 2 usable (text format); dropped: 1 invalid',
            'invalid_json.jsonl: has problems: 1 invalid row; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ['json_named_parquet.parquet'],
        2,
        [
            'json_named_parquet.parquet: the name ends in .parquet but the file is not Parquet (it starts like JSON text); rename it to match its content, for example .jsonl for JSON Lines.',
            'json_named_parquet.parquet: unreadable; 0 rows read before the error.',
        ],
    ),
    (
        ['late_system.jsonl'],
        1,
        [
            'late_system.jsonl, line 1: field "chosen": conversation message 2 is a system message; a system message may only come first.',
            'late_system.jsonl: 1 rows read, 0 usable; dropped: 1 invalid',
            'late_system.jsonl: has problems: 1 invalid row; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ['list_in_text.jsonl'],
        1,
        [
            'list_in_text.jsonl, line 2: field "chosen" is a list, not a string; the rows are read as text format, so set data_format to conversational if they hold message lists.',
            'list_in_text.jsonl: 2 rows read, 1 usable (text format); dropped: 1 invalid',
            'list_in_text.jsonl: has problems: 1 invalid row; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ['missing_field.jsonl'],
        1,
        [
            'missing_field.jsonl, line 2: field "chosen" is missing; the row has columns "prompt", "answer", "rejected". Set chosen_column to the column that holds it.',
            'missing_field.jsonl: 2 rows read, 1 usable (text format); dropped: 1 invalid',
            'missing_field.jsonl: has problems: 1 invalid row; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ['mixed_formats.jsonl'],
        1,
        [
            "mixed_formats.jsonl, line 2: the row is in conversational format, but the input's rows are in text format (detected from line 1); one input must use one format, so convert the row or move it to a separate file.",
            "mixed_formats.jsonl, line 3: the row is in hh format, but the input's rows are in text format (detected from line 1); one input must use one format, so convert the row or move it to a separate file.",
            'mixed_formats.jsonl: 3 rows read, 1 usable (text format); dropped: 2 invalid',
            'mixed_formats.jsonl: has problems: 2 invalid rows; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ['no_assistant.jsonl'],
        1,
        [
            'no_assistant.jsonl, line 2: field "chosen" has no assistant message after the prompt; each conversation needs an assistant response.',
            'no_assistant.jsonl: 2 rows read, 1 usable (conversational format); dropped: 1 invalid',
            'no_assistant.jsonl: has problems: 1 invalid row; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ['not_a_list.json'],
        2,
        [
            'not_a_list.json: the top-level JSON value is str, not a list; a .json file must contain a list of rows.',
            'not_a_list.json: unreadable; 0 rows read before the error.',
        ],
    ),
    (
        ['not_gzip.jsonl.gz'],
        2,
        [
            'not_gzip.jsonl.gz: the name ends in .gz but the file is not gzip-compressed (it starts like JSON text); remove .gz from the name or compress the file with gzip.',
            'not_gzip.jsonl.gz: unreadable; 0 rows read before the error.',
        ],
    ),
    (
        ['not_object.jsonl'],
        1,
        [
            'not_object.jsonl, line 2: the row is a list, not a JSON object; each row must map column names to values.',
            'not_object.jsonl, line 3: the row is a string, not a JSON object; each row must map column names to values.',
            'not_object.jsonl, line 4: the row is a number (7), not a JSON object; each row must map column names to values.',
            'not_object.jsonl: 4 rows read, 1 usable (text format); dropped: 3 invalid',
            'not_object.jsonl: has problems: 3 invalid rows; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ['not_utf8.jsonl'],
        1,
        [
            'not_utf8.jsonl, line 3: invalid UTF-8 (byte 0xe9 at column 16); save the file as UTF-8.',
            'not_utf8.jsonl: 3 rows read, 2 usable (text format); dropped: 1 invalid',
            'not_utf8.jsonl: has problems: 1 invalid row; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ['nul_byte.jsonl'],
        1,
        [
            'nul_byte.jsonl, line 3: the line contains a NUL byte (column 14); the file is binary, UTF-16 encoded or damaged. Remove the NUL bytes or write the file again as UTF-8 JSON Lines.',
            'nul_byte.jsonl: 3 rows read, 2 usable (text format); dropped: 1 invalid',
            'nul_byte.jsonl: has problems: 1 invalid row; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ['nul_escaped.jsonl'],
        1,
        [
            'nul_escaped.jsonl, line 3: field "chosen" contains a NUL character (position 3); NUL characters come from binary or damaged files, so remove them.',
            'nul_escaped.jsonl: 3 rows read, 2 usable (text format); dropped: 1 invalid',
            'nul_escaped.jsonl: has problems: 1 invalid row; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ['null_field.jsonl'],
        1,
        [
            'null_field.jsonl, line 2: field "rejected" is null; every pair needs a non-empty chosen and rejected response.',
            'null_field.jsonl: 2 rows read, 1 usable (text format); dropped: 1 invalid',
            'null_field.jsonl: has problems: 1 invalid row; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ['number_field.jsonl'],
        1,
        [
            'number_field.jsonl, line 2: field "prompt" is a number (42), not a string; the text format expects text here.',
            'number_field.jsonl, line 3: field "chosen" is a boolean (true), not a string; the text format expects text here.',
            'number_field.jsonl: 3 rows read, 1 usable (text format); dropped: 2 invalid',
            'number_field.jsonl: has problems: 2 invalid rows; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ['prompt_differs.jsonl'],
        1,
        [
            'prompt_differs.jsonl, line 2: fields "chosen" and "rejected" differ at message 3, a user message in both; chosen and rejected must share the prompt and differ only in the assistant response.',
            'prompt_differs.jsonl, line 3: field "chosen" repeats a prompt that differs from field "prompt" at message 1; chosen and rejected must answer the same prompt, so give only the response or the exact prompt followed by the response.',
            'prompt_differs.jsonl: 3 rows read, 1 usable (conversational format); dropped: 2 invalid',
            'prompt_differs.jsonl: has problems: 2 invalid rows; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ['ragged.csv'],
        1,
        [
            'ragged.csv, row 2: the row has 1 more values than the header has columns; quote values that contain commas.',
            'ragged.csv: 2 rows read, 1 usable (text format); dropped: 1 invalid',
            'ragged.csv: has problems: 1 invalid row; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ['roles_out_of_order.jsonl'],
        1,
        [
            'roles_out_of_order.jsonl, line 2: field "prompt": the prompt has no user message before the response, or starts with an assistant message; after an optional system message, a conversation must start with a user message.',
            'roles_out_of_order.jsonl, line 3: field "chosen" starts with a user message after the prompt; a response may contain only assistant messages.',
            'roles_out_of_order.jsonl: 3 rows read, 1 usable (conversational format); dropped: 2 invalid',
            'roles_out_of_order.jsonl: has problems: 2 invalid rows; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ['same_error_many_rows.jsonl'],
        1,
        [
            'same_error_many_rows.jsonl, lines 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 and 2 more (12 rows): field "chosen" is null; every pair needs a non-empty chosen and rejected response.',
            'same_error_many_rows.jsonl: 13 rows read, 1 usable (text format); dropped: 12 invalid',
            'same_error_many_rows.jsonl: has problems: 12 invalid rows; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ['too_long.jsonl'],
        0,
        [
            'too_long.jsonl: 2 rows read, 2 usable (text format)',
            'too_long.jsonl: usable, 2 pairs.',
        ],
    ),
    (
        ['truncated.jsonl.gz'],
        2,
        [
            'truncated.jsonl.gz: failed to read the file (Compressed file ended before the end-of-stream marker was reached); check that it is complete and not corrupt.',
            'truncated.jsonl.gz: unreadable; 98 rows read before the error.',
        ],
    ),
    (
        ['utf16.jsonl'],
        2,
        [
            'utf16.jsonl: the file is not UTF-8 text (it is UTF-16 text); save it as UTF-8.',
            'utf16.jsonl: unreadable; 0 rows read before the error.',
        ],
    ),
    (
        ['wrong_columns.csv'],
        1,
        [
            'wrong_columns.csv, rows 1, 2 (2 rows): field "chosen" is missing; the row has columns "question", "good", "bad". Set chosen_column to the column that holds it.',
            'wrong_columns.csv: 2 rows read, 0 usable; dropped: 2 invalid',
            'wrong_columns.csv: has problems: 2 invalid rows; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ['wrong_columns.parquet'],
        1,
        [
            'wrong_columns.parquet, rows 1, 2 (2 rows): field "chosen" is missing; the row has columns "question", "good", "bad". Set chosen_column to the column that holds it.',
            'wrong_columns.parquet: 2 rows read, 0 usable; dropped: 2 invalid',
            'wrong_columns.parquet: has problems: 2 invalid rows; training stops at the first one unless skip_bad_rows is true.',
        ],
    ),
    (
        ["identical.jsonl", "--strict"],
        1,
        [
            "identical.jsonl, line 2: chosen and rejected are identical, so the pair states no preference and is dropped.",
            "identical.jsonl: 2 rows read, 1 usable (text format); dropped: 1 identical chosen and rejected",
            "identical.jsonl: usable, 1 pair.",
        ],
    ),
    (
        ["duplicates.jsonl", "--drop-duplicates", "true"],
        0,
        [
            "duplicates.jsonl, lines 3, 4 (2 rows): repeats the pair of line 1; dropped (drop_duplicates is on).",
            "duplicates.jsonl: 4 rows read, 2 usable (text format); dropped: 2 duplicate pair",
            "duplicates.jsonl: usable, 2 pairs.",
        ],
    ),
    (
        ["wrong_columns.parquet", "--prompt-column", "question", "--chosen-column", "good", "--rejected-column", "bad"],
        0,
        [
            "wrong_columns.parquet: 2 rows read, 2 usable (text format)",
            "wrong_columns.parquet: usable, 2 pairs.",
        ],
    ),
    (
        ["too_long.jsonl", "--model-name-or-path", BUNDLED_MODEL, "--max-length", "24", "--max-prompt-length", "8"],
        0,
        [
            "too_long.jsonl, line 2: after truncation to max_length the chosen and rejected tokens are identical, "
            "so the pair is dropped; raise max_length or lower max_prompt_length so the responses keep the part "
            "where they differ.",
            "too_long.jsonl: 2 rows read, 2 usable (text format)",
            f"too_long.jsonl: tokenized with {BUNDLED_MODEL}: 1 of 2 pairs kept; truncated prompts: 1, truncated "
            "responses: 2; dropped: 1 identical chosen and rejected tokens",
            "too_long.jsonl: usable, 1 pair.",
        ],
    ),
    (
        ["good.jsonl", "empty.jsonl", "utf16.jsonl"],
        2,
        [
            "good.jsonl: 2 rows read, 2 usable (text format)",
            "good.jsonl: usable, 2 pairs.",
            "empty.jsonl: 0 rows read, 0 usable",
            "empty.jsonl: has problems: the input contains no rows; give a file with at least one preference pair.",
            "utf16.jsonl: the file is not UTF-8 text (it is UTF-16 text); save it as UTF-8.",
            "utf16.jsonl: unreadable; 0 rows read before the error.",
        ],
    ),
]


def case_id(case) -> str:
    return " ".join(str(argument) for argument in case[0]).replace(BUNDLED_MODEL, "bundled-model")


@pytest.fixture
def in_fixtures(monkeypatch):
    monkeypatch.chdir(FIXTURES)


@pytest.mark.parametrize(("arguments", "status", "lines"), CASES, ids=[case_id(c) for c in CASES])
def test_validate_case(in_fixtures, capsys, arguments, status, lines):
    assert main(["validate", *arguments]) == status
    assert capsys.readouterr().out.splitlines() == lines


def test_corpus_has_every_fixture_in_a_case():
    named = {case[0][0] for case in CASES}
    files = {path.name for path in FIXTURES.iterdir() if path.name != "generate.py"}
    assert files == named
    assert len(files) >= 25


def first_problem(lines: list[str]) -> str:
    """The message training raises: the first invalid-row line, or the unreadable-input line."""
    for line in lines:
        if "repeats the pair" in line or "are identical, so" in line or "final HH response is empty" in line:
            continue
        return line
    raise AssertionError("no problem line")


SINGLE_FILE_CASES = [case for case in CASES if len(case[0]) == 1]


@pytest.mark.parametrize(("arguments", "status", "lines"), SINGLE_FILE_CASES, ids=[case_id(c) for c in SINGLE_FILE_CASES])
def test_training_loader_agrees(in_fixtures, arguments, status, lines):
    """Training reads the file with the same checks: it stops at the same problem or reads the pairs."""
    config = DataConfig(train_data=arguments[0], eval_split=0.0)
    if status == 0:
        loaded = load_pairs(config, seed=0)
        assert len(loaded.train) == int(lines[-1].split("usable, ")[1].split(" ")[0])
        return
    with pytest.raises(DataError) as error:
        load_pairs(config, seed=0)
    message = str(error.value)
    assert "\n" not in message
    if lines[0].startswith(f"{arguments[0]}, line") or lines[0].startswith(f"{arguments[0]}, row"):
        # A grouped line lists several rows; training names the first of them.
        expected = first_problem(lines)
        if " rows): " in expected:
            label, rest = expected.split(", ", 1)
            unit = rest.split(" ")[0].rstrip("s")
            number = rest.split(" ")[1].rstrip(",")
            expected = f"{label}, {unit} {number}: {rest.split(' rows): ', 1)[1]}"
        assert message == expected
    elif status == 2:
        assert message == lines[0]
    else:
        assert message == f"{arguments[0]}: the input contains no rows; give a file with at least one preference pair."


def test_skip_bad_rows_counts_match_validate(in_fixtures):
    loaded = load_pairs(DataConfig(train_data="mixed_formats.jsonl", eval_split=0.0, skip_bad_rows=True), seed=0)
    source = loaded.report.sources[0]
    assert (source.rows_read, source.pairs_kept) == (3, 1)
    assert source.dropped == {"invalid row (skip_bad_rows)": 2}
    assert [issue.location for issue in source.issues] == ["mixed_formats.jsonl, line 2", "mixed_formats.jsonl, line 3"]


def test_drop_duplicates_in_training_loader(in_fixtures):
    kept = load_pairs(DataConfig(train_data="duplicates.jsonl", eval_split=0.0), seed=0)
    dropped = load_pairs(DataConfig(train_data="duplicates.jsonl", eval_split=0.0, drop_duplicates=True), seed=0)
    assert len(kept.train) == 4
    assert kept.report.sources[0].duplicates_kept == 2
    assert [pair.pair_id for pair in dropped.train] == ["duplicates.jsonl:1", "duplicates.jsonl:2"]
    assert dropped.report.sources[0].dropped == {"duplicate pair": 2}


def test_missing_file_exit_status(in_fixtures, capsys):
    assert main(["validate", "no_such_file.jsonl"]) == 2
    assert capsys.readouterr().out.splitlines()[0].startswith("no_such_file.jsonl: file not found; check the path")
