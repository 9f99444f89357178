"""Skipping zero-gradient pairs and shared-prompt packing against the plain computation."""

import weakref

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM

from relupo.checkpoint import TrainerState
from relupo.config import load_config
from relupo.data.batching import PairCollator
from relupo.logps import pair_logps
from relupo.packing import CHOSEN, PADDING, PROMPT, REJECTED, pack_pairs, packed_pair_logps, plan_rows, supports_shared_prompt
from relupo.step import TWO_PASS_SKIP_BELOW, PairStep, can_skip, row_width_multiple, select_pairs, uses_per_pair
from test_logps import ROWS, direct_response_logp

# Eight pairs of different prompt and response lengths, from token ids of the bundled vocabulary.
PAIRS = [
    {
        "prompt_ids": [1] + [300 + (7 * i + j) % 200 for j in range(2 + i % 4)],
        "chosen_ids": [260 + (5 * i + j) % 240 for j in range(1 + (3 * i) % 5)] + [2],
        "rejected_ids": [270 + (11 * i + j) % 230 for j in range(1 + (5 * i) % 6)] + [2],
        "index": i,
    }
    for i in range(8)
]


@pytest.fixture(scope="module")
def model(bundled_model_dir):
    return AutoModelForCausalLM.from_pretrained(bundled_model_dir).eval()


# Two pairs of 13 and 8 tokens when packed, and one of 5 that fits beside the 8-token pair.
SHARING_ROWS = ROWS[:2] + [{"prompt_ids": [1, 403], "chosen_ids": [2], "rejected_ids": [300, 2], "index": 2}]


def test_packed_logps_match_direct_computation(model):
    batch = PairCollator(pad_token_id=0)(SHARING_ROWS)
    with torch.no_grad():
        logps = packed_pair_logps(model, batch)
    for i, row in enumerate(SHARING_ROWS):
        assert logps.chosen_logps[i].item() == pytest.approx(direct_response_logp(model, row["prompt_ids"], row["chosen_ids"]), abs=1e-4)
        assert logps.rejected_logps[i].item() == pytest.approx(direct_response_logp(model, row["prompt_ids"], row["rejected_ids"]), abs=1e-4)
        assert logps.chosen_lengths[i].item() == len(row["chosen_ids"])
        assert logps.rejected_lengths[i].item() == len(row["rejected_ids"])


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_gradients_match_separate(bundled_model_dir, implementation):
    model = AutoModelForCausalLM.from_pretrained(bundled_model_dir, attn_implementation=implementation)
    batch = PairCollator(pad_token_id=0)(PAIRS)
    # The eight pairs fill seven rows, one of them with two pairs.
    assert pack_pairs(batch).input_ids.shape[0] == 7
    gradients = []
    for score in (pair_logps, packed_pair_logps):
        model.zero_grad()
        logps = score(model, batch)
        logps.normalized_margins.sum().backward()
        gradients.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    # float32 sums in another order: compare against the largest gradient entry.
    assert torch.allclose(gradients[0], gradients[1], atol=1e-5 * gradients[0].abs().max().item(), rtol=0)


def test_packed_width_rounding_keeps_logps(model):
    batch = PairCollator(pad_token_id=0)(SHARING_ROWS)
    packed = pack_pairs(batch, width_multiple=32)
    # The longest packed pair has 13 tokens; the other 19 columns of every row are padding.
    assert packed.input_ids.shape == (2, 32)
    assert (packed.segments[:, 13:] == PADDING).all()
    with torch.no_grad():
        rounded = packed_pair_logps(model, batch, width_multiple=32)
        exact = packed_pair_logps(model, batch)
    assert torch.allclose(rounded.chosen_logps, exact.chosen_logps, atol=1e-5)
    assert torch.allclose(rounded.rejected_logps, exact.rejected_logps, atol=1e-5)


def test_width_rounding_only_under_cpu_autocast():
    assert row_width_multiple("cpu", "bf16") == 32
    assert row_width_multiple("cpu", "no") == 1
    assert row_width_multiple("cuda", "bf16") == 1


def test_plan_rows_first_fit_decreasing():
    assert plan_rows([8, 13, 5]) == [[1], [0, 2]]
    assert plan_rows([4, 4, 4, 4]) == [[0], [1], [2], [3]]
    assert plan_rows([10, 3, 3, 4, 6]) == [[0], [4, 3], [1, 2]]


