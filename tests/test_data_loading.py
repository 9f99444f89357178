"""Loading pairs from every supported input, the error for each kind of bad input, and the eval split."""

import csv
import gzip
import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from relupo.config import DataConfig
from relupo.data import load_pairs, read_pairs
from relupo.data.formats import Columns
from relupo.data.loading import SUPPORTED_INPUTS
from relupo.errors import DataError

COLUMNS = Columns()

TEXT_ROWS = [
    {"prompt": "\n\nHuman: Hi\n\nAssistant:", "chosen": " Hello", "rejected": " Go away", "subset": "a"},
    {"prompt": "\n\nHuman: 2+2?\n\nAssistant:", "chosen": " 4", "rejected": " 5", "subset": "b"},
    {"prompt": "\n\nHuman: Sky?\n\nAssistant:", "chosen": " Blue, \"mostly\",\nby day", "rejected": " Green", "subset": "a"},
]
CONVERSATIONAL_ROWS = [
    {
        "prompt": [{"role": "user", "content": "Hi"}],
        "chosen": [{"role": "assistant", "content": "Hello"}],
        "rejected": [{"role": "assistant", "content": "Go away"}],
    },
    {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
        "chosen": [{"role": "assistant", "content": "4"}],
        "rejected": [{"role": "assistant", "content": "5"}],
    },
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_lines(path, lines):
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def read(path, **options):
    return read_pairs(str(path), "train", options.pop("columns", COLUMNS), **options)


def content(pairs):
    return [(p.prompt, p.chosen, p.rejected, p.group) for p in pairs]


# ---------------------------------------------------------------------------------------------
# Bundled data
# ---------------------------------------------------------------------------------------------


def test_bundled_hh_counts(bundled_data_path):
    pairs, report = read_pairs(bundled_data_path, "train", COLUMNS)
    assert report.rows_read == 2312
    assert report.pairs_kept == 2308
    assert len(pairs) == 2308
    assert report.data_format == "hh"
    # Lines 87, 517, 926 and 1104 end with an empty final "\n\nAssistant:" turn in chosen.
    assert report.dropped == {"empty final response in HH transcript": 4}
    ids = {pair.pair_id for pair in pairs}
    for line in (87, 517, 926, 1104):
        assert f"test.jsonl.gz:{line}" not in ids
    assert pairs[0].pair_id == "test.jsonl.gz:1"
    assert pairs[0].source == f"{bundled_data_path}, line 1"
    assert pairs[0].prompt[0] == {"role": "user", "content": "what are some pranks with a pen i can do?"}


def test_bundled_summary_and_default_split(bundled_data_path):
    loaded = load_pairs(DataConfig(), seed=42)
    assert loaded.report.summary() == "2308 of 2312 rows kept; dropped: 4 empty final response in HH transcript"
    assert len(loaded.eval) == 346  # round(0.15 * 2308)
    assert len(loaded.train) == 1962


# ---------------------------------------------------------------------------------------------
# Eval split
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def twenty_pairs_file(tmp_path):
    rows = [{"prompt": f"Q{i}:", "chosen": f" yes {i}", "rejected": f" no {i}"} for i in range(20)]
    return write_jsonl(tmp_path / "twenty.jsonl", rows)


def test_eval_split_seeded_and_disjoint(twenty_pairs_file):
    config = DataConfig(train_data=str(twenty_pairs_file), eval_split=0.25)
    first = load_pairs(config, seed=1)
    again = load_pairs(config, seed=1)
    other = load_pairs(config, seed=2)

    eval_ids = [p.pair_id for p in first.eval]
    train_ids = [p.pair_id for p in first.train]
    assert len(eval_ids) == 5
    assert len(train_ids) == 15
    assert not set(eval_ids) & set(train_ids)
    assert set(eval_ids) | set(train_ids) == {f"twenty.jsonl:{line}" for line in range(1, 21)}
    assert eval_ids == [p.pair_id for p in again.eval]
    assert eval_ids != [p.pair_id for p in other.eval]
    # Both parts keep the file order.
    assert train_ids == sorted(train_ids, key=lambda pair_id: int(pair_id.split(":")[1]))


def test_eval_split_zero_gives_no_eval(twenty_pairs_file):
    loaded = load_pairs(DataConfig(train_data=str(twenty_pairs_file), eval_split=0.0), seed=1)
    assert loaded.eval == []
    assert len(loaded.train) == 20


def test_eval_split_keeps_one_pair_each_side(tmp_path):
    path = write_jsonl(tmp_path / "two.jsonl", TEXT_ROWS[:2])
    loaded = load_pairs(DataConfig(train_data=str(path), eval_split=0.1), seed=0)
    assert len(loaded.train) == 1
    assert len(loaded.eval) == 1


def test_eval_split_too_few_pairs(tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", TEXT_ROWS[:1])
    with pytest.raises(DataError) as error:
        load_pairs(DataConfig(train_data=str(path), eval_split=0.1), seed=0)
    assert str(error.value) == (
        f"{path}: 1 pair left after loading, too few to hold out eval_split 0.1; set eval_split to 0 or "
        "give eval_data."
    )


def test_eval_data_file_used_instead_of_split(tmp_path, twenty_pairs_file):
    eval_path = write_jsonl(tmp_path / "held_out.jsonl", TEXT_ROWS)
    loaded = load_pairs(DataConfig(train_data=str(twenty_pairs_file), eval_data=str(eval_path)), seed=1)
    assert len(loaded.train) == 20
    assert [p.pair_id for p in loaded.eval] == ["held_out.jsonl:1", "held_out.jsonl:2", "held_out.jsonl:3"]
    assert [s.source for s in loaded.report.sources] == [str(twenty_pairs_file), str(eval_path)]
    assert loaded.report.summary() == "23 of 23 rows kept"


# ---------------------------------------------------------------------------------------------
# Input kinds give identical pairs
# ---------------------------------------------------------------------------------------------


def write_all_kinds(tmp_path, rows, csv_ok=True):
    """Write rows as JSONL, JSONL.gz, JSON, Parquet, CSV and save_to_disk; return the paths."""
    paths = {"jsonl": write_jsonl(tmp_path / "pairs.jsonl", rows)}
    paths["jsonl.gz"] = tmp_path / "pairs.jsonl.gz"
    with gzip.open(paths["jsonl.gz"], "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    paths["json"] = tmp_path / "pairs.json"
    paths["json"].write_text(json.dumps(rows, indent=2), encoding="utf-8")
    paths["parquet"] = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), paths["parquet"])
    paths["dataset"] = tmp_path / "saved"
    datasets.Dataset.from_list(rows).save_to_disk(str(paths["dataset"]))
    paths["dataset_dict"] = tmp_path / "saved_dict"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(paths["dataset_dict"]))
    if csv_ok:
        paths["csv"] = tmp_path / "pairs.csv"
        with open(paths["csv"], "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return paths


def test_text_pairs_identical_across_inputs(tmp_path):
    paths = write_all_kinds(tmp_path, TEXT_ROWS)
    columns = Columns(group="subset")
    expected = [(r["prompt"], r["chosen"], r["rejected"], r["subset"]) for r in TEXT_ROWS]
    for kind, path in paths.items():
        pairs, report = read(path, columns=columns)
        assert content(pairs) == expected, kind
        assert report.data_format == "text", kind
        assert [p.pair_id.rsplit(":", 1)[1] for p in pairs] == ["1", "2", "3"], kind
    assert read(paths["csv"])[0][2].source == f"{paths['csv']}, row 3"
    assert read(paths["jsonl.gz"])[0][2].pair_id == "pairs.jsonl.gz:3"
    assert read(paths["dataset_dict"])[0][0].source == f"{paths['dataset_dict']} (split train), row 1"


def test_conversational_pairs_identical_across_inputs(tmp_path):
    # CSV cells are strings, so CSV carries text and HH rows only.
    paths = write_all_kinds(tmp_path, CONVERSATIONAL_ROWS, csv_ok=False)
    expected = [(r["prompt"], r["chosen"], r["rejected"], None) for r in CONVERSATIONAL_ROWS]
    for kind, path in paths.items():
        pairs, report = read(path)
        assert content(pairs) == expected, kind
        assert report.data_format == "conversational", kind


def test_json_file_with_json_lines(tmp_path):
    path = write_jsonl(tmp_path / "lines.json", TEXT_ROWS)
    pairs, _ = read(path)
    assert [p.source for p in pairs] == [f"{path}, line {n}" for n in (1, 2, 3)]


def test_dataset_dict_split_selected(tmp_path):
    path = tmp_path / "saved"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(TEXT_ROWS), "test": datasets.Dataset.from_list(TEXT_ROWS[:1])}
    ).save_to_disk(str(path))
    assert len(read_pairs(str(path), "test", COLUMNS)[0]) == 1
    with pytest.raises(DataError) as error:
        read_pairs(str(path), "validation", COLUMNS)
    assert str(error.value) == f"{path}: the saved DatasetDict has no split 'validation'; it has train, test. Set train_split."


