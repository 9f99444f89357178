"""Row formats: turn one raw row into a PreferencePair, and render pairs without a chat template.

Three row formats are accepted, each with remappable column names:

- `text`: `prompt`, `chosen` and `rejected` are strings. The response strings are appended to the
  prompt as they are, so a prompt usually ends with a separator and a response starts with one.
- `conversational`: `chosen` and `rejected` are lists of `{"role", "content"}` messages. The prompt
  is an explicit message list in `prompt`, or else the leading messages that chosen and rejected
  share (the layout of TRL's conversational datasets and of UltraFeedback-binarized).
- `hh`: Anthropic HH-RLHF transcripts (`"\\n\\nHuman: ...\\n\\nAssistant: ..."`) in `chosen` and
  `rejected`, normalized to conversational form.

Normalizers raise `RowError` with a message that names the field and the fix but not the location;
the loader adds the file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Union

Messages = list[dict[str, str]]
Content = Union[str, Messages]

FORMATS = ("text", "conversational", "hh")
ROLES = ("system", "user", "assistant")

HUMAN_TURN = "\n\nHuman:"
ASSISTANT_TURN = "\n\nAssistant:"
# The prompt of a rendered message list ends with this, and the response follows after one space.
GENERATION_PROMPT = ASSISTANT_TURN
# Escaped forms for error messages, which must stay on one line.
_HUMAN_SHOWN = "\\n\\nHuman:"
_ASSISTANT_SHOWN = "\\n\\nAssistant:"
_TURN_PATTERN = re.compile(r"\n\n(Human|Assistant):")


@dataclass(frozen=True)
class PreferencePair:
    """One normalized preference pair.

    `prompt` is text or a message list. `chosen` and `rejected` hold only the response: text for
    text-format rows, otherwise a list of assistant messages that follows the prompt.
    """

    pair_id: str  # stable id: file name and 1-based line or row, e.g. "test.jsonl.gz:17"
    source: str  # location for error messages, e.g. "data/train.jsonl, line 17"
    prompt: Content
    chosen: Content
    rejected: Content
    group: str | None = None


@dataclass(frozen=True)
class Columns:
    """Names of the columns that hold each part of a pair (DataConfig's `*_column` options)."""

    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    group: str | None = None

    def option_for(self, column: str) -> str:
        """Return the DataConfig option that sets `column`."""
        for name in ("prompt", "chosen", "rejected", "group"):
            if getattr(self, name) == column:
                return f"{name}_column"
        return "the *_column options"


class RowError(ValueError):
    """An invalid row. The message names the field and the fix, and the caller adds the location."""


# ---------------------------------------------------------------------------------------------
# Format detection and the entry point
# ---------------------------------------------------------------------------------------------


def detect_format(row: dict[str, Any], columns: Columns) -> str:
    """Return the format of `row`: conversational when chosen is a list, else text or hh.

    A row with a string chosen and no prompt column is hh when chosen contains an assistant turn.
    """
    _check_object(row)
    chosen = _required(row, columns.chosen, columns)
    if isinstance(chosen, list):
        return "conversational"
    if columns.prompt in row and row[columns.prompt] is not None:
        return "text"
    if isinstance(chosen, str) and ASSISTANT_TURN in chosen:
        return "hh"
    present = _list_columns(row)
    raise RowError(
        f'field "{columns.prompt}" is missing; the row has columns {present}. Set prompt_column to '
        f'the column that holds the prompt, or give HH transcripts ("{_HUMAN_SHOWN} ...'
        f'{_ASSISTANT_SHOWN} ...") in chosen and rejected.'
    )


def normalize_row(
    row: Any, data_format: str, columns: Columns, pair_id: str, source: str
) -> PreferencePair:
    """Validate one raw row in `data_format` and return it as a PreferencePair; raise RowError."""
    _check_object(row)
    group = _group(row, columns)
    if data_format == "text":
        prompt, chosen, rejected = _normalize_text(row, columns)
    elif data_format == "conversational":
        prompt, chosen, rejected = _normalize_conversational(row, columns)
    elif data_format == "hh":
        prompt, chosen, rejected = _normalize_hh(row, columns)
    else:
        raise ValueError(f"unknown data format {data_format!r}; expected one of {FORMATS}")
    return PreferencePair(pair_id=pair_id, source=source, prompt=prompt, chosen=chosen, rejected=rejected, group=group)


# ---------------------------------------------------------------------------------------------
# Text format
# ---------------------------------------------------------------------------------------------


def _normalize_text(row: dict[str, Any], columns: Columns) -> tuple[str, str, str]:
    prompt = _text_field(row, columns.prompt, columns, "every pair needs a non-empty prompt.")
    needs_response = "every pair needs a non-empty chosen and rejected response."
    chosen = _text_field(row, columns.chosen, columns, needs_response)
    rejected = _text_field(row, columns.rejected, columns, needs_response)
    return prompt, chosen, rejected


def _text_field(row: dict[str, Any], column: str, columns: Columns, need: str) -> str:
    value = _required(row, column, columns)
    if value is None:
        raise RowError(f'field "{column}" is null; {need}')
    if isinstance(value, list):
        raise RowError(
            f'field "{column}" is a list, not a string; the rows are read as text format, so set '
            f"data_format to conversational if they hold message lists."
        )
    if not isinstance(value, str):
        raise RowError(f'field "{column}" is {_describe(value)}, not a string; the text format expects text here.')
    if not value.strip():
        raise RowError(f'field "{column}" is empty; {need}')
    _check_no_nul(value, f'field "{column}"')
    return value


# ---------------------------------------------------------------------------------------------
# Conversational format
# ---------------------------------------------------------------------------------------------


def _normalize_conversational(row: dict[str, Any], columns: Columns) -> tuple[Messages, Messages, Messages]:
    chosen = _messages_field(row, columns.chosen, columns)
    rejected = _messages_field(row, columns.rejected, columns)
    prompt_value = row.get(columns.prompt)
    # A string prompt next to message lists (UltraFeedback-binarized) repeats the first user turn
    # that the conversations already contain, so only a message-list prompt counts as explicit.
    if isinstance(prompt_value, list):
        prompt = _messages_field(row, columns.prompt, columns)
        _check_prompt_end(prompt, columns.prompt)
        _check_repeated_prompt(prompt, chosen, columns.chosen, columns.prompt)
        _check_repeated_prompt(prompt, rejected, columns.rejected, columns.prompt)
        chosen_response = _strip_prompt(prompt, chosen)
        rejected_response = _strip_prompt(prompt, rejected)
    else:
        prompt, chosen_response, rejected_response = _split_shared_prompt(chosen, rejected, columns)
    if not prompt:
        raise RowError(
            f'fields "{columns.chosen}" and "{columns.rejected}" share no leading messages; give the '
            f'prompt as a message list in field "{columns.prompt}".'
        )
    _check_starts_with_user(prompt, columns.prompt if isinstance(prompt_value, list) else columns.chosen)
    _check_response(chosen_response, columns.chosen)
    _check_response(rejected_response, columns.rejected)
    _check_system_first(prompt + chosen_response, columns.chosen)
    _check_system_first(prompt + rejected_response, columns.rejected)
    return prompt, chosen_response, rejected_response


def _messages_field(row: dict[str, Any], column: str, columns: Columns) -> Messages:
    value = _required(row, column, columns)
    if not isinstance(value, list):
        raise RowError(
            f'field "{column}" is {_describe(value)}, not a list of messages; the conversational '
            f'format expects [{{"role": ..., "content": ...}}, ...].'
        )
    if not value:
        raise RowError(f'field "{column}" is an empty list; it needs at least one message.')
    return [_message(item, column, index) for index, item in enumerate(value, start=1)]


def _message(item: Any, column: str, index: int) -> dict[str, str]:
    where = f'field "{column}", message {index}'
    if not isinstance(item, dict) or "role" not in item or "content" not in item:
        raise RowError(f'{where} is {_describe(item)}; each message must be an object with "role" and "content".')
    role, content = item["role"], item["content"]
    if role not in ROLES:
        raise RowError(f"{where} has role {role!r}; accepted roles: {', '.join(ROLES)}.")
    if not isinstance(content, str):
        raise RowError(f'{where} has content {_describe(content)}; "content" must be a string.')
    # Some datasets ship an empty system message, which chat templates render fine.
    if role != "system" and not content.strip():
        raise RowError(f'{where} ({role}) has empty content; user and assistant messages need text.')
    _check_no_nul(content, where)
    return {"role": role, "content": content}


def _check_prompt_end(prompt: Messages, column: str) -> None:
    if prompt[-1]["role"] == "assistant":
        raise RowError(
            f'field "{column}" ends with an assistant message; the prompt must stop before the '
            f"response, which belongs in chosen and rejected."
        )


def _check_repeated_prompt(prompt: Messages, conversation: Messages, column: str, prompt_column: str) -> None:
    """Raise RowError when `conversation` starts with prompt turns that differ from the explicit prompt."""
    if conversation[0]["role"] == "assistant" or conversation[: len(prompt)] == prompt:
        return
    if not any(message["role"] == "assistant" for message in conversation):
        return  # reported as a missing response, the more likely mistake
    differs_at = next(
        (index for index, (a, b) in enumerate(zip(prompt, conversation), start=1) if a != b),
        min(len(prompt), len(conversation)) + 1,
    )
    raise RowError(
        f'field "{column}" repeats a prompt that differs from field "{prompt_column}" at message '
        f"{differs_at}; chosen and rejected must answer the same prompt, so give only the response or "
        f"the exact prompt followed by the response."
    )


def _check_starts_with_user(prompt: Messages, column: str) -> None:
    first = next((index for index, message in enumerate(prompt, start=1) if message["role"] != "system"), None)
    if first is None or prompt[first - 1]["role"] != "user":
        raise RowError(
            f'field "{column}": the prompt has no user message before the response, or starts with an '
            f"assistant message; after an optional system message, a conversation must start with a user "
            f"message."
        )


def _strip_prompt(prompt: Messages, conversation: Messages) -> Messages:
    """Return the response part of `conversation`, which may or may not repeat the prompt."""
    if len(conversation) > len(prompt) and conversation[: len(prompt)] == prompt:
        return conversation[len(prompt) :]
    return conversation


def _split_shared_prompt(
    chosen: Messages, rejected: Messages, columns: Columns
) -> tuple[Messages, Messages, Messages]:
    """Split two conversations into their shared leading messages and the two responses."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    both_answer = all(any(m["role"] == "assistant" for m in c[shared:]) for c in (chosen, rejected))
    if both_answer and chosen[shared]["role"] == rejected[shared]["role"] != "assistant":
        role = chosen[shared]["role"]
        raise RowError(
            f'fields "{columns.chosen}" and "{columns.rejected}" differ at message {shared + 1}, a {role} '
            f"message in both; chosen and rejected must share the prompt and differ only in the assistant "
            f"response."
        )
    if chosen == rejected:
        # Keep the final assistant turns as the (identical) responses, so the loader drops the pair
        # as identical instead of reporting a missing response.
        while shared > 0 and chosen[shared - 1]["role"] == "assistant":
            shared -= 1
    for column, conversation in ((columns.chosen, chosen), (columns.rejected, rejected)):
        if shared == len(conversation):
            raise RowError(
                f'field "{column}" has no messages after the prompt it shares with the other '
                f"response; each conversation needs its own assistant response."
            )
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _check_response(response: Messages, column: str) -> None:
    if not any(message["role"] == "assistant" for message in response):
        raise RowError(
            f'field "{column}" has no assistant message after the prompt; each conversation needs an '
            f"assistant response."
        )
    for index, message in enumerate(response, start=1):
        if message["role"] != "assistant":
            first = "starts with" if index == 1 else f"has at message {index}"
            raise RowError(
                f'field "{column}" {first} a {message["role"]} message after the prompt; a response '
                f"may contain only assistant messages."
            )


def _check_system_first(conversation: Messages, column: str) -> None:
    for index, message in enumerate(conversation[1:], start=2):
        if message["role"] == "system":
            raise RowError(
                f'field "{column}": conversation message {index} is a system message; a system '
                f"message may only come first."
            )


# ---------------------------------------------------------------------------------------------
# HH-RLHF transcripts
# ---------------------------------------------------------------------------------------------


def _normalize_hh(row: dict[str, Any], columns: Columns) -> tuple[Messages, Messages, Messages]:
    """Split two HH transcripts at the last assistant turn they share.

    Splitting at the last shared `"\\n\\nAssistant:"` (not at each transcript's own last one)
    keeps responses that themselves contain that string, which happens in HH-RLHF.
    """
    need = "an HH pair needs a non-empty chosen and rejected transcript."
    chosen = _text_field(row, columns.chosen, columns, need)
    rejected = _text_field(row, columns.rejected, columns, need)
    for column, transcript in ((columns.chosen, chosen), (columns.rejected, rejected)):
        if ASSISTANT_TURN not in transcript:
            raise RowError(
                f'field "{column}" has no "{_ASSISTANT_SHOWN}" turn; an HH transcript must end with '
                f"an assistant response."
            )

    split = _last_shared_assistant_turn(chosen, rejected)
    if split < 0:
        raise RowError(
            f'fields "{columns.chosen}" and "{columns.rejected}" differ before their first '
            f'"{_ASSISTANT_SHOWN}" turn; an HH pair must share the dialogue and differ only in the '
            f"final response."
        )
    chosen_response = chosen[split + len(ASSISTANT_TURN) :]
    rejected_response = rejected[split + len(ASSISTANT_TURN) :]
    for column, response in ((columns.chosen, chosen_response), (columns.rejected, rejected_response)):
        if HUMAN_TURN in response:
            raise RowError(
                f'fields "{columns.chosen}" and "{columns.rejected}" differ before the final '
                f'"{_ASSISTANT_SHOWN}" turn ("{column}" continues with a "{_HUMAN_SHOWN}" turn); an '
                f"HH pair must share the dialogue and differ only in the final response."
            )

    prompt = parse_transcript(chosen[:split])
    if not prompt:
        raise RowError(f'field "{columns.chosen}" has no dialogue before the final "{_ASSISTANT_SHOWN}" turn.')
    return prompt, _assistant(chosen_response), _assistant(rejected_response)


def _last_shared_assistant_turn(chosen: str, rejected: str) -> int:
    """Return the offset of the last `"\\n\\nAssistant:"` inside the common prefix, or -1."""
    common = 0
    limit = min(len(chosen), len(rejected))
    while common < limit and chosen[common] == rejected[common]:
        common += 1
    return chosen.rfind(ASSISTANT_TURN, 0, common)


def parse_transcript(transcript: str) -> Messages:
    """Parse an HH transcript into messages: Human is user, Assistant is assistant.

    Text before the first turn becomes a system message, the inverse of `render_messages`. Every
    content is stripped of surrounding whitespace.
    """
    parts = _TURN_PATTERN.split(transcript)
    messages: Messages = []
    if parts[0].strip():
        messages.append({"role": "system", "content": parts[0].strip()})
    for speaker, content in zip(parts[1::2], parts[2::2]):
        messages.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
    return messages


def _assistant(response: str) -> Messages:
    # The loader drops an empty response and counts it under its own reason.
    return [{"role": "assistant", "content": response.strip()}]


def is_empty_response(pair: PreferencePair) -> bool:
    """Return whether a response of the pair has no text (only HH transcripts can produce this)."""
    return any(isinstance(r, list) and not any(m["content"].strip() for m in r) for r in (pair.chosen, pair.rejected))


# ---------------------------------------------------------------------------------------------
# Rendering without a chat template
# ---------------------------------------------------------------------------------------------


def render_messages(messages: Messages, add_generation_prompt: bool = False) -> str:
    """Render messages in HH transcript style: the fallback for tokenizers without a chat template.

    A user message renders as `"\\n\\nHuman: " + content`, an assistant message as
    `"\\n\\nAssistant: " + content`, and a leading system message as its plain content. The
    generation prompt is `"\\n\\nAssistant:"`, so a response renders as `" " + content`.
    """
    pieces = []
    for message in messages:
        if message["role"] == "system":
            pieces.append(message["content"])
        elif message["role"] == "user":
            pieces.append(f"{HUMAN_TURN} {message['content']}")
        else:
            pieces.append(f"{ASSISTANT_TURN} {message['content']}")
    if add_generation_prompt:
        pieces.append(GENERATION_PROMPT)
    return "".join(pieces)


def render_plain(pair: PreferencePair) -> tuple[str, str, str]:
    """Return (prompt text, chosen text, rejected text) of a pair without a chat template.

    The full sequence of a response is the prompt text followed by the response text.
    """
    if isinstance(pair.prompt, str):
        return pair.prompt, str(pair.chosen), str(pair.rejected)
    prompt_text = render_messages(pair.prompt, add_generation_prompt=True)
    responses = []
    for response in (pair.chosen, pair.rejected):
        full = render_messages(pair.prompt + list(response))
        # Holds by construction: the rendered prompt plus "\n\nAssistant:" starts every response.
        assert full.startswith(prompt_text)
        responses.append(full[len(prompt_text) :])
    return prompt_text, responses[0], responses[1]


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _check_object(row: Any) -> None:
    if not isinstance(row, dict):
        raise RowError(f"the row is {_describe(row)}, not a JSON object; each row must map column names to values.")


def _required(row: dict[str, Any], column: str, columns: Columns) -> Any:
    if column not in row:
        raise RowError(
            f'field "{column}" is missing; the row has columns {_list_columns(row)}. Set '
            f"{columns.option_for(column)} to the column that holds it."
        )
    return row[column]


def _group(row: dict[str, Any], columns: Columns) -> str | None:
    if columns.group is None:
        return None
    value = _required(row, columns.group, columns)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise RowError(f'field "{columns.group}" (group_column) is {_describe(value)}; a group must be a string or an integer.')


def _check_no_nul(text: str, where: str) -> None:
    if "\x00" in text:
        raise RowError(
            f"{where} contains a NUL character (position {text.index(chr(0)) + 1}); NUL characters come "
            f"from binary or damaged files, so remove them."
        )


def _list_columns(row: dict[str, Any]) -> str:
    return ", ".join(f'"{key}"' for key in row) or "none"


def _describe(value: Any) -> str:
    """Describe a JSON value's type for an error message: "null", "a number (42)", "a list"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"
