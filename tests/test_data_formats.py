"""Row formats: detection, normalization to PreferencePair, and rendering without a chat template."""

import pytest

from relupo.data.formats import (
    Columns,
    PreferencePair,
    RowError,
    detect_format,
    normalize_row,
    parse_transcript,
    render_messages,
    render_plain,
)

COLUMNS = Columns()


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def system(text):
    return {"role": "system", "content": text}


def normalize(row, data_format, columns=COLUMNS):
    return normalize_row(row, data_format, columns, "f.jsonl:3", "f.jsonl, line 3")


# ---------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"prompt": "p", "chosen": "a", "rejected": "b"}, "text"),
        ({"chosen": [user("q"), assistant("a")], "rejected": [user("q"), assistant("b")]}, "conversational"),
        ({"prompt": [user("q")], "chosen": [assistant("a")], "rejected": [assistant("b")]}, "conversational"),
        ({"prompt": "q", "chosen": [user("q"), assistant("a")], "rejected": [user("q"), assistant("b")]}, "conversational"),
        ({"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"}, "hh"),
        ({"prompt": None, "chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "x"}, "hh"),
    ],
)
def test_detect_format(row, expected):
    assert detect_format(row, COLUMNS) == expected


def test_detect_format_without_prompt_or_transcript():
    with pytest.raises(RowError) as error:
        detect_format({"chosen": "a", "rejected": "b"}, COLUMNS)
    assert str(error.value) == (
        'field "prompt" is missing; the row has columns "chosen", "rejected". Set prompt_column to the '
        'column that holds the prompt, or give HH transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ...") '
        "in chosen and rejected."
    )


def test_detect_format_uses_remapped_columns():
    columns = Columns(prompt="question", chosen="good", rejected="bad")
    assert detect_format({"question": "q", "good": "a", "bad": "b"}, columns) == "text"


# ---------------------------------------------------------------------------------------------
# Normalization
# ---------------------------------------------------------------------------------------------


def test_text_row_normalizes_unchanged():
    pair = normalize({"prompt": "Q:", "chosen": " yes", "rejected": " no", "extra": 1}, "text")
    assert pair == PreferencePair("f.jsonl:3", "f.jsonl, line 3", "Q:", " yes", " no", None)


def test_group_column_values():
    columns = Columns(group="subset")
    row = {"prompt": "Q:", "chosen": " yes", "rejected": " no"}
    assert normalize({**row, "subset": "math"}, "text", columns).group == "math"
    assert normalize({**row, "subset": 7}, "text", columns).group == "7"
    assert normalize({**row, "subset": None}, "text", columns).group is None
    with pytest.raises(RowError) as error:
        normalize({**row, "subset": [1]}, "text", columns)
    assert str(error.value) == 'field "subset" (group_column) is a list; a group must be a string or an integer.'


def test_conversational_explicit_prompt_response_only():
    row = {"prompt": [system("Be brief."), user("Hi")], "chosen": [assistant("Hello")], "rejected": [assistant("Go")]}
    pair = normalize(row, "conversational")
    assert pair.prompt == [system("Be brief."), user("Hi")]
    assert pair.chosen == [assistant("Hello")]
    assert pair.rejected == [assistant("Go")]


def test_conversational_explicit_prompt_repeated_in_responses():
    prompt = [user("Hi")]
    row = {"prompt": prompt, "chosen": prompt + [assistant("Hello")], "rejected": [assistant("Go")]}
    pair = normalize(row, "conversational")
    assert pair.chosen == [assistant("Hello")]
    assert pair.rejected == [assistant("Go")]


def test_conversational_implicit_prompt_ultrafeedback_layout():
    # UltraFeedback-binarized: a string prompt plus full conversations in chosen and rejected.
    row = {
        "prompt": "Hi",
        "chosen": [user("Hi"), assistant("Hello"), user("More?"), assistant("Sure")],
        "rejected": [user("Hi"), assistant("Hello"), user("More?"), assistant("No")],
        "score_chosen": 8.0,
    }
    pair = normalize(row, "conversational")
    assert pair.prompt == [user("Hi"), assistant("Hello"), user("More?")]
    assert pair.chosen == [assistant("Sure")]
    assert pair.rejected == [assistant("No")]


