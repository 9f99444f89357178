"""Shared-prompt packing: score chosen and rejected of a pair in one sequence that contains the prompt once.

A collated batch has 2B rows, prompt + chosen and prompt + rejected, so every prompt token is
computed twice. Packing puts each pair in one row,

    [prompt][chosen][rejected]        position ids 0..P-1, P..P+C-1, P..P+R-1

with a 4D attention mask under which each response sees the prompt and its own earlier tokens but
never the other response. Every response token then sees exactly the context and positions it has
in its own separate sequence, so the log-probs are those of the unpacked forward passes, up to
floating-point summation order. Both first response tokens are scored by the logits at the last
prompt position.

The 4D mask has shape (B, 1, L, L). transformers (checked on 5.25) passes a 4D mask to the
attention implementation unchanged, so its type must suit that implementation: sdpa takes a
boolean mask (True where a query may attend to a key), eager attention adds the mask to the
scores, so it gets 0 and the dtype's minimum. FlashAttention ignores such masks.
`supports_shared_prompt` checks a model numerically before packing is used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from relupo.logps import token_logps, unwrap_model
from relupo.objectives import PairLogps

logger = logging.getLogger(__name__)

PROMPT, CHOSEN, REJECTED, PADDING = 0, 1, 2, 3

# Attention implementations that read a custom 4D mask as given.
MASK_AWARE_ATTENTION = ("sdpa", "eager")


@dataclass(frozen=True)
class PackedPairs:
    """B pairs, one row each: ids, position ids, segment of every position, and which logits score what."""

    input_ids: Tensor  # (B, L)
    position_ids: Tensor  # (B, L)
    segments: Tensor  # (B, L): PROMPT, CHOSEN, REJECTED or PADDING
    chosen_lengths: Tensor  # (B,) response token counts, float32
    rejected_lengths: Tensor

    def attention_mask(self, additive_dtype: torch.dtype | None = None) -> Tensor:
        """Return the (B, 1, L, L) mask: causal, within the prompt or the query's own response.

        Boolean (True = visible) by default; with `additive_dtype`, 0 where visible and that
        dtype's minimum elsewhere, the form eager attention adds to its scores.
        """
        length = self.segments.shape[1]
        queries = self.segments[:, :, None]
        keys = self.segments[:, None, :]
        causal = torch.ones(length, length, dtype=torch.bool, device=self.segments.device).tril()
        visible = causal & (queries != PADDING) & (keys != PADDING) & ((keys == PROMPT) | (keys == queries))
        # A padding query attends to itself only: a row with no visible key would make softmax NaN,
        # and NaN times a zero gradient is still NaN in the backward pass.
        visible |= torch.eye(length, dtype=torch.bool, device=self.segments.device)
        if additive_dtype is None:
            return visible[:, None]
        additive = torch.zeros(visible.shape, dtype=additive_dtype, device=visible.device)
        return additive.masked_fill(~visible, torch.finfo(additive_dtype).min)[:, None]


def pack_pairs(batch: dict[str, Tensor]) -> PackedPairs:
    """Repack a collated batch (rows 0..B-1 prompt + chosen, B..2B-1 prompt + rejected) into B rows."""
    input_ids, response_mask = batch["input_ids"], batch["response_mask"]
    pairs = input_ids.shape[0] // 2
    prompt_lengths = response_mask[:pairs].long().argmax(dim=1).tolist()
    chosen_lengths = response_mask[:pairs].sum(dim=1).tolist()
    rejected_lengths = response_mask[pairs:].sum(dim=1).tolist()
    width = max(p + c + r for p, c, r in zip(prompt_lengths, chosen_lengths, rejected_lengths))

    packed_ids = torch.zeros((pairs, width), dtype=input_ids.dtype, device=input_ids.device)
    positions = torch.zeros((pairs, width), dtype=torch.long, device=input_ids.device)
    segments = torch.full((pairs, width), PADDING, dtype=torch.long, device=input_ids.device)
    for i, (p, c, r) in enumerate(zip(prompt_lengths, chosen_lengths, rejected_lengths)):
        packed_ids[i, : p + c] = input_ids[i, : p + c]
        packed_ids[i, p + c : p + c + r] = input_ids[pairs + i, p : p + r]
        positions[i, : p + c] = torch.arange(p + c)
        positions[i, p + c : p + c + r] = torch.arange(p, p + r)
        segments[i, :p] = PROMPT
        segments[i, p : p + c] = CHOSEN
        segments[i, p + c : p + c + r] = REJECTED
    return PackedPairs(
        input_ids=packed_ids,
        position_ids=positions,
        segments=segments,
        chosen_lengths=torch.tensor(chosen_lengths, dtype=torch.float32, device=input_ids.device),
        rejected_lengths=torch.tensor(rejected_lengths, dtype=torch.float32, device=input_ids.device),
    )


def _scoring_positions(packed: PackedPairs) -> tuple[Tensor, Tensor, Tensor]:
    """Return, for every position holding a response token, the position whose logits score it.

    Each response token is scored by the position before it, except the first rejected token,
    which follows the prompt, not the chosen response: its scoring position is the last prompt
    position. Returns (scoring position, label position), flattened over rows, for all response
    tokens.
    """
    response = (packed.segments == CHOSEN) | (packed.segments == REJECTED)
    rows, label_positions = response.nonzero(as_tuple=True)
    scoring = label_positions - 1
    first_rejected = (packed.segments[rows, label_positions] == REJECTED) & (packed.segments[rows, scoring] == CHOSEN)
    prompt_lengths = (packed.segments == PROMPT).sum(dim=1)
    scoring = torch.where(first_rejected, prompt_lengths[rows] - 1, scoring)
    return rows, scoring, label_positions


def packed_pair_logps(model: torch.nn.Module, batch: dict[str, Tensor]) -> PairLogps:
    """Score a collated batch with one packed sequence per pair; same result as `relupo.logps.pair_logps`."""
    packed = pack_pairs(batch)
    base = unwrap_model(model)
    eager = getattr(base.config, "_attn_implementation", None) == "eager"
    mask = packed.attention_mask(additive_dtype=base.dtype if eager else None)
    first_scoring = int((packed.segments == PROMPT).sum(dim=1).min()) - 1
    keep = packed.input_ids.shape[1] - first_scoring
    logits = model(
        input_ids=packed.input_ids,
        attention_mask=mask,
        position_ids=packed.position_ids,
        use_cache=False,
        logits_to_keep=keep,
    ).logits

    rows, scoring, labels = _scoring_positions(packed)
    picked = token_logps(logits[rows, scoring - first_scoring], packed.input_ids[rows, labels])
    is_chosen = packed.segments[rows, labels] == CHOSEN
    pairs = packed.input_ids.shape[0]
    chosen = torch.zeros(pairs, dtype=torch.float32, device=picked.device).index_add(0, rows[is_chosen], picked[is_chosen])
    rejected = torch.zeros(pairs, dtype=torch.float32, device=picked.device).index_add(0, rows[~is_chosen], picked[~is_chosen])
    return PairLogps(
        chosen_logps=chosen,
        rejected_logps=rejected,
        chosen_lengths=packed.chosen_lengths,
        rejected_lengths=packed.rejected_lengths,
        reference_chosen_logps=batch.get("reference_chosen_logps"),
        reference_rejected_logps=batch.get("reference_rejected_logps"),
    )


@torch.no_grad()
def supports_shared_prompt(model: torch.nn.Module, batch: dict[str, Tensor], tolerance: float) -> tuple[bool, str]:
    """Check numerically that packing gives the separate-sequence log-probs on this model and batch.

    Returns (supported, reason). `tolerance` bounds the largest difference in per-token mean
    log-prob, in nats; half precision needs a looser bound than float32.
    """
    implementation = getattr(unwrap_model(model).config, "_attn_implementation", None)
    if implementation not in MASK_AWARE_ATTENTION:
        return False, f"attention implementation {implementation!r} does not read custom 4D masks"
    from relupo.logps import _accepts_logits_to_keep, pair_logps

    if not _accepts_logits_to_keep(model):
        return False, "the model's forward() has no logits_to_keep argument"
    try:
        packed = packed_pair_logps(model, batch)
    except (TypeError, ValueError, RuntimeError) as error:
        return False, f"the packed forward pass failed ({type(error).__name__}: {error})"
    separate = pair_logps(model, batch)
    difference = max(
        (packed.chosen_mean_logps - separate.chosen_mean_logps).abs().max().item(),
        (packed.rejected_mean_logps - separate.rejected_mean_logps).abs().max().item(),
    )
    if not difference <= tolerance:
        return False, f"packed and separate log-probs differ by {difference:.3g} nats per token"
    return True, f"packed and separate log-probs agree within {difference:.2g} nats per token"
