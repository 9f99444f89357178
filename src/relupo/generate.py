"""Completions of a causal language model for a list of prompts, written as JSON Lines.

Prompts are rendered as for training. A message list goes through the tokenizer's chat template
with the generation prompt, or through the HH transcript rendering
(`relupo.data.formats.render_messages`) when the tokenizer has no template. A text prompt is used
as it is. Batches are left-padded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from relupo.data.formats import HUMAN_TURN, render_messages
from relupo.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class SamplingSettings:
    """Generation settings; with do_sample False, decoding is greedy and temperature and top_p are unused."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    do_sample: bool = True
    seed: int = 0
    batch_size: int = 8
    max_prompt_length: int = 256  # longer prompts keep their last tokens (and BOS)
    stop: list[str] | None = field(default=None)  # cut each response before the first of these strings


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    prompt: Any  # text or a message list


def read_prompts(path: str, prompt_column: str = "prompt", limit: int | None = None) -> list[Prompt]:
    """Read prompts from a JSONL file of `prompt` rows, or the prompts of a preference data file.

    A row whose prompt column contains text or a message list is a prompt. A file whose first row
    has no such column is read as preference pairs in any relupo format, and each pair's prompt
    is used, in file order.
    """
    from relupo.data import read_pairs
    from relupo.data.formats import Columns

    first = _first_row(path)
    if first is None or prompt_column not in first or "chosen" in first:
        pairs, _ = read_pairs(path, "train", Columns(prompt=prompt_column))
        prompts = [Prompt(pair.pair_id, pair.prompt) for pair in pairs]
    else:
        prompts = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                row = json.loads(line)
                value = row.get(prompt_column)
                if not isinstance(value, (str, list)) or not value:
                    raise DataError(f'{path}, line {number}: field "{prompt_column}" must be non-empty text or a message list.')
                prompts.append(Prompt(str(row.get("id", f"{Path(path).name}:{number}")), value))
    return prompts[:limit] if limit else prompts


def _first_row(path: str) -> dict[str, Any] | None:
    if not (path.endswith(".jsonl") or path.endswith(".json")) or not Path(path).is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return None
                return row if isinstance(row, dict) else None
    return None


def render_prompt(prompt: Any, tokenizer: Any) -> str:
    """Render a prompt as the model was trained to see it, ending where the response starts."""
    if isinstance(prompt, str):
        return prompt
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return render_messages(prompt, add_generation_prompt=True)


def encode_prompt(text: str, tokenizer: Any, max_prompt_length: int) -> list[int]:
    """Token ids of a rendered prompt, with BOS once, cut to its last max_prompt_length tokens (BOS kept)."""
    bos = tokenizer.bos_token
    ids = tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]
    if len(ids) <= max_prompt_length:
        return ids
    if tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id:
        return [ids[0]] + ids[len(ids) - max_prompt_length + 1 :]
    return ids[-max_prompt_length:]


def generate(model: torch.nn.Module, tokenizer: Any, prompts: list[Prompt], settings: SamplingSettings) -> list[dict[str, Any]]:
    """Generate one completion per prompt; return rows with id, prompt, response and finish_reason."""
    stop = settings.stop
    if stop is None:
        # Without a chat template the model was trained on HH transcripts and may generate the next human turn.
        stop = [] if getattr(tokenizer, "chat_template", None) else [HUMAN_TURN]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    torch.manual_seed(settings.seed)
    rows = []
    for start in range(0, len(prompts), settings.batch_size):
        batch = prompts[start : start + settings.batch_size]
        encoded = [encode_prompt(render_prompt(p.prompt, tokenizer), tokenizer, settings.max_prompt_length) for p in batch]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        sampling = {"temperature": settings.temperature, "top_p": settings.top_p} if settings.do_sample else {}
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=settings.max_new_tokens,
                do_sample=settings.do_sample,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
        for prompt, new_ids in zip(batch, output[:, width:].tolist()):
            rows.append({"id": prompt.prompt_id, "prompt": prompt.prompt, **_finish(new_ids, tokenizer, stop)})
        logger.info("generated %d of %d", len(rows), len(prompts))
    return rows


def _finish(new_ids: list[int], tokenizer: Any, stop: list[str]) -> dict[str, Any]:
    """Decode generated ids up to EOS, cut at the first stop string, and name why generation ended."""
    reason = "length"
    if tokenizer.eos_token_id in new_ids:
        new_ids = new_ids[: new_ids.index(tokenizer.eos_token_id)]
        reason = "eos"
    text = tokenizer.decode(new_ids, skip_special_tokens=True)
    cuts = [text.index(s) for s in stop if s in text]
    if cuts:
        text = text[: min(cuts)]
        reason = "stop"
    return {"response": text.strip(), "finish_reason": reason, "new_tokens": len(new_ids)}


def write_generations(rows: list[dict[str, Any]], output: str | Path, model_name: str, settings: SamplingSettings) -> None:
    """Write the rows as JSON Lines, each with the model and the sampling settings."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({**row, "model": model_name, "settings": asdict(settings)}, ensure_ascii=False) + "\n")