def test_conversational_extra_message_keys_dropped():
    row = {"chosen": [{**user("Hi"), "name": "x"}, assistant("A")], "rejected": [user("Hi"), assistant("B")]}
    assert normalize(row, "conversational").prompt == [user("Hi")]


def test_conversational_identical_conversations_keep_response():
    conversation = [user("Hi"), assistant("Same")]
    pair = normalize({"chosen": conversation, "rejected": list(conversation)}, "conversational")
    assert pair.prompt == [user("Hi")]
    assert pair.chosen == pair.rejected == [assistant("Same")]


CONVERSATIONAL_ERRORS = [
    (
        {"chosen": "Hello", "rejected": [assistant("B")], "prompt": [user("Hi")]},
        'field "chosen" is a string, not a list of messages; the conversational format expects '
        '[{"role": ..., "content": ...}, ...].',
    ),
    (
        {"chosen": [], "rejected": [assistant("B")], "prompt": [user("Hi")]},
        'field "chosen" is an empty list; it needs at least one message.',
    ),
    (
        {"chosen": [user("Hi"), "Hello"], "rejected": [user("Hi"), assistant("B")]},
        'field "chosen", message 2 is a string; each message must be an object with "role" and "content".',
    ),
    (
        {"chosen": [user("Hi"), {"role": "assistant"}], "rejected": [user("Hi"), assistant("B")]},
        'field "chosen", message 2 is an object; each message must be an object with "role" and "content".',
    ),
    (
        {"chosen": [user("Hi"), {"role": "tool", "content": "x"}], "rejected": [user("Hi"), assistant("B")]},
        "field \"chosen\", message 2 has role 'tool'; accepted roles: system, user, assistant.",
    ),
    (
        {"chosen": [user("Hi"), {"role": "assistant", "content": 3}], "rejected": [user("Hi"), assistant("B")]},
        'field "chosen", message 2 has content a number (3); "content" must be a string.',
    ),
    (
        {"chosen": [user("Hi"), assistant(" ")], "rejected": [user("Hi"), assistant("B")]},
        'field "chosen", message 2 (assistant) has empty content; user and assistant messages need text.',
    ),
    (
        {"chosen": [user("Hi"), user("Again")], "rejected": [user("Hi"), user("Other")]},
        'field "chosen" has no assistant message after the prompt; each conversation needs an assistant response.',
    ),
    (
        {"chosen": [user("Hi"), user("Again"), assistant("A")], "rejected": [user("Hi"), assistant("B")]},
        'field "chosen" starts with a user message after the prompt; a response may contain only assistant messages.',
    ),
    (
        {"chosen": [user("Hi"), assistant("A"), user("And?")], "rejected": [user("Hi"), assistant("B")]},
        'field "chosen" has at message 2 a user message after the prompt; a response may contain only '
        "assistant messages.",
    ),
    (
        {"chosen": [user("Hi")], "rejected": [user("Hi"), assistant("B")]},
        'field "chosen" has no messages after the prompt it shares with the other response; each '
        "conversation needs its own assistant response.",
    ),
    (
        {"chosen": [assistant("A")], "rejected": [assistant("B")]},
        'fields "chosen" and "rejected" share no leading messages; give the prompt as a message list in '
        'field "prompt".',
    ),
    (
        {"prompt": [user("Hi"), assistant("A")], "chosen": [assistant("A")], "rejected": [assistant("B")]},
        'field "prompt" ends with an assistant message; the prompt must stop before the response, which '
        "belongs in chosen and rejected.",
    ),
    (
        {"prompt": [user("Hi"), system("Late")], "chosen": [assistant("A")], "rejected": [assistant("B")]},
        'field "chosen": conversation message 2 is a system message; a system message may only come first.',
    ),
]


@pytest.mark.parametrize(("row", "message"), CONVERSATIONAL_ERRORS)
def test_conversational_row_errors(row, message):
    with pytest.raises(RowError) as error:
        normalize(row, "conversational")
    assert str(error.value) == message