def test_pack_pairs_layout():
    packed = pack_pairs(PairCollator(pad_token_id=0)(SHARING_ROWS))
    # Row 0 contains pair 1 (13 tokens). Row 1 contains pair 0 (prompt [1, 403, 407], chosen [261, 378, 2],
    # rejected [300, 2]) followed by pair 2 (prompt [1, 403], chosen [2], rejected [300, 2]).
    assert packed.input_ids.shape == (2, 13)
    assert packed.input_ids[1].tolist() == [1, 403, 407, 261, 378, 2, 300, 2, 1, 403, 2, 300, 2]
    assert packed.position_ids[1].tolist() == [0, 1, 2, 3, 4, 5, 3, 4, 0, 1, 2, 2, 3]
    assert packed.segments[1].tolist() == [PROMPT] * 3 + [CHOSEN] * 3 + [REJECTED] * 2 + [PROMPT] * 2 + [CHOSEN] + [REJECTED] * 2
    assert packed.owners[1].tolist() == [0] * 8 + [2] * 5
    assert packed.last_prompt.tolist() == [[1, 2], [0, 5], [1, 9]]
    mask = packed.attention_mask()[1, 0]
    # The first rejected token attends to its prompt and itself, never to the chosen response.
    assert mask[6, :3].all()
    assert not mask[6, 3:6].any()
    assert mask[6, 6]
    # The last chosen token sees the prompt and the chosen response, nothing after.
    assert mask[5, :6].all()
    assert not mask[5, 6:].any()
    # Pair 2 attends only to pair 2. Its first rejected token attends to its prompt and itself.
    assert mask[11].tolist() == [False] * 8 + [True, True, False, True, False]
    padding = pack_pairs(PairCollator(pad_token_id=0)(ROWS[:2])).attention_mask()[1, 0]
    assert padding[10].tolist() == [False] * 10 + [True] + [False] * 2  # padding attends to itself


def test_shared_prompt_check_rejects_ignored_mask(model, monkeypatch):
    batch = PairCollator(pad_token_id=0)(PAIRS)
    assert supports_shared_prompt(model, batch, tolerance=1e-4)[0]
    # A mask the model ignores lets the rejected response see the chosen one.
    monkeypatch.setattr("relupo.packing.PackedPairs.attention_mask", lambda self, additive_dtype=None: None)
    supported, reason = supports_shared_prompt(model, batch, tolerance=1e-4)
    assert not supported
    assert "differ" in reason


def test_select_pairs_trims_padding():
    batch = PairCollator(pad_token_id=0)(ROWS)
    subset = select_pairs(batch, torch.tensor([0]))
    assert subset["input_ids"].shape == (2, 6)
    assert subset["input_ids"][1, :5].tolist() == [1, 403, 407, 300, 2]
    assert subset["pair_index"].tolist() == [0]


def test_select_pairs_rounds_capped_width():
    batch = PairCollator(pad_token_id=0, pad_to_multiple_of=8)(ROWS)
    assert batch["input_ids"].shape == (6, 16)
    # Pair 0 is 6 tokens long: rounded up to 8, or to the batch's 16 when the multiple exceeds it.
    assert select_pairs(batch, torch.tensor([0]), width_multiple=4)["input_ids"].shape == (2, 8)
    assert select_pairs(batch, torch.tensor([0]), width_multiple=32)["input_ids"].shape == (2, 16)
    assert select_pairs(batch, torch.tensor([1, 2]), width_multiple=4)["input_ids"].shape == (4, 12)


def test_per_pair_only_on_cpu():
    assert uses_per_pair("cpu")
    assert not uses_per_pair("cuda")
    assert not uses_per_pair("mps")


def test_can_skip_only_when_inactive_pairs_have_no_gradient():
    assert can_skip("repo", {"gamma": 0.5}, sft_weight=0.0)
    assert can_skip("slic", {"delta": 1.0, "nll_weight": 0.0}, sft_weight=0.0)
    assert not can_skip("slic", {"delta": 1.0, "nll_weight": 0.1}, sft_weight=0.0)
    assert not can_skip("repo", {"gamma": 0.5}, sft_weight=0.1)
    assert not can_skip("simpo", {"beta": 2.0, "gamma": 0.5}, sft_weight=0.0)


