"""Sequence log-probabilities of responses under a causal language model."""

from __future__ import annotations

import inspect

import torch
from accelerate.utils import extract_model_from_parallel
from torch import Tensor

from relupo.objectives import PairLogps

# Rows of the kept logits turned into float32 log-softmax at once. Caps the float32 copy at
# chunk_rows * vocab_size * 4 bytes instead of batch * length * vocab_size * 4.
LOGSOFTMAX_CHUNK_ROWS = 4096


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """Return the transformers model inside DDP, FSDP, DeepSpeed, torch.compile and peft wrappers."""
    model = extract_model_from_parallel(model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(unwrap_model(model).forward).parameters


def token_logps(logits: Tensor, labels: Tensor) -> Tensor:
    """Return log p(label) for each position: logits (N, V) and labels (N,) -> (N,) float32."""
    out = torch.empty(labels.shape[0], dtype=torch.float32, device=logits.device)
    for start in range(0, labels.shape[0], LOGSOFTMAX_CHUNK_ROWS):
        chunk = logits[start : start + LOGSOFTMAX_CHUNK_ROWS].float()
        picked = chunk.gather(-1, labels[start : start + LOGSOFTMAX_CHUNK_ROWS, None]).squeeze(-1)
        out[start : start + LOGSOFTMAX_CHUNK_ROWS] = picked - torch.logsumexp(chunk, dim=-1)
    return out


def sequence_logps(
    model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor
) -> tuple[Tensor, Tensor]:
    """Return (sum of response-token log-probs, response token count) per sequence, both (N,) float32.

    Token t is scored by the logits at position t - 1. The model only computes logits from the
    first position that predicts a response token onward (`logits_to_keep`), and only response
    positions are turned into float32, so memory grows with response tokens, not with the vocab
    times the padded batch.
    """
    first_response = int(response_mask.float().argmax(dim=1).min())
    keep = input_ids.shape[1] - first_response + 1
    kwargs = {"logits_to_keep": keep} if _accepts_logits_to_keep(model) else {}
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs).logits
    logits = logits[:, -keep:-1]

    labels = input_ids[:, first_response:]
    mask = response_mask[:, first_response:]
    per_token = torch.zeros(mask.shape, dtype=torch.float32, device=logits.device)
    per_token[mask] = token_logps(logits[mask], labels[mask])
    return per_token.sum(dim=1), mask.sum(dim=1).to(torch.float32)


def pair_logps(model: torch.nn.Module, batch: dict[str, Tensor]) -> PairLogps:
    """Score a collated batch ([chosen; rejected] rows) in one forward pass."""
    sums, lengths = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    pairs = sums.shape[0] // 2
    return PairLogps(
        chosen_logps=sums[:pairs],
        rejected_logps=sums[pairs:],
        chosen_lengths=lengths[:pairs],
        rejected_lengths=lengths[pairs:],
        reference_chosen_logps=batch.get("reference_chosen_logps"),
        reference_rejected_logps=batch.get("reference_rejected_logps"),
    )
