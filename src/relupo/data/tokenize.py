"""Tokenize preference pairs into prompt ids and response ids, truncate them, and cache the result.

Rendering: message-list pairs use the tokenizer's chat template when it has one (the prompt with
`add_generation_prompt=True`); otherwise they render in HH transcript style (see
`formats.render_messages`). Text pairs are used as they are.

Boundary: the full sequences prompt+chosen and prompt+rejected and the prompt alone are tokenized
separately. The prompt ids are the longest common prefix of the three, and each response is what
follows in its full sequence. A tokenizer that merges characters across the prompt/response
boundary therefore moves the merged token into both responses, and chosen and rejected always
share identical prompt ids.

Special tokens: BOS appears once at the start when the tokenizer normally adds one (templates that
write BOS into their text are not given a second). Every response ends with EOS, except a
response cut by `max_length`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
from jinja2 import TemplateError

from relupo.config import DataConfig
from relupo.data.formats import PreferencePair, render_plain
from relupo.errors import DataError

logger = logging.getLogger(__name__)

# Increase when tokenization, truncation or the stored layout changes, so old cache entries miss.
_CACHE_VERSION = 1
# Texts per call to the tokenizer's batch encoder.
_ENCODE_CHUNK = 1000

FEATURES = datasets.Features(
    {
        "pair_id": datasets.Value("string"),
        "prompt_ids": datasets.List(datasets.Value("int32")),
        "chosen_ids": datasets.List(datasets.Value("int32")),
        "rejected_ids": datasets.List(datasets.Value("int32")),
        "group": datasets.Value("string"),
    }
)

REASON_NO_ROOM = "prompt leaves no room for a response within max_length"
REASON_NO_PROMPT_TOKENS = "no prompt tokens before the response"
REASON_IDENTICAL_TOKENS = "identical chosen and rejected tokens"
REASON_EMPTY_RESPONSE = "response with no tokens"


@dataclass
class TokenizeReport:
    """Counts from one `tokenize_pairs` call."""

    pairs_in: int = 0
    pairs_kept: int = 0
    truncated_prompts: int = 0  # pairs whose prompt was cut to max_prompt_length
    truncated_responses: int = 0  # chosen and rejected responses cut to max_length, counted apart
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> pairs

    def summary(self) -> str:
        """Return one line, e.g. "1962 of 1962 pairs kept; truncated prompts: 869, truncated responses: 257"."""
        line = (
            f"{self.pairs_kept} of {self.pairs_in} pairs kept; truncated prompts: {self.truncated_prompts}, "
            f"truncated responses: {self.truncated_responses}"
        )
        if self.dropped:
            line += "; dropped: " + ", ".join(f"{count} {reason}" for reason, count in self.dropped.items())
        return line

    def __str__(self) -> str:
        return self.summary()

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


@dataclass
class TokenizedData:
    """Result of `load_or_tokenize`."""

    dataset: datasets.Dataset
    report: TokenizeReport
    cache_hit: bool  # True when the dataset was read from the cache
    cache_path: Path  # the entry's directory; its name is the cache key


@dataclass
class _SpecialTokens:
    bos: int | None  # BOS id to put first, or None when the tokenizer adds no BOS
    eos: int | None


def tokenize_pairs(
    pairs: Sequence[PreferencePair], tokenizer: Any, max_length: int, max_prompt_length: int
) -> tuple[datasets.Dataset, TokenizeReport]:
    """Tokenize and truncate pairs into a Dataset of prompt, chosen and rejected ids.

    Columns: `pair_id`, `prompt_ids`, `chosen_ids`, `rejected_ids` (responses only) and `group`.
    `max_prompt_length` keeps the prompt's BOS and its last tokens; `max_length` caps prompt plus
    response by cutting the response's end, which then has no EOS. A pair whose prompt leaves no
    room for one response token is dropped and counted, so no response is ever empty.
    """
    if max_length < 1 or max_prompt_length < 1:
        raise ValueError(f"max_length ({max_length}) and max_prompt_length ({max_prompt_length}) must be positive")
    special = _special_tokens(tokenizer)
    report = TokenizeReport(pairs_in=len(pairs))
    columns: dict[str, list[Any]] = {name: [] for name in FEATURES}

    texts = [_render(pair, tokenizer) for pair in pairs]
    prompts = _encode([t[0] for t in texts], tokenizer)
    chosen_full = _encode([t[1] for t in texts], tokenizer)
    rejected_full = _encode([t[2] for t in texts], tokenizer)

    for index, pair in enumerate(pairs):
        sequences = [_with_bos(ids, special) for ids in (prompts[index], chosen_full[index], rejected_full[index])]
        split = _split_at_prompt(*sequences, special)
        truncated = _truncate(*split, special, max_length, max_prompt_length, report)
        if truncated is None:
            continue
        prompt_ids, chosen_ids, rejected_ids = truncated
        columns["pair_id"].append(pair.pair_id)
        columns["prompt_ids"].append(prompt_ids)
        columns["chosen_ids"].append(chosen_ids)
        columns["rejected_ids"].append(rejected_ids)
        columns["group"].append(pair.group)

    report.pairs_kept = len(columns["pair_id"])
    return datasets.Dataset.from_dict(columns, features=FEATURES), report


# ---------------------------------------------------------------------------------------------
# Rendering and encoding
# ---------------------------------------------------------------------------------------------


def _render(pair: PreferencePair, tokenizer: Any) -> tuple[str, str, str]:
    """Return (prompt text, prompt+chosen text, prompt+rejected text) for one pair."""
    if isinstance(pair.prompt, list) and getattr(tokenizer, "chat_template", None):
        return _render_with_template(pair, tokenizer)
    prompt, chosen, rejected = render_plain(pair)
    return prompt, prompt + chosen, prompt + rejected


def _render_with_template(pair: PreferencePair, tokenizer: Any) -> tuple[str, str, str]:
    try:
        prompt = tokenizer.apply_chat_template(pair.prompt, tokenize=False, add_generation_prompt=True)
        fulls = [tokenizer.apply_chat_template(pair.prompt + list(r), tokenize=False) for r in (pair.chosen, pair.rejected)]
    except TemplateError as error:
        raise DataError(f"{pair.source}: the chat template rejected the messages ({error}).") from None
    for full in fulls:
        if not full.startswith(prompt):
            raise DataError(
                f"{pair.source}: the chat template's text for prompt plus response does not start with "
                f"its text for the prompt with add_generation_prompt=True, so the response cannot be "
                f"separated; use a chat template that renders the prompt as a prefix of the conversation."
            )
    return prompt, fulls[0], fulls[1]


def _encode(texts: list[str], tokenizer: Any) -> list[list[int]]:
    # Special tokens are handled by _with_bos and _split_at_prompt, so the encoder adds none.
    # Sequences longer than model_max_length are expected here because truncation comes later and
    # is explicit. Setting this flag is how transformers marks its warning about them as shown.
    if hasattr(tokenizer, "deprecation_warnings"):
        tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
    ids: list[list[int]] = []
    for start in range(0, len(texts), _ENCODE_CHUNK):
        ids.extend(tokenizer(texts[start : start + _ENCODE_CHUNK], add_special_tokens=False)["input_ids"])
    return ids


def _special_tokens(tokenizer: Any) -> _SpecialTokens:
    bos = tokenizer.bos_token_id
    if bos is not None:
        # A tokenizer "normally adds" BOS when its default encoding of a text starts with it.
        adds_bos = tokenizer("a")["input_ids"][:1] == [bos]
        bos = bos if adds_bos else None
    return _SpecialTokens(bos=bos, eos=tokenizer.eos_token_id)


def _with_bos(ids: list[int], special: _SpecialTokens) -> list[int]:
    if special.bos is not None and ids[:1] != [special.bos]:
        return [special.bos, *ids]
    return ids


# ---------------------------------------------------------------------------------------------
# Prompt/response boundary and truncation
# ---------------------------------------------------------------------------------------------


def _split_at_prompt(
    prompt: list[int], chosen_full: list[int], rejected_full: list[int], special: _SpecialTokens
) -> tuple[list[int], list[int], list[int]]:
    """Return (prompt ids, chosen ids, rejected ids) with the responses ending in EOS."""
    shared = 0
    limit = min(len(prompt), len(chosen_full), len(rejected_full))
    while shared < limit and prompt[shared] == chosen_full[shared] == rejected_full[shared]:
        shared += 1
    responses = []
    for full in (chosen_full, rejected_full):
        response = full[shared:]
        if special.eos is not None and response[-1:] != [special.eos]:
            response = [*response, special.eos]
        responses.append(response)
    return prompt[:shared], responses[0], responses[1]


def _truncate(
    prompt: list[int],
    chosen: list[int],
    rejected: list[int],
    special: _SpecialTokens,
    max_length: int,
    max_prompt_length: int,
    report: TokenizeReport,
) -> tuple[list[int], list[int], list[int]] | None:
    """Apply max_prompt_length and max_length; return None (and count why) to drop the pair."""
    if len(prompt) > max_prompt_length:
        prompt = _keep_prompt_end(prompt, special, max_prompt_length)
        report.truncated_prompts += 1
    if not prompt:
        # The first response token needs a preceding token to be scored.
        report.drop(REASON_NO_PROMPT_TOKENS)
        return None
    if not chosen or not rejected:
        # Only possible for a tokenizer without EOS whose full sequence encodes like the prompt.
        report.drop(REASON_EMPTY_RESPONSE)
        return None
    room = max_length - len(prompt)
    if room < 1:
        report.drop(REASON_NO_ROOM)
        return None

    responses = []
    for response in (chosen, rejected):
        if len(response) > room:
            response = response[:room]
            report.truncated_responses += 1
        responses.append(response)
    if responses[0] == responses[1]:
        # Truncation (or a tokenizer that normalizes text) can make distinct responses equal.
        report.drop(REASON_IDENTICAL_TOKENS)
        return None
    return prompt, responses[0], responses[1]


def _keep_prompt_end(prompt: list[int], special: _SpecialTokens, max_prompt_length: int) -> list[int]:
    """Keep BOS (when the prompt starts with it) and then the prompt's last tokens."""
    if special.bos is not None and prompt[0] == special.bos:
        tail = max_prompt_length - 1
        return [special.bos, *prompt[len(prompt) - tail :]] if tail > 0 else [special.bos]
    return prompt[len(prompt) - max_prompt_length :]


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Return `$RELUPO_CACHE`, or `~/.cache/relupo` when it is unset."""
    return Path(os.environ.get("RELUPO_CACHE") or "~/.cache/relupo").expanduser()


def load_or_tokenize(pairs: Sequence[PreferencePair], tokenizer: Any, config: DataConfig) -> TokenizedData:
    """Return the tokenized pairs from the cache, or tokenize them and store them there.

    The cache key hashes the pairs' content, the tokenizer (vocabulary and merges, special token
    ids, chat template) and max_length and max_prompt_length. Entries are written to a temporary
    directory and renamed into place, so an interrupted write never leaves a partial entry.
    """
    path = cache_path(pairs, tokenizer, config)

    cached = _read_cache(path)
    if cached is not None:
        dataset, report = cached
        logger.info("Loaded %d tokenized pairs from cache %s", len(dataset), path)
        return TokenizedData(dataset, report, cache_hit=True, cache_path=path)

    logger.info(
        "Tokenizing %d pairs (max_length %d, max_prompt_length %d)",
        len(pairs), config.max_length, config.max_prompt_length,
    )
    dataset, report = tokenize_pairs(pairs, tokenizer, config.max_length, config.max_prompt_length)
    _write_cache(path, dataset, report)
    logger.info("Tokenized pairs: %s; cached at %s", report.summary(), path)
    return TokenizedData(dataset, report, cache_hit=False, cache_path=path)


def cache_path(pairs: Sequence[PreferencePair], tokenizer: Any, config: DataConfig) -> Path:
    """Return the cache directory of these pairs: `<cache_dir>/tokenized/<cache_key>`."""
    root = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    return root / "tokenized" / cache_key(pairs, tokenizer, config.max_length, config.max_prompt_length)


def cache_key(pairs: Sequence[PreferencePair], tokenizer: Any, max_length: int, max_prompt_length: int) -> str:
    """Return the hex SHA-256 that identifies tokenized pairs for one data, tokenizer and settings."""
    digest = hashlib.sha256()
    settings = {"version": _CACHE_VERSION, "max_length": max_length, "max_prompt_length": max_prompt_length}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(tokenizer_fingerprint(tokenizer).encode())
    for pair in pairs:
        row = [pair.pair_id, pair.prompt, pair.chosen, pair.rejected, pair.group]
        digest.update(json.dumps(row, ensure_ascii=False, sort_keys=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Return a text that changes when the tokenizer would encode or render text differently."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Vocabulary, merges, normalizer, pre-tokenizer, post-processor and added tokens.
        model = backend.to_str()
    else:
        # NOTE: for tokenizers without a fast backend only the vocabulary is hashed, so a change
        # in their normalization rules alone does not invalidate the cache.
        model = json.dumps(sorted(tokenizer.get_vocab().items()))
    special = _special_tokens(tokenizer)
    parts = {
        "class": type(tokenizer).__name__,
        "model": model,
        "special_tokens": {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "adds_bos": special.bos is not None},
        "chat_template": getattr(tokenizer, "chat_template", None),
    }
    return json.dumps(parts, sort_keys=True, default=str)


def _read_cache(path: Path) -> tuple[datasets.Dataset, TokenizeReport] | None:
    if not path.is_dir():
        return None
    try:
        dataset = datasets.load_from_disk(str(path / "dataset"))
        report = TokenizeReport(**json.loads((path / "report.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as error:
        logger.warning("Cache entry %s is unreadable (%s); tokenizing again", path, error)
        shutil.rmtree(path, ignore_errors=True)
        return None
    return dataset, report


def _write_cache(path: Path, dataset: datasets.Dataset, report: TokenizeReport) -> None:
    temporary = path.parent / f".tmp-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.save_to_disk(str(temporary / "dataset"))
        (temporary / "report.json").write_text(json.dumps(asdict(report)), encoding="utf-8")
        os.rename(temporary, path)
    except OSError as error:
        # A rename onto an existing entry fails when another process stored the same content first.
        if not path.is_dir():
            raise DataError(
                f"{path.parent}: failed to write the tokenized data cache ({error}); set cache_dir to a "
                f"writable directory."
            ) from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