def test_hh_row_normalizes_to_messages():
    row = {
        "chosen": "\n\nHuman: Hi there \n\nAssistant: Hello.\n\nHuman: Joke?\n\nAssistant:  A pun. ",
        "rejected": "\n\nHuman: Hi there \n\nAssistant: Hello.\n\nHuman: Joke?\n\nAssistant: No.",
    }
    pair = normalize(row, "hh")
    assert pair.prompt == [user("Hi there"), assistant("Hello."), user("Joke?")]
    assert pair.chosen == [assistant("A pun.")]
    assert pair.rejected == [assistant("No.")]


def test_hh_splits_at_last_shared_assistant_turn():
    # HH-RLHF contains responses that contain "\n\nAssistant:" themselves (bundled rows 1255, 1689,
    # 1951, 1953, 2037); the split must stay at the turn both transcripts share.
    row = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Human: ok\n\nAssistant: Sure",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello",
    }
    pair = normalize(row, "hh")
    assert pair.prompt == [user("Hi")]
    assert pair.chosen == [assistant("Human: ok\n\nAssistant: Sure")]
    assert pair.rejected == [assistant("Hello")]


def test_hh_empty_final_response_kept_for_loader():
    pair = normalize({"chosen": "\n\nHuman: Hi\n\nAssistant: ", "rejected": "\n\nHuman: Hi\n\nAssistant: Yo"}, "hh")
    assert pair.chosen == [assistant("")]


HH_ERRORS = [
    (
        {"chosen": "\n\nHuman: Hi", "rejected": "\n\nHuman: Hi\n\nAssistant: B"},
        'field "chosen" has no "\\n\\nAssistant:" turn; an HH transcript must end with an assistant response.',
    ),
    (
        {"chosen": "\n\nHuman: Hi\n\nAssistant: A", "rejected": "\n\nHuman: Bye\n\nAssistant: A"},
        'fields "chosen" and "rejected" differ before their first "\\n\\nAssistant:" turn; an HH pair must '
        "share the dialogue and differ only in the final response.",
    ),
    (
        {
            "chosen": "\n\nHuman: Hi\n\nAssistant: A\n\nHuman: X\n\nAssistant: C",
            "rejected": "\n\nHuman: Hi\n\nAssistant: A\n\nHuman: Y\n\nAssistant: C",
        },
        'fields "chosen" and "rejected" differ before the final "\\n\\nAssistant:" turn ("chosen" continues '
        'with a "\\n\\nHuman:" turn); an HH pair must share the dialogue and differ only in the final response.',
    ),
    (
        {"chosen": "\n\nAssistant: A", "rejected": "\n\nAssistant: B"},
        'field "chosen" has no dialogue before the final "\\n\\nAssistant:" turn.',
    ),
    (
        {"chosen": "\n\nHuman: Hi\n\nAssistant: A", "rejected": None},
        'field "rejected" is null; an HH pair needs a non-empty chosen and rejected transcript.',
    ),
]


@pytest.mark.parametrize(("row", "message"), HH_ERRORS)
def test_hh_row_errors(row, message):
    with pytest.raises(RowError) as error:
        normalize(row, "hh")
    assert str(error.value) == message


def test_row_not_an_object():
    with pytest.raises(RowError) as error:
        normalize(["a", "b"], "text")
    assert str(error.value) == "the row is a list, not a JSON object; each row must map column names to values."


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def test_render_messages_hh_style():
    messages = [system("Be kind."), user("Hi"), assistant("Hello"), user("Bye")]
    assert render_messages(messages) == "Be kind.\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Bye"
    assert render_messages(messages, add_generation_prompt=True) == (
        "Be kind.\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Bye\n\nAssistant:"
    )


def test_parse_transcript_inverts_render():
    messages = [system("Be kind."), user("Hi"), assistant("Hello"), user("Bye")]
    assert parse_transcript(render_messages(messages)) == messages


def test_render_plain_messages_and_text():
    pair = PreferencePair("a:1", "a, line 1", [user("X")], [assistant("Y")], [assistant("Z"), assistant("W")])
    assert render_plain(pair) == ("\n\nHuman: X\n\nAssistant:", " Y", " Z\n\nAssistant: W")
    text = PreferencePair("a:1", "a, line 1", "\n\nHuman: X\n\nAssistant:", " Y", " Z")
    assert render_plain(text) == ("\n\nHuman: X\n\nAssistant:", " Y", " Z")
