"""Shared-prompt packing: score chosen and rejected of a pair in one sequence that contains the prompt once.

A collated batch has 2B rows, prompt + chosen and prompt + rejected, so every prompt token is
computed twice. Packing lays each pair out once,

    [prompt][chosen][rejected]        position ids 0..P-1, P..P+C-1, P..P+R-1

and places several such pairs side by side in one row where they fit, so that short pairs fill
the space a long pair would otherwise leave as padding:

    row 0: [pair 3 .................][pair 0 ......]
    row 1: [pair 1 ..........][pair 2 .........]

A 4D attention mask lets each response attend to its own pair's prompt and its own earlier
tokens, never to the other response or another pair. Every response token then attends to exactly
the context, at the positions, it has in its own separate sequence, so the log-probs are those of the
unpacked forward passes, up to floating-point summation order. Both first response tokens are
scored by the logits at their pair's last prompt position.

Rows are filled first-fit decreasing up to the length of the longest pair. A row is thus never
longer than the longest pair alone, and the attention cost per row does not grow with packing.

The 4D mask has shape (rows, 1, L, L). transformers (checked on 5.25) passes a 4D mask to the
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

from relupo.data.batching import round_up
from relupo.logps import token_logps, unwrap_model
from relupo.objectives import PairLogps

logger = logging.getLogger(__name__)

PROMPT, CHOSEN, REJECTED, PADDING = 0, 1, 2, 3

# Attention implementations that read a custom 4D mask as given.
MASK_AWARE_ATTENTION = ("sdpa", "eager")


@dataclass(frozen=True)
class PackedPairs:
    """B pairs laid out in R <= B rows: ids, position ids, segment and pair of every position."""

    input_ids: Tensor  # (R, L)
    position_ids: Tensor  # (R, L)
    segments: Tensor  # (R, L): PROMPT, CHOSEN, REJECTED or PADDING
    owners: Tensor  # (R, L): index of the pair a position belongs to, -1 for padding
    last_prompt: Tensor  # (B, 2): (row, position) of each pair's last prompt token
    chosen_lengths: Tensor  # (B,) response token counts, float32
    rejected_lengths: Tensor

    def attention_mask(self, additive_dtype: torch.dtype | None = None) -> Tensor:
        """Return the (R, 1, L, L) mask: causal, within one pair, within its prompt or the query's own response.

        Boolean (True = visible) by default; with `additive_dtype`, 0 where visible and that
        dtype's minimum elsewhere, the form eager attention adds to its scores.
        """
        length = self.segments.shape[1]
        queries, keys = self.segments[:, :, None], self.segments[:, None, :]
        same_pair = self.owners[:, :, None] == self.owners[:, None, :]
        causal = torch.ones(length, length, dtype=torch.bool, device=self.segments.device).tril()
        visible = causal & same_pair & (queries != PADDING) & (keys != PADDING) & ((keys == PROMPT) | (keys == queries))
        # A padding query attends to itself only: a row with no visible key would make softmax NaN,
        # and NaN times a zero gradient is still NaN in the backward pass.
        visible |= torch.eye(length, dtype=torch.bool, device=self.segments.device)
        if additive_dtype is None:
            return visible[:, None]
        additive = torch.zeros(visible.shape, dtype=additive_dtype, device=visible.device)
        return additive.masked_fill(~visible, torch.finfo(additive_dtype).min)[:, None]


def plan_rows(lengths: list[int]) -> list[list[int]]:
    """Assign pairs (by packed length) to rows, first-fit decreasing, each row at most the longest length.

    Deterministic: ties keep the pairs' order.
    """
    capacity = max(lengths)
    rows: list[list[int]] = []
    free: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, space in enumerate(free) if space >= lengths[index]), None)
        if row is None:
            rows.append([])
            free.append(capacity)
            row = len(rows) - 1
        rows[row].append(index)
        free[row] -= lengths[index]
    return rows


def pack_pairs(batch: dict[str, Tensor], width_multiple: int = 1) -> PackedPairs:
    """Repack a collated batch (rows 0..B-1 prompt + chosen, B..2B-1 prompt + rejected) into at most B rows.

    The row width is the longest packed pair, rounded up to a multiple of `width_multiple` with
    padding positions that no token attends to.
    """
    input_ids, response_mask = batch["input_ids"], batch["response_mask"]
    device = input_ids.device
    pairs = input_ids.shape[0] // 2
    prompt_lengths = response_mask[:pairs].long().argmax(dim=1).tolist()
    chosen_lengths = response_mask[:pairs].sum(dim=1).tolist()
    rejected_lengths = response_mask[pairs:].sum(dim=1).tolist()
    totals = [p + c + r for p, c, r in zip(prompt_lengths, chosen_lengths, rejected_lengths)]
    rows = plan_rows(totals)
    width = round_up(max(totals), width_multiple)

    packed_ids = torch.zeros((len(rows), width), dtype=input_ids.dtype, device=device)
    positions = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    segments = torch.full((len(rows), width), PADDING, dtype=torch.long, device=device)
    owners = torch.full((len(rows), width), -1, dtype=torch.long, device=device)
    last_prompt = [(0, 0)] * pairs
    for row, members in enumerate(rows):
        start = 0
        for i in members:
            p, c, r = prompt_lengths[i], chosen_lengths[i], rejected_lengths[i]
            packed_ids[row, start : start + p + c] = input_ids[i, : p + c]
            packed_ids[row, start + p + c : start + p + c + r] = input_ids[pairs + i, p : p + r]
            positions[row, start : start + p + c] = torch.arange(p + c)
            positions[row, start + p + c : start + p + c + r] = torch.arange(p, p + r)
            segments[row, start : start + p] = PROMPT
            segments[row, start + p : start + p + c] = CHOSEN
            segments[row, start + p + c : start + p + c + r] = REJECTED
            owners[row, start : start + p + c + r] = i
            last_prompt[i] = (row, start + p - 1)
            start += p + c + r
    return PackedPairs(
        input_ids=packed_ids,
        position_ids=positions,
        segments=segments,
        owners=owners,
        last_prompt=torch.tensor(last_prompt, dtype=torch.long, device=device),
        chosen_lengths=torch.tensor(chosen_lengths, dtype=torch.float32, device=device),
        rejected_lengths=torch.tensor(rejected_lengths, dtype=torch.float32, device=device),
    )


def _scoring_positions(packed: PackedPairs) -> tuple[Tensor, Tensor, Tensor]:
    """Return (row, scoring position, label position) for every response token, flattened over rows.

    Each response token is scored by the logits of the position before it, except the first
    rejected token, which follows its prompt, not the chosen response: its scoring position is its
    pair's last prompt position.
    """
    response = (packed.segments == CHOSEN) | (packed.segments == REJECTED)
    rows, label_positions = response.nonzero(as_tuple=True)
    scoring = label_positions - 1
    first_rejected = (packed.segments[rows, label_positions] == REJECTED) & (packed.segments[rows, scoring] == CHOSEN)
    owners = packed.owners[rows, label_positions]
    scoring = torch.where(first_rejected, packed.last_prompt[owners, 1], scoring)
    return rows, scoring, label_positions


def packed_pair_logps(model: torch.nn.Module, batch: dict[str, Tensor], width_multiple: int = 1) -> PairLogps:
    """Score a collated batch with packed rows that hold each prompt once; same result as `relupo.logps.pair_logps`."""
    packed = pack_pairs(batch, width_multiple)
    base = unwrap_model(model)
    eager = getattr(base.config, "_attn_implementation", None) == "eager"
    mask = packed.attention_mask(additive_dtype=base.dtype if eager else None)
    rows, scoring, labels = _scoring_positions(packed)
    # Logits only at the positions that score a response token in some row (1D logits_to_keep).
    scoring_positions = torch.unique(scoring)
    logits = model(
        input_ids=packed.input_ids,
        attention_mask=mask,
        position_ids=packed.position_ids,
        use_cache=False,
        logits_to_keep=scoring_positions,
    ).logits

    picked = token_logps(logits[rows, torch.searchsorted(scoring_positions, scoring)], packed.input_ids[rows, labels])
    owners = packed.owners[rows, labels]
    is_chosen = packed.segments[rows, labels] == CHOSEN
    pairs = packed.last_prompt.shape[0]
    chosen = torch.zeros(pairs, dtype=torch.float32, device=picked.device).index_add(0, owners[is_chosen], picked[is_chosen])
    rejected = torch.zeros(pairs, dtype=torch.float32, device=picked.device).index_add(0, owners[~is_chosen], picked[~is_chosen])
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
