"""Batches of tokenized pairs: seeded length-grouped order and right-padded [chosen; rejected] tensors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

# Reference-model log-prob sums that rows carry when the objective needs them.
REFERENCE_KEYS = ("reference_chosen_logps", "reference_rejected_logps")


class LengthGroupedBatchSampler:
    """Batches of pairs with similar lengths, in an order that depends only on (seed, epoch).

    Each epoch shuffles all pairs, cuts the permutation into groups of `group_batches` batches,
    sorts each group by length and cuts it into batches, then shuffles the full batches. Pairs in
    a batch have similar lengths, so little compute goes to padding, while every batch is still
    drawn from a random part of the data. A short final batch, if any, comes last.

    Because the order of any epoch is rebuilt from the seed alone, a run resumed from a checkpoint
    sees exactly the batches an uninterrupted run would have seen. With `shuffle=False` (held-out
    evaluation) batches are formed longest first, with no randomness.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, shuffle: bool = True, group_batches: int = 50) -> None:
        self.lengths = torch.tensor(lengths, dtype=torch.long)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.group_batches = group_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            order = torch.argsort(self.lengths, descending=True, stable=True)
            return (batch.tolist() for batch in order.split(self.batch_size))

        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        permutation = torch.randperm(len(self.lengths), generator=generator)
        batches: list[torch.Tensor] = []
        for group in permutation.split(self.batch_size * self.group_batches):
            by_length = group[torch.argsort(self.lengths[group], descending=True, stable=True)]
            batches.extend(by_length.split(self.batch_size))
        full = [batch for batch in batches if len(batch) == self.batch_size]
        short = [batch for batch in batches if len(batch) < self.batch_size]
        shuffled = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
        return (batch.tolist() for batch in shuffled + short)


def pair_lengths(rows: Any) -> list[int]:
    """Tokens of the longer of a pair's two sequences (prompt + response), per row."""
    return [len(p) + max(len(c), len(r)) for p, c, r in zip(rows["prompt_ids"], rows["chosen_ids"], rows["rejected_ids"])]


def round_up(width: int, multiple: int) -> int:
    """Return the smallest multiple of `multiple` that is at least `width`."""
    return -(-width // multiple) * multiple


class PairCollator:
    """Collate tokenized pairs into one batch of 2B right-padded sequences.

    Rows 0..B-1 are prompt + chosen and rows B..2B-1 are prompt + rejected, so one forward pass
    scores both. `response_mask` is 1 exactly at the response tokens, which are the only tokens
    whose log-probabilities enter an objective. The width is the longest sequence, rounded up to
    a multiple of `pad_to_multiple_of`.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 1) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences = [row["prompt_ids"] + row["chosen_ids"] for row in rows]
        sequences += [row["prompt_ids"] + row["rejected_ids"] for row in rows]
        prompt_lengths = [len(row["prompt_ids"]) for row in rows] * 2
        width = round_up(max(len(sequence) for sequence in sequences), self.pad_to_multiple_of)

        input_ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        response_mask = torch.zeros((len(sequences), width), dtype=torch.bool)
        for i, (sequence, prompt_length) in enumerate(zip(sequences, prompt_lengths)):
            input_ids[i, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
            attention_mask[i, : len(sequence)] = 1
            response_mask[i, prompt_length : len(sequence)] = True

        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "response_mask": response_mask,
            "pair_index": torch.tensor([row["index"] for row in rows], dtype=torch.long),
        }
        for name in REFERENCE_KEYS:
            if name in rows[0]:
                batch[name] = torch.tensor([float(row[name]) for row in rows], dtype=torch.float32)
        return batch
