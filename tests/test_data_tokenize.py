"""Tokenization: prompt/response boundary, special tokens, chat templates, truncation and the cache."""

import itertools
import json

import pytest
from transformers import AutoTokenizer

from relupo.config import BUNDLED_MODEL, DataConfig
from relupo.data import PreferencePair, load_or_tokenize, read_pairs, tokenize_pairs
from relupo.data.formats import Columns, render_plain
from relupo.data.tokenize import cache_path
from relupo.errors import DataError

BOS, EOS = 1, 2
# "\n\nHuman: Hi\n\nAssistant:" with the bundled tokenizer, BOS first.
HI_PROMPT_IDS = [1, 410, 13, 13, 440, 425, 423, 303, 467, 320, 417, 13, 13, 447, 419, 419, 293, 413, 303, 413, 467]

# Writes BOS and closes each assistant turn with EOS, so neither may be added a second time.
TEMPLATE_WITH_SPECIALS = (
    "{{ bos_token }}{% for m in messages %}{{ '[' + m.role + ']' + m.content }}"
    "{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)
TEMPLATE_PLAIN = (
    "{% for m in messages %}{{ '[' + m.role + ']' + m.content }}{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)


def load_tokenizer(chat_template=None):
    tokenizer = AutoTokenizer.from_pretrained(BUNDLED_MODEL)
    tokenizer.chat_template = chat_template
    return tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def bundled_pairs(bundled_data_path):
    return read_pairs(bundled_data_path, "train", Columns())[0]


def text_pair(prompt, chosen, rejected, pair_id="t:1", group=None):
    return PreferencePair(pair_id, f"{pair_id} source", prompt, chosen, rejected, group)


def message(role, text):
    return {"role": role, "content": text}


def as_lists(dataset):
    return [(row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) for row in dataset]


# ---------------------------------------------------------------------------------------------
# Boundary and special tokens
# ---------------------------------------------------------------------------------------------


def test_exact_ids_for_text_pair(tokenizer):
    dataset, report = tokenize_pairs([text_pair("\n\nHuman: Hi\n\nAssistant:", " Hello", " Bye")], tokenizer, 64, 32)
    row = dataset[0]
    assert row["prompt_ids"] == HI_PROMPT_IDS
    assert row["chosen_ids"] == [346, 306, 414, EOS]
    assert row["rejected_ids"] == [368, 422, 411, EOS]
    assert report.summary() == "1 of 1 pairs kept; truncated prompts: 0, truncated responses: 0"


def test_boundary_merge_moves_token_into_responses(tokenizer):
    # "Once upon a ti" ends in "▁t", "i", but "Once upon a time" merges them into "▁time".
    assert tokenizer("Once upon a ti")["input_ids"] == [1, 403, 407, 261, 259, 417]
    assert tokenizer("Once upon a time")["input_ids"] == [1, 403, 407, 261, 378]
    dataset, _ = tokenize_pairs([text_pair("Once upon a ti", "me", "ger")], tokenizer, 64, 32)
    row = dataset[0]
    assert row["prompt_ids"] == [1, 403, 407, 261]
    assert row["chosen_ids"] == [378, EOS]  # "▁time"
    assert row["rejected_ids"] == [259, 333, 285, EOS]  # "▁t", "ig", "er": shares "▁t" with the prompt
    assert row["prompt_ids"] + row["chosen_ids"][:-1] == tokenizer("Once upon a time")["input_ids"]
    assert row["prompt_ids"] + row["rejected_ids"][:-1] == tokenizer("Once upon a tiger")["input_ids"]


def test_full_sequences_match_tokenizer(tokenizer, bundled_pairs):
    pairs = bundled_pairs[:100]
    dataset, _ = tokenize_pairs(pairs, tokenizer, 100_000, 100_000)
    for pair, row in zip(pairs, dataset):
        prompt, chosen, rejected = render_plain(pair)
        assert row["prompt_ids"] + row["chosen_ids"] == tokenizer(prompt + chosen)["input_ids"] + [EOS]
        assert row["prompt_ids"] + row["rejected_ids"] == tokenizer(prompt + rejected)["input_ids"] + [EOS]
        assert row["prompt_ids"].count(BOS) == 1


def test_three_formats_identical_ids(tmp_path, tokenizer):
    dialogues = [
        ([("user", "Hi")], "Hello", "Go away"),
        ([("user", "What is 2+2?"), ("assistant", "Four."), ("user", "Sure?")], "Yes, four.", "No idea"),
        ([("user", "Once upon a ti")], "me there was", "ger"),
    ]
    text_rows, chat_rows, hh_rows = [], [], []
    for turns, chosen, rejected in dialogues:
        transcript = "".join(f"\n\n{'Human' if role == 'user' else 'Assistant'}: {text}" for role, text in turns)
        text_rows.append({"prompt": transcript + "\n\nAssistant:", "chosen": " " + chosen, "rejected": " " + rejected})
        chat_rows.append(
            {
                "prompt": [message(role, text) for role, text in turns],
                "chosen": [message("assistant", chosen)],
                "rejected": [message("assistant", rejected)],
            }
        )
        hh_rows.append(
            {"chosen": f"{transcript}\n\nAssistant: {chosen}", "rejected": f"{transcript}\n\nAssistant: {rejected}"}
        )

    results = {}
    for name, rows in (("text", text_rows), ("conversational", chat_rows), ("hh", hh_rows)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        pairs, report = read_pairs(str(path), "train", Columns())
        assert report.data_format == name
        results[name] = as_lists(tokenize_pairs(pairs, tokenizer, 512, 256)[0])

    assert results["text"] == results["conversational"]
    assert results["text"] == results["hh"]
    go_away = tokenizer("\n\nHuman: Hi\n\nAssistant: Go away")["input_ids"][len(HI_PROMPT_IDS) :] + [EOS]
    assert results["text"][0] == (HI_PROMPT_IDS, [346, 306, 414, EOS], go_away)


def test_bundled_hh_matches_text_rendering(tokenizer, bundled_pairs):
    pairs = bundled_pairs[:200]
    as_text = []
    for pair in pairs:
        prompt, chosen, rejected = render_plain(pair)
        as_text.append(text_pair(prompt, chosen, rejected, pair.pair_id))
    hh_ids = as_lists(tokenize_pairs(pairs, tokenizer, 512, 256)[0])
    text_ids = as_lists(tokenize_pairs(as_text, tokenizer, 512, 256)[0])
    assert hh_ids == text_ids


def test_output_columns_and_group(tokenizer):
    pairs = [text_pair("Q:", " a", " b", "f:1", "math"), text_pair("Q:", " c", " d", "f:2", None)]
    dataset, _ = tokenize_pairs(pairs, tokenizer, 64, 32)
    assert dataset.column_names == ["pair_id", "prompt_ids", "chosen_ids", "rejected_ids", "group"]
    assert dataset["pair_id"] == ["f:1", "f:2"]
    assert dataset["group"] == ["math", None]


# ---------------------------------------------------------------------------------------------
# Chat templates
# ---------------------------------------------------------------------------------------------

CHAT_PAIR = PreferencePair(
    "c:1", "chat.jsonl, line 1", [message("user", "Hi")], [message("assistant", "Hello")], [message("assistant", "Bye")]
)


def test_template_with_bos_and_eos_in_text():
    tokenizer = load_tokenizer(TEMPLATE_WITH_SPECIALS)
    row = tokenize_pairs([CHAT_PAIR], tokenizer, 128, 64)[0][0]
    full_text = "<s>[user]Hi[assistant]Hello</s>"
    assert row["prompt_ids"] + row["chosen_ids"] == tokenizer(full_text, add_special_tokens=False)["input_ids"]
    assert row["prompt_ids"][0] == BOS
    assert (row["prompt_ids"] + row["chosen_ids"]).count(BOS) == 1
    assert row["chosen_ids"].count(EOS) == 1
    assert row["chosen_ids"][-1] == EOS
    assert tokenizer.decode(row["prompt_ids"], skip_special_tokens=True).endswith("[assistant]")


def test_template_without_bos_gets_one_bos():
    tokenizer = load_tokenizer(TEMPLATE_PLAIN)
    row = tokenize_pairs([CHAT_PAIR], tokenizer, 128, 64)[0][0]
    expected = [BOS] + tokenizer("[user]Hi[assistant]Bye", add_special_tokens=False)["input_ids"] + [EOS]
    assert row["prompt_ids"] + row["rejected_ids"] == expected
    assert row["prompt_ids"].count(BOS) == 1


def test_template_not_used_for_text_pairs(tokenizer):
    pair = text_pair("\n\nHuman: Hi\n\nAssistant:", " Hello", " Bye")
    with_template = tokenize_pairs([pair], load_tokenizer(TEMPLATE_PLAIN), 64, 32)[0]
    without = tokenize_pairs([pair], tokenizer, 64, 32)[0]
    assert as_lists(with_template) == as_lists(without)


def test_template_prompt_not_a_prefix():
    template = (
        "{% for m in messages %}{{ m.role + ':' + m.content + ';' }}{% endfor %}"
        "{% if add_generation_prompt %}model:{% endif %}"
    )
    with pytest.raises(DataError) as error:
        tokenize_pairs([CHAT_PAIR], load_tokenizer(template), 128, 64)
    assert str(error.value) == (
        "chat.jsonl, line 1: the chat template's text for prompt plus response does not start with its text "
        "for the prompt with add_generation_prompt=True, so the response cannot be separated; use a chat "
        "template that renders the prompt as a prefix of the conversation."
    )


def test_template_error_names_pair():
    with pytest.raises(DataError) as error:
        tokenize_pairs([CHAT_PAIR], load_tokenizer("{{ raise_exception('roles must alternate') }}"), 128, 64)
    assert str(error.value) == "chat.jsonl, line 1: the chat template rejected the messages (roles must alternate)."


# ---------------------------------------------------------------------------------------------
# Truncation
# ---------------------------------------------------------------------------------------------


def test_prompt_keeps_bos_and_end(tokenizer):
    row = tokenize_pairs([text_pair("\n\nHuman: Hi\n\nAssistant:", " Hello", " Bye")], tokenizer, 64, 5)[0][0]
    assert row["prompt_ids"] == [BOS] + HI_PROMPT_IDS[-4:]
    assert row["prompt_ids"] == [1, 413, 303, 413, 467]


def test_response_cut_has_no_eos(tokenizer):
    dataset, report = tokenize_pairs([text_pair("\n\nHuman: Hi\n\nAssistant:", " Hello", " Bye")], tokenizer, 23, 32)
    assert dataset[0]["chosen_ids"] == [346, 306]
    assert dataset[0]["rejected_ids"] == [368, 422]
    assert report.truncated_responses == 2
    assert report.truncated_prompts == 0


def test_no_room_drops_pair(tokenizer):
    pairs = [text_pair("\n\nHuman: Hi\n\nAssistant:", " Hello", " Bye"), text_pair("Q", " a", " b", "t:2")]
    dataset, report = tokenize_pairs(pairs, tokenizer, 4, 4)
    assert dataset["pair_id"] == ["t:2"]
    # "Q" is [BOS, "▁", "Q"], which leaves room for one response token.
    assert dataset[0]["chosen_ids"] == [261]
    assert dataset[0]["rejected_ids"] == [268]
    assert report.dropped == {"prompt leaves no room for a response within max_length": 1}
    assert report.summary() == (
        "1 of 2 pairs kept; truncated prompts: 1, truncated responses: 2; dropped: 1 prompt leaves no room "
        "for a response within max_length"
    )


def test_truncation_to_identical_responses_drops_pair(tokenizer):
    dataset, report = tokenize_pairs([text_pair("Q:", " Hello there", " Hello you")], tokenizer, 4, 2)
    assert len(dataset) == 0
    assert report.dropped == {"identical chosen and rejected tokens": 1}


def test_truncation_sweep_never_empties_a_response(tokenizer, bundled_pairs):
    pairs = bundled_pairs[:40]
    full, _ = tokenize_pairs(pairs, tokenizer, 100_000, 100_000)
    baseline = {row["pair_id"]: row for row in full}

    for max_length, max_prompt_length in itertools.product([2, 3, 5, 9, 17, 64, 200, 512], [1, 2, 4, 16, 63, 256, 600]):
        dataset, report = tokenize_pairs(pairs, tokenizer, max_length, max_prompt_length)
        case = f"max_length={max_length}, max_prompt_length={max_prompt_length}"
        expected_prompts = sum(len(row["prompt_ids"]) > max_prompt_length for row in full)
        assert report.truncated_prompts == expected_prompts, case
        assert report.pairs_kept + sum(report.dropped.values()) == len(pairs), case

        for row in dataset:
            whole = baseline[row["pair_id"]]
            prompt = row["prompt_ids"]
            assert prompt[0] == BOS, case
            assert len(prompt) <= max_prompt_length, case
            assert prompt[1:] == (whole["prompt_ids"][len(whole["prompt_ids"]) - len(prompt) + 1 :] if len(prompt) > 1 else []), case
            for name in ("chosen_ids", "rejected_ids"):
                response = row[name]
                assert len(response) >= 1, case
                assert len(prompt) + len(response) <= max_length, case
                assert response == whole[name][: len(response)], case
                assert (response[-1] == EOS) == (len(response) == len(whole[name])), case
            assert row["chosen_ids"] != row["rejected_ids"], case

        if max_prompt_length >= max_length:
            no_room = sum(min(len(r["prompt_ids"]), max_prompt_length) >= max_length for r in full)
            assert report.dropped.get("prompt leaves no room for a response within max_length", 0) == no_room, case


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------


def test_cache_hit_and_misses(tmp_path, tokenizer, bundled_pairs):
    pairs = bundled_pairs[:30]
    config = DataConfig(cache_dir=str(tmp_path / "cache"), max_length=128, max_prompt_length=64)

    first = load_or_tokenize(pairs, tokenizer, config)
    second = load_or_tokenize(pairs, tokenizer, config)
    assert first.cache_hit is False
    assert second.cache_hit is True
    path = cache_path(pairs, tokenizer, config)
    assert first.cache_path == path
    assert second.cache_path == path
    assert path.parent == tmp_path / "cache" / "tokenized"
    assert (path / "dataset" / "state.json").is_file()
    assert second.dataset.to_dict() == first.dataset.to_dict()
    assert second.report == first.report

    assert load_or_tokenize(pairs, tokenizer, DataConfig(cache_dir=config.cache_dir, max_length=129, max_prompt_length=64)).cache_hit is False
    assert load_or_tokenize(pairs, tokenizer, DataConfig(cache_dir=config.cache_dir, max_length=128, max_prompt_length=63)).cache_hit is False
    assert load_or_tokenize(pairs[:29], tokenizer, config).cache_hit is False
    assert load_or_tokenize(pairs, load_tokenizer(TEMPLATE_PLAIN), config).cache_hit is False
    assert load_or_tokenize(pairs, load_tokenizer(), config).cache_hit is True
    assert [p.name for p in (tmp_path / "cache" / "tokenized").iterdir() if p.name.startswith(".tmp")] == []


def test_cache_default_dir_from_environment(tmp_path, monkeypatch, tokenizer):
    monkeypatch.setenv("RELUPO_CACHE", str(tmp_path / "env-cache"))
    pairs = [text_pair("Q:", " a", " b")]
    result = load_or_tokenize(pairs, tokenizer, DataConfig())
    path = cache_path(pairs, tokenizer, DataConfig())
    assert result.cache_hit is False
    assert result.cache_path == path
    assert path.parent == tmp_path / "env-cache" / "tokenized"
    assert (path / "report.json").is_file()
    assert str(result.report) == "1 of 1 pairs kept; truncated prompts: 0, truncated responses: 0"


def test_cache_unreadable_entry_rebuilt(tmp_path, tokenizer):
    config = DataConfig(cache_dir=str(tmp_path))
    pairs = [text_pair("Q:", " a", " b")]
    load_or_tokenize(pairs, tokenizer, config)
    path = cache_path(pairs, tokenizer, config)
    (path / "report.json").write_text("{broken", encoding="utf-8")
    rebuilt = load_or_tokenize(pairs, tokenizer, config)
    assert rebuilt.cache_hit is False
    assert load_or_tokenize(pairs, tokenizer, config).cache_hit is True


def test_cache_dir_not_writable(tmp_path, tokenizer):
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(DataError) as error:
        load_or_tokenize([text_pair("Q:", " a", " b")], tokenizer, DataConfig(cache_dir=str(blocker)))
    assert str(error.value).startswith(f"{blocker}/tokenized: failed to write the tokenized data cache (")
    assert str(error.value).endswith("); set cache_dir to a writable directory.")
