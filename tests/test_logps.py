"""Sequence log-probs from one batched forward pass against a direct per-sequence computation."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from relupo.data.batching import PairCollator
from relupo.logps import pair_logps, sequence_logps, token_logps


def direct_response_logp(model, prompt_ids, response_ids):
    """Sum of log p(response token | everything before it), one unpadded sequence at a time."""
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(logprobs[len(prompt_ids) + i - 1, token].item() for i, token in enumerate(response_ids))


@pytest.fixture(scope="module")
def model(bundled_model_dir):
    return AutoModelForCausalLM.from_pretrained(bundled_model_dir).eval()


ROWS = [
    {"prompt_ids": [1, 403, 407], "chosen_ids": [261, 378, 2], "rejected_ids": [300, 2], "index": 0},
    {"prompt_ids": [1, 410, 13, 13, 440, 425], "chosen_ids": [423, 2], "rejected_ids": [303, 467, 270, 417, 2], "index": 1},
    {"prompt_ids": [1], "chosen_ids": [403, 407, 261, 378, 13, 2], "rejected_ids": [259, 2], "index": 2},
]


def test_pair_logps_match_direct_computation(model):
    batch = PairCollator(pad_token_id=0)(ROWS)
    with torch.no_grad():
        logps = pair_logps(model, batch)
    for i, row in enumerate(ROWS):
        expected_chosen = direct_response_logp(model, row["prompt_ids"], row["chosen_ids"])
        expected_rejected = direct_response_logp(model, row["prompt_ids"], row["rejected_ids"])
        assert logps.chosen_logps[i].item() == pytest.approx(expected_chosen, abs=1e-4)
        assert logps.rejected_logps[i].item() == pytest.approx(expected_rejected, abs=1e-4)
        assert logps.chosen_lengths[i].item() == len(row["chosen_ids"])
        assert logps.rejected_lengths[i].item() == len(row["rejected_ids"])


def test_padding_does_not_change_logps(model):
    alone = PairCollator(pad_token_id=0)(ROWS[:1])
    padded = PairCollator(pad_token_id=0)(ROWS)
    with torch.no_grad():
        single = pair_logps(model, alone)
        batched = pair_logps(model, padded)
    assert single.chosen_logps[0].item() == pytest.approx(batched.chosen_logps[0].item(), abs=1e-5)
    assert single.rejected_logps[0].item() == pytest.approx(batched.rejected_logps[0].item(), abs=1e-5)


def test_padding_to_multiple_keeps_logps(model):
    batch = PairCollator(pad_token_id=0)(ROWS)
    rounded = PairCollator(pad_token_id=0, pad_to_multiple_of=32)(ROWS)
    assert batch["input_ids"].shape == (6, 11)
    assert rounded["input_ids"].shape == (6, 32)
    assert torch.equal(rounded["response_mask"][:, :11], batch["response_mask"])
    assert not rounded["attention_mask"][:, 11:].any()
    with torch.no_grad():
        exact = pair_logps(model, batch)
        padded = pair_logps(model, rounded)
    assert torch.allclose(padded.chosen_logps, exact.chosen_logps, atol=1e-5)
    assert torch.allclose(padded.rejected_logps, exact.rejected_logps, atol=1e-5)


def test_collator_layout():
    batch = PairCollator(pad_token_id=0)(ROWS[:2])
    assert batch["input_ids"].shape == (4, 11)
    assert batch["input_ids"][0, :6].tolist() == [1, 403, 407, 261, 378, 2]
    assert batch["input_ids"][2, :5].tolist() == [1, 403, 407, 300, 2]
    assert batch["response_mask"][0].nonzero().flatten().tolist() == [3, 4, 5]
    assert batch["response_mask"][3].nonzero().flatten().tolist() == [6, 7, 8, 9, 10]
    assert batch["attention_mask"][2].sum().item() == 5
    assert batch["pair_index"].tolist() == [0, 1]


def test_token_logps_chunking_matches_log_softmax(monkeypatch):
    monkeypatch.setattr("relupo.logps.LOGSOFTMAX_CHUNK_ROWS", 3)
    logits = torch.randn(10, 7, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0, 1, 2])
    expected = torch.log_softmax(logits, dim=-1)[torch.arange(10), labels]
    assert torch.allclose(token_logps(logits, labels), expected, atol=1e-6)


def test_sequence_logps_gradient_flows(model):
    batch = PairCollator(pad_token_id=0)(ROWS)
    sums, _ = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    sums.sum().backward()
    grad = model.get_input_embeddings().weight.grad
    assert grad is not None and grad.abs().sum().item() > 0
    model.zero_grad()