def test_remapped_columns(tmp_path):
    rows = [{"question": r["prompt"], "good": r["chosen"], "bad": r["rejected"]} for r in TEXT_ROWS]
    path = write_jsonl(tmp_path / "renamed.jsonl", rows)
    pairs, _ = read(path, columns=Columns(prompt="question", chosen="good", rejected="bad"))
    assert [p.chosen for p in pairs] == [" Hello", " 4", " Blue, \"mostly\",\nby day"]


def test_blank_lines_and_byte_order_mark(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(TEXT_ROWS[0]).encode() + b"\n\n  \n" + json.dumps(TEXT_ROWS[1]).encode())
    pairs, report = read(path)
    assert [p.pair_id for p in pairs] == ["bom.jsonl:1", "bom.jsonl:4"]
    assert report.rows_read == 2


def test_identical_pairs_dropped_and_counted(tmp_path):
    rows = [TEXT_ROWS[0], {"prompt": "Q:", "chosen": " same", "rejected": " same"}, TEXT_ROWS[1]]
    pairs, report = read(write_jsonl(tmp_path / "dup.jsonl", rows))
    assert [p.pair_id for p in pairs] == ["dup.jsonl:1", "dup.jsonl:3"]
    assert report.dropped == {"identical chosen and rejected": 1}


