"""Batches of tokenized pairs: a seeded epoch order and right-padded [chosen; rejected] tensors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

# Reference-model log-prob sums that rows carry when the objective needs them.
REFERENCE_KEYS = ("reference_chosen_logps", "reference_rejected_logps")


class EpochShuffleSampler(Sampler[int]):
    """Yield a permutation of the dataset that depends only on (seed, epoch).

    The order of any epoch can be rebuilt from the seed alone, which is what makes resuming from a
    checkpoint land on exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


class PairCollator:
    """Collate tokenized pairs into one batch of 2B right-padded sequences.

    Rows 0..B-1 are prompt + chosen and rows B..2B-1 are prompt + rejected, so one forward pass
    scores both. `response_mask` is 1 exactly at the response tokens, which are the only tokens
    whose log-probabilities enter an objective.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences = [row["prompt_ids"] + row["chosen_ids"] for row in rows]
        sequences += [row["prompt_ids"] + row["rejected_ids"] for row in rows]
        prompt_lengths = [len(row["prompt_ids"]) for row in rows] * 2
        width = max(len(sequence) for sequence in sequences)

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