def train_parameters(bundled_model_dir, skip: str, share_prompt: bool, loss_type: str, gamma: float, steps: int = 4, pairs=PAIRS, per_pair: bool = True):
    """Run `steps` optimizer steps of PairStep on fixed batches; return the parameters and the active shares seen.

    SGD with momentum: its update is linear in the gradient, so float32 rounding in the gradient
    stays at rounding size (Adam divides tiny gradients by their own size and magnifies it), and
    momentum moves parameters on a step whose gradient is zero, as Adam does.
    """
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(bundled_model_dir)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    config = load_config(None, {"loss_type": loss_type, "gamma": gamma, "skip_inactive_pairs": skip, "share_prompt": share_prompt})
    state = TrainerState()
    step = PairStep(accelerator, model, config, lambda: state)
    step.per_pair = per_pair
    batches = [PairCollator(pad_token_id=0)(pairs[:4]), PairCollator(pad_token_id=0)(pairs[4:])]
    shares, skipped = [], []
    for index in range(steps):
        result = step.run(batches[index % 2], {})
        step.fill_missing_gradients()
        optimizer.step()
        optimizer.zero_grad()
        shares.append((result.output.grad_weights != 0).float().mean().item())
        skipped.append(result.skipped)
    return {name: p.detach().clone() for name, p in model.named_parameters()}, shares, skipped


@pytest.mark.parametrize("per_pair", [True, False], ids=["per-pair", "two-pass"])
@pytest.mark.parametrize("share_prompt", [False, True])
def test_skipping_leaves_update_unchanged(bundled_model_dir, share_prompt, per_pair):
    # gamma 0.3 leaves some pairs of every batch inactive on the bundled model.
    expected, shares, skipped = train_parameters(bundled_model_dir, "off", share_prompt, "repo", 0.3)
    assert not any(skipped)
    assert any(0 < share < 1 for share in shares), shares
    actual, skipping_shares, skipped = train_parameters(bundled_model_dir, "on", share_prompt, "repo", 0.3, per_pair=per_pair)
    assert all(skipped)
    assert skipping_shares == pytest.approx(shares, abs=1e-6)
    for name, parameter in actual.items():
        assert torch.allclose(parameter, expected[name], atol=1e-7, rtol=1e-6), name


@pytest.mark.parametrize("per_pair", [True, False], ids=["per-pair", "two-pass"])
def test_skipping_step_without_active_pair(bundled_model_dir, per_pair):
    # In the second batch chosen equals rejected, so M = 0 and no pair is active at gamma 0;
    # momentum must still move the parameters on that step, as it does without skipping.
    pairs = PAIRS[:4] + [{**row, "rejected_ids": row["chosen_ids"]} for row in PAIRS[4:]]
    expected, shares, _ = train_parameters(bundled_model_dir, "off", False, "repo", 0.0, pairs=pairs)
    assert shares[1] == 0.0, shares
    assert shares[0] > 0.0, shares
    actual, _, _ = train_parameters(bundled_model_dir, "on", False, "repo", 0.0, pairs=pairs, per_pair=per_pair)
    for name, parameter in actual.items():
        assert torch.allclose(parameter, expected[name], atol=1e-7, rtol=1e-6), name


def test_auto_two_pass_skips_at_low_active_share(bundled_model_dir):
    _, shares, skipped = train_parameters(bundled_model_dir, "auto", False, "repo", 0.3, steps=6, per_pair=False)
    assert not skipped[0]  # the estimate starts at 1.0
    assert any(skipped)
    estimate = 1.0
    for share, was_skipped in zip(shares, skipped):
        assert was_skipped == (estimate < TWO_PASS_SKIP_BELOW)
        estimate = 0.5 * share + 0.5 * estimate


def test_auto_per_pair_always_skips(bundled_model_dir):
    _, _, skipped = train_parameters(bundled_model_dir, "auto", False, "repo", 0.3, steps=3, per_pair=True)
    assert skipped == [True, True, True]


def test_per_pair_frees_each_graph_before_next_pair(bundled_model_dir):
    # A kept reference to a pair's attached log-probs would keep its saved activations alive
    # while the next pairs run. Each pair's log-probs must be freed before the next pair is scored.
    model = AutoModelForCausalLM.from_pretrained(bundled_model_dir)
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(model)
    config = load_config(None, {"loss_type": "repo", "gamma": 0.3, "skip_inactive_pairs": "on", "share_prompt": False})
    state = TrainerState()
    step = PairStep(accelerator, model, config, lambda: state)
    step.per_pair = True
    score, alive_at_each_score, references = step.score, [], []

    def tracking_score(batch):
        alive_at_each_score.append(sum(reference() is not None for reference in references))
        logps = score(batch)
        references.append(weakref.ref(logps.chosen_logps))
        return logps

    step.score = tracking_score
    result = step.run(PairCollator(pad_token_id=0)(PAIRS), {})
    assert len(alive_at_each_score) == len(PAIRS)
    assert alive_at_each_score == [0] * len(PAIRS)
    assert 0 < (result.output.grad_weights != 0).sum() < len(PAIRS)