def test_identical_hh_and_conversational_pairs_dropped(tmp_path):
    transcript = "\n\nHuman: Hi\n\nAssistant: Same"
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Same"}]
    hh = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": transcript, "rejected": transcript}, {"chosen": transcript, "rejected": transcript + "!"}])
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"chosen": conversation, "rejected": conversation}, CONVERSATIONAL_ROWS[0]])
    for path in (hh, chat):
        pairs, report = read(path)
        assert len(pairs) == 1
        assert report.dropped == {"identical chosen and rejected": 1}


def test_forced_format_overrides_detection(tmp_path):
    rows = [{"prompt": "ignored", "chosen": "\n\nHuman: Hi\n\nAssistant: A", "rejected": "\n\nHuman: Hi\n\nAssistant: B"}]
    pairs, report = read(write_jsonl(tmp_path / "forced.jsonl", rows), data_format="hh")
    assert report.data_format == "hh"
    assert pairs[0].prompt == [{"role": "user", "content": "Hi"}]


# ---------------------------------------------------------------------------------------------
# Bad input: one exact line per case
# ---------------------------------------------------------------------------------------------

GOOD = json.dumps(TEXT_ROWS[0]).encode()

BAD_JSONL_LINES = [
    (b'{"prompt": "a", ', 'invalid JSON (Expecting property name enclosed in double quotes at column 17); each line must be one JSON object.'),
    (b"[1, 2]", "the row is a list, not a JSON object; each row must map column names to values."),
    (b'"just text"', "the row is a string, not a JSON object; each row must map column names to values."),
    (
        b'{"prompt": "p", "answer": " a", "rejected": " r"}',
        'field "chosen" is missing; the row has columns "prompt", "answer", "rejected". Set chosen_column to the column that holds it.',
    ),
    (
        b'{"prompt": "p", "chosen": " \\n ", "rejected": " r"}',
        'field "chosen" is empty; every pair needs a non-empty chosen and rejected response.',
    ),
    (b'{"prompt": "", "chosen": " c", "rejected": " r"}', 'field "prompt" is empty; every pair needs a non-empty prompt.'),
    (
        b'{"prompt": "p", "chosen": null, "rejected": " r"}',
        'field "chosen" is null; every pair needs a non-empty chosen and rejected response.',
    ),
    (b'{"prompt": 42, "chosen": " c", "rejected": " r"}', 'field "prompt" is a number (42), not a string; the text format expects text here.'),
    (b'{"prompt": "p", "chosen": " c", "rejected": true}', 'field "rejected" is a boolean (true), not a string; the text format expects text here.'),
    (
        b'{"prompt": "p", "chosen": ["c"], "rejected": " r"}',
        'field "chosen" is a list, not a string; the rows are read as text format, so set data_format to '
        "conversational if they hold message lists.",
    ),
    (b'{"prompt": "p\xff", "chosen": " c", "rejected": " r"}', "invalid UTF-8 (byte 0xff at column 14); save the file as UTF-8."),
]


@pytest.mark.parametrize(("line", "message"), BAD_JSONL_LINES)
def test_bad_jsonl_line_message(tmp_path, line, message):
    path = write_lines(tmp_path / "train.jsonl", [GOOD, line, GOOD])
    with pytest.raises(DataError) as error:
        read(path)
    assert str(error.value) == f"{path}, line 2: {message}"
    assert "\n" not in str(error.value)


BAD_HH_LINES = [
    (
        {"chosen": "\n\nHuman: Hi", "rejected": "\n\nHuman: Hi\n\nAssistant: B"},
        'field "chosen" has no "\\n\\nAssistant:" turn; an HH transcript must end with an assistant response.',
    ),
    (
        {"chosen": "\n\nHuman: Hi\n\nAssistant: A", "rejected": "\n\nHuman: Yo\n\nAssistant: B"},
        'fields "chosen" and "rejected" differ before their first "\\n\\nAssistant:" turn; an HH pair must '
        "share the dialogue and differ only in the final response.",
    ),
]


@pytest.mark.parametrize(("row", "message"), BAD_HH_LINES)
def test_bad_hh_line_message(tmp_path, row, message):
    good = {"chosen": "\n\nHuman: Hi\n\nAssistant: A", "rejected": "\n\nHuman: Hi\n\nAssistant: B"}
    path = write_jsonl(tmp_path / "hh.jsonl", [good, row])
    with pytest.raises(DataError) as error:
        read(path)
    assert str(error.value) == f"{path}, line 2: {message}"


def test_bad_message_line_message(tmp_path):
    bad = {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "bot", "content": "A"}], "rejected": [{"role": "assistant", "content": "B"}]}
    path = write_jsonl(tmp_path / "chat.jsonl", [CONVERSATIONAL_ROWS[0], bad])
    with pytest.raises(DataError) as error:
        read(path)
    assert str(error.value) == f"{path}, line 2: field \"chosen\", message 1 has role 'bot'; accepted roles: system, user, assistant."


def test_missing_file(tmp_path):
    path = tmp_path / "data" / "train.jsonl"
    with pytest.raises(DataError) as error:
        read(path)
    assert str(error.value) == f"{path}: file not found; check the path (supported inputs: {SUPPORTED_INPUTS})."


def test_directory_not_a_saved_dataset(tmp_path):
    with pytest.raises(DataError) as error:
        read(tmp_path)
    assert str(error.value) == (
        f"{tmp_path}: the directory is not a dataset saved by datasets.save_to_disk (no state.json or "
        "dataset_dict.json); give a data file or a saved dataset directory."
    )


def test_unsupported_extension(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("prompt,chosen,rejected\n", encoding="utf-8")
    with pytest.raises(DataError) as error:
        read(path)
    assert str(error.value) == (
        f"{path}: unsupported file type; supported inputs: .jsonl, .jsonl.gz, .json, .parquet, .csv, a "
        "directory saved by datasets.save_to_disk, or a hub dataset id."
    )


@pytest.mark.parametrize(
    ("name", "data"),
    [("empty.jsonl", b""), ("blank.jsonl", b"\n \n"), ("empty.json", b"[]"), ("header.csv", b"prompt,chosen,rejected\n")],
)
def test_empty_input(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DataError) as error:
        read(path)
    assert str(error.value) == f"{path}: the input contains no rows; give a file with at least one preference pair."


def test_empty_gzip_file(tmp_path):
    path = tmp_path / "empty.jsonl.gz"
    with gzip.open(path, "wb"):
        pass
    with pytest.raises(DataError) as error:
        read(path)
    assert str(error.value) == f"{path}: the input contains no rows; give a file with at least one preference pair."


def test_corrupt_gzip_file(tmp_path):
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(gzip.compress(GOOD * 200)[:60])
    with pytest.raises(DataError) as error:
        read(path)
    assert str(error.value) == (
        f"{path}: failed to read the file (Compressed file ended before the end-of-stream marker was reached); "
        "check that it is complete and not corrupt."
    )


def test_invalid_json_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"prompt": "a"},\n  oops\n]', encoding="utf-8")
    with pytest.raises(DataError) as error:
        read(path)
    assert str(error.value) == f"{path}, line 3: invalid JSON (Expecting value at column 3)."


def test_json_file_not_a_list(tmp_path):
    path = tmp_path / "scalar.json"
    path.write_text('"rows"', encoding="utf-8")
    with pytest.raises(DataError) as error:
        read(path)
    assert str(error.value) == f"{path}: the top-level JSON value is str, not a list; a .json file must contain a list of rows."


def test_json_row_not_an_object(tmp_path):
    path = tmp_path / "numbers.json"
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(DataError) as error:
        read(path)
    assert str(error.value) == f"{path}, row 1: the row is a number (1), not a JSON object; each row must map column names to values."


def test_non_utf8_csv(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("prompt,chosen,rejected\nQ:, yes, no\nQ2:, caf\xe9, no\n".encode("latin-1"))
    with pytest.raises(DataError) as error:
        read(path)
    assert str(error.value) == f"{path}, line 3: invalid UTF-8 (byte 0xe9); save the file as UTF-8."


def test_csv_row_errors(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("prompt,chosen,rejected\nQ:, yes, no\nQ:, a, b, c\nQ:, yes,\n", encoding="utf-8")
    with pytest.raises(DataError) as error:
        read(path)
    assert str(error.value) == (
        f"{path}, row 2: the row has 1 more values than the header has columns; quote values that contain commas."
    )
    pairs, report = read(path, skip_bad_rows=True)
    assert len(pairs) == 1
    assert report.skipped_rows[1] == (
        f'{path}, row 3: field "rejected" is empty; every pair needs a non-empty chosen and rejected response.'
    )


# ---------------------------------------------------------------------------------------------
# skip_bad_rows
# ---------------------------------------------------------------------------------------------


def test_skip_bad_rows_counts_and_lists(tmp_path):
    lines = [
        b'{"prompt": "p", "chosen": null, "rejected": " r"}',  # detection succeeds, row invalid
        GOOD,
        b"not json",
        b'{"prompt": "Q:", "chosen": " same", "rejected": " same"}',
        GOOD,
    ]
    path = write_lines(tmp_path / "train.jsonl", lines)
    pairs, report = read(path, skip_bad_rows=True)

    assert [p.pair_id for p in pairs] == ["train.jsonl:2", "train.jsonl:5"]
    assert report.rows_read == 5
    assert report.pairs_kept == 2
    assert report.dropped == {"invalid row (skip_bad_rows)": 2, "identical chosen and rejected": 1}
    assert report.skipped_rows == [
        f'{path}, line 1: field "chosen" is null; every pair needs a non-empty chosen and rejected response.',
        f"{path}, line 3: invalid JSON (Expecting value at column 1); each line must be one JSON object.",
    ]


def test_skip_bad_rows_detects_from_first_valid_row(tmp_path):
    lines = [b'{"question": "no usable columns"}', json.dumps(CONVERSATIONAL_ROWS[0]).encode()]
    path = write_lines(tmp_path / "chat.jsonl", lines)
    pairs, report = read(path, skip_bad_rows=True)
    assert report.data_format == "conversational"
    assert len(pairs) == 1
    assert len(report.skipped_rows) == 1


def test_skip_bad_rows_summary_through_load_pairs(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [GOOD, b"{", GOOD, GOOD])
    loaded = load_pairs(DataConfig(train_data=str(path), eval_split=0.0, skip_bad_rows=True), seed=0)
    assert loaded.report.summary() == "3 of 4 rows kept; dropped: 1 invalid row (skip_bad_rows)"


def test_bad_row_stops_load_pairs_by_default(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [GOOD, b"{"])
    with pytest.raises(DataError, match=r"train\.jsonl, line 2: invalid JSON"):
        load_pairs(DataConfig(train_data=str(path)), seed=0)


def test_no_usable_rows(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [b"{", b"[]"])
    with pytest.raises(DataError) as error:
        read(path, skip_bad_rows=True)
    assert str(error.value) == (
        f"{path}: none of the 2 rows is a usable pair (0 of 2 rows kept; dropped: 2 invalid row "
        "(skip_bad_rows)); check the rows and the *_column options."
    )


# ---------------------------------------------------------------------------------------------
# Hub ids (datasets.load_dataset replaced by a local stand-in: tests never reach the hub)
# ---------------------------------------------------------------------------------------------


def test_hub_id_reads_requested_split(monkeypatch):
    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_list(TEXT_ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    pairs, report = read_pairs("someone/prefs", "train_prefs", COLUMNS)
    assert calls == [("someone/prefs", "train_prefs")]
    assert report.source == "hub dataset someone/prefs (split train_prefs)"
    assert pairs[1].pair_id == "someone/prefs[train_prefs]:2"
    assert pairs[1].source == "hub dataset someone/prefs (split train_prefs), row 2"


def test_hub_id_failure_message(monkeypatch):
    def offline(name, split):
        raise ConnectionError("Couldn't reach the hub\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as error:
        read_pairs("someone/prefs", "train", COLUMNS)
    assert str(error.value) == (
        "someone/prefs: not a local file or directory, and loading it as a hub dataset (split train) failed "
        "(Couldn't reach the hub); check the path or the dataset id."
    )


def test_eval_data_dataset_dict_uses_test_split(tmp_path, twenty_pairs_file):
    path = tmp_path / "saved"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(TEXT_ROWS), "test": datasets.Dataset.from_list(TEXT_ROWS[:2])}
    ).save_to_disk(str(path))
    loaded = load_pairs(DataConfig(train_data=str(twenty_pairs_file), eval_data=str(path)), seed=0)
    assert [p.pair_id for p in loaded.eval] == ["saved[test]:1", "saved[test]:2"]
